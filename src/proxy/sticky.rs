//! Sticky ids for visitors without a user key (`routing.sticky_cookie`).
//!
//! A visitor who carries neither the user key nor the cookie gets a random id made for
//! the request; it is the user key for that request's decision, and it is set as a
//! cookie on the answer, so the visitor lands in the same bucket every time after. The
//! id is drawn before the decision and the bucket is a hash of it, so the share of
//! visitors on a canary is the rule's per-mille, with no drift (unlike a cookie that
//! records the pool a random draw picked: fluxcd/flagger#1532).

use http::HeaderValue;

use crate::snapshot::StickyCookie;

/// 128 random bits from the operating system's CSPRNG, as 32 hex digits; `None` if the
/// system has none to give (then the visitor is routed as one without a key).
pub fn mint() -> Option<String> {
    let mut bytes = [0u8; 16];
    if let Err(err) = getrandom::fill(&mut bytes) {
        tracing::warn!(error = %err, "no random bytes for a sticky id");
        return None;
    }
    Some(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `name=id; Path=/; Max-Age=...; HttpOnly; SameSite=Lax`, with `Secure` over HTTPS.
pub fn set_cookie(cookie: &StickyCookie, id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        cookie.name, cookie.max_age_seconds
    );
    HeaderValue::from_str(&value).expect("a validated cookie name and a hex id")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_random_bits_in_hex() {
        let (a, b) = (mint().unwrap(), mint().unwrap());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_cookie_has_the_spec_attributes() {
        let cookie = StickyCookie {
            name: "gg_uid".into(),
            max_age_seconds: 2_592_000,
            trusted_proxies: Vec::new(),
        };
        assert_eq!(
            set_cookie(&cookie, "ab12", false),
            "gg_uid=ab12; Path=/; Max-Age=2592000; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie(&cookie, "ab12", true)
            .to_str()
            .unwrap()
            .ends_with("; Secure"));
    }
}
