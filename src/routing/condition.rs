//! One test a rule makes of a request. A rule holds when all its conditions hold.

use std::collections::HashSet;

use http::header::{GetAll, HeaderName, HeaderValue};

use super::bucket::{bucket_of_hash, murmur3_x86_32};
use super::chain::Context;
use super::ua::UaClassifier;

/// A set of exact byte values (user keys, cities, channels), hashed once at compile time.
pub type KeySet = HashSet<Box<[u8]>>;

/// A compiled condition. Everything that can be prepared without a request already is.
#[derive(Debug, Clone)]
pub enum Condition {
    Header {
        name: HeaderName,
        test: HeaderTest,
    },
    /// The user key is in the set (inline `whitelist` and `whitelist_file` merged).
    Whitelist(KeySet),
    City(KeySet),
    /// Bit `i` set: UA class `i` is accepted.
    Ua(u64),
    Channel(KeySet),
    /// The user key's bucket is below `permille`.
    Permille {
        permille: u16,
        salt: Box<[u8]>,
    },
    /// A fresh draw in `[0, 1)` is below the rate.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub enum HeaderTest {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    /// Unanchored search, as nginx's `~`; anchor with `^` and `$` for a full match.
    Regex(regex::bytes::Regex),
    /// `true`: the header is present; `false`: it is absent.
    Present(bool),
}

/// The outcome of one condition on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    Fails,
    /// The request lacks the value the condition needs, so it does not hold.
    Missing,
}

impl Verdict {
    pub fn holds(self) -> bool {
        self == Verdict::Holds
    }

    fn from_bool(holds: bool) -> Self {
        if holds {
            Verdict::Holds
        } else {
            Verdict::Fails
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::Fails => "fails",
            Verdict::Missing => "missing value",
        }
    }
}

impl Condition {
    pub(crate) fn check(&self, cx: &mut Context<'_, '_>) -> Verdict {
        match self {
            Condition::Header { name, test } => test.check(cx.request.headers.get_all(name)),
            Condition::Whitelist(set) => in_set(set, cx.identity()),
            Condition::City(set) => in_set(set, cx.city()),
            Condition::Channel(set) => in_set(set, cx.channel()),
            Condition::Ua(mask) => match cx.ua_class() {
                Some(class) => Verdict::from_bool(mask & (1u64 << class) != 0),
                None => Verdict::Missing,
            },
            Condition::Permille { permille, salt } => {
                let Some(key) = cx.user_key() else {
                    return Verdict::Missing;
                };
                let hash = murmur3_x86_32(salt, key, 0);
                let bucket = bucket_of_hash(hash);
                cx.bucket = Some(bucket);
                cx.hash = Some(hash);
                Verdict::from_bool(bucket < *permille)
            }
            Condition::Rate(rate) => {
                let draw = (cx.random)();
                cx.draw = Some(draw);
                Verdict::from_bool(draw < *rate)
            }
        }
    }

    /// A short human description, for `explain`.
    pub fn describe(&self, ua: &UaClassifier) -> String {
        match self {
            Condition::Header { name, test } => match test {
                HeaderTest::Exact(v) => format!("header {name} = {:?}", String::from_utf8_lossy(v)),
                HeaderTest::Prefix(v) => {
                    format!("header {name} starts with {:?}", String::from_utf8_lossy(v))
                }
                HeaderTest::Regex(re) => format!("header {name} ~ /{}/", re.as_str()),
                HeaderTest::Present(true) => format!("header {name} present"),
                HeaderTest::Present(false) => format!("header {name} absent"),
            },
            Condition::Whitelist(set) => format!("user key in whitelist ({} keys)", set.len()),
            Condition::City(set) => format!("city in {}", list(set)),
            Condition::Channel(set) => format!("channel in {}", list(set)),
            Condition::Ua(mask) => {
                let names: Vec<&str> = (0..64u8)
                    .filter(|i| mask & (1u64 << i) != 0)
                    .map(|i| ua.name(i))
                    .collect();
                format!("ua class in [{}]", names.join(", "))
            }
            Condition::Permille { permille, salt } => {
                format!(
                    "bucket < {permille} (salt {:?})",
                    String::from_utf8_lossy(salt)
                )
            }
            Condition::Rate(rate) => format!("random draw < {rate}"),
        }
    }
}

impl HeaderTest {
    /// Holds when any of the header's values passes (a header may be repeated).
    fn check(&self, values: GetAll<'_, HeaderValue>) -> Verdict {
        let mut values = values.iter().peekable();
        if let HeaderTest::Present(want) = self {
            return Verdict::from_bool(values.peek().is_some() == *want);
        }
        if values.peek().is_none() {
            return Verdict::Missing;
        }
        Verdict::from_bool(values.any(|value| {
            let value = value.as_bytes();
            match self {
                HeaderTest::Exact(want) => value == &**want,
                HeaderTest::Prefix(prefix) => value.starts_with(prefix),
                HeaderTest::Regex(re) => re.is_match(value),
                HeaderTest::Present(_) => unreachable!("handled above"),
            }
        }))
    }
}

fn in_set(set: &KeySet, value: Option<&[u8]>) -> Verdict {
    match value {
        Some(value) => Verdict::from_bool(set.contains(value)),
        None => Verdict::Missing,
    }
}

fn list(set: &KeySet) -> String {
    let mut items: Vec<String> = set
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    items.sort();
    format!("[{}]", items.join(", "))
}
