//! User-Agent classes: a request's class is the first class (in config order) one of
//! whose substrings occurs in its User-Agent, compared ASCII case-insensitively.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

/// Rules hold their UA classes as a bit set, so the count is bounded.
pub const MAX_UA_CLASSES: usize = 64;

/// Index of a class in config order.
pub type UaClassId = u8;

/// All classes' substrings in one automaton: one pass over the User-Agent, whatever
/// the number of classes and substrings.
#[derive(Debug, Clone, Default)]
pub struct UaClassifier {
    matcher: Option<AhoCorasick>,
    /// The class of each pattern, by pattern index.
    pattern_class: Vec<UaClassId>,
    names: Vec<Box<str>>,
}

impl UaClassifier {
    /// `classes` in config order: name and substrings. The caller has checked the
    /// count and that names are unique.
    pub fn new<'a>(
        classes: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Self, aho_corasick::BuildError> {
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        let mut pattern_class = Vec::new();
        for (id, (name, contains)) in classes.into_iter().enumerate() {
            assert!(
                id < MAX_UA_CLASSES,
                "validated: at most {MAX_UA_CLASSES} UA classes"
            );
            names.push(name.into());
            for pattern in contains {
                patterns.push(pattern.as_bytes());
                pattern_class.push(id as UaClassId);
            }
        }
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Standard semantics so overlapping search reports every class that occurs,
            // not just the leftmost match.
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(patterns)?,
            )
        };
        Ok(UaClassifier {
            matcher,
            pattern_class,
            names,
        })
    }

    /// The class of a User-Agent, or `None` when no class's substring occurs in it.
    pub fn classify(&self, user_agent: &[u8]) -> Option<UaClassId> {
        let matcher = self.matcher.as_ref()?;
        let mut best: Option<UaClassId> = None;
        for m in matcher.find_overlapping_iter(user_agent) {
            let class = self.pattern_class[m.pattern().as_usize()];
            if class == 0 {
                return Some(0);
            }
            best = Some(best.map_or(class, |b| b.min(class)));
        }
        best
    }

    pub fn id(&self, name: &str) -> Option<UaClassId> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| i as UaClassId)
    }

    pub fn name(&self, id: UaClassId) -> &str {
        &self.names[id as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_classes() -> UaClassifier {
        let app = ["MyShop-App/".to_string(), "okhttp".to_string()];
        let web = [
            "Mobile".to_string(),
            "Android".to_string(),
            "iPhone".to_string(),
        ];
        let pc = [
            "Windows NT".to_string(),
            "Macintosh".to_string(),
            "X11".to_string(),
        ];
        UaClassifier::new([("app", &app[..]), ("web", &web[..]), ("pc", &pc[..])]).unwrap()
    }

    #[test]
    fn first_class_in_config_order_wins_not_leftmost_match() {
        let ua = spec_classes();
        // "Android" (web) occurs before "okhttp" (app) in the string; app is listed first.
        let class = ua.classify(b"Mozilla/5.0 (Linux; Android 14) okhttp/4.12");
        assert_eq!(class.map(|c| ua.name(c)), Some("app"));
        let class =
            ua.classify(b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148");
        assert_eq!(class.map(|c| ua.name(c)), Some("web"));
        let class = ua.classify(b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0");
        assert_eq!(class.map(|c| ua.name(c)), Some("pc"));
    }

    #[test]
    fn case_insensitive_and_unclassified() {
        let ua = spec_classes();
        assert_eq!(ua.classify(b"OKHTTP/3").map(|c| ua.name(c)), Some("app"));
        assert_eq!(ua.classify(b"curl/8.5.0"), None);
        assert_eq!(ua.classify(b""), None);
        assert_eq!(UaClassifier::default().classify(b"okhttp"), None);
    }

    #[test]
    fn ids_by_name() {
        let ua = spec_classes();
        assert_eq!(ua.id("pc"), Some(2));
        assert_eq!(ua.id("tv"), None);
    }
}
