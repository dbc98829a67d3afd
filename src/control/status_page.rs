//! `GET /admin/ui`: the live status page, one self-contained HTML file
//! (`status_page.html`, embedded) whose script polls `/admin/stats` and
//! `/admin/rollout` on the same listener.
//!
//! The page loads nothing else: no script, style sheet, font or image from anywhere.
//! Its Content-Security-Policy says so to the browser: nothing is allowed by default,
//! the one inline script and the one inline style sheet are allowed by their SHA-256
//! (computed here from the embedded text, so an edit of the page cannot leave a stale
//! hash), and `connect-src 'self'` limits its requests to the admin listener.

use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The page, as shipped.
pub const PAGE: &str = include_str!("status_page.html");

/// The page's `Content-Security-Policy`.
pub static CONTENT_SECURITY_POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        hash_source(inline(PAGE, "script")),
        hash_source(inline(PAGE, "style")),
    )
});

/// The text of the page's one `<tag>...</tag>` element.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = page.find(&open).map(|i| i + open.len());
    let end = page.find(&close);
    match (start, end) {
        (Some(start), Some(end)) if start <= end => &page[start..end],
        _ => panic!("the status page has no <{tag}> element"),
    }
}

/// A CSP hash source: `sha256-<base64 of the digest>`.
fn hash_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained() {
        // One inline script and one inline style sheet, each covered by the policy.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        // Nothing that would fetch from elsewhere: no src or href but the data: icon,
        // no URL with a scheme in the page (the SVG namespace is a name, not a fetch).
        assert!(!PAGE.contains(" src="), "no src attributes");
        assert_eq!(PAGE.matches("href=").count(), 1);
        assert!(PAGE.contains(r#"<link rel="icon" href="data:,">"#));
        // Every URL with a scheme, to its closing quote.
        let urls: Vec<&str> = PAGE
            .match_indices("://")
            .map(|(i, _)| {
                let start = PAGE[..i].rfind('"').map_or(0, |q| q + 1);
                let end = i + PAGE[i..].find('"').unwrap_or(0);
                &PAGE[start..end]
            })
            .collect();
        assert_eq!(urls, vec!["http://www.w3.org/2000/svg"]);
        assert!(!PAGE.contains("@import") && !PAGE.contains("url("));
    }

    #[test]
    fn the_policy_forbids_all_but_the_pages_own_parts() {
        let csp = &*CONTENT_SECURITY_POLICY;
        assert!(csp.starts_with("default-src 'none'; script-src 'sha256-"));
        assert!(csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe"));
        // The known digest of a known text, as `openssl dgst -sha256 -binary | base64` gives.
        assert_eq!(
            hash_source("abc"),
            "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }
}
