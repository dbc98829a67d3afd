//! The rule chain: a request view in, a decision out.
//!
//! Everything here is plain data and plain functions, with no I/O and no async, so
//! the whole decision core can be tested exhaustively and benchmarked on its own.
//! The chain is built once per config generation (`config::compile`); per request,
//! only lookups happen: header names are pre-parsed, regexes pre-compiled, sets are
//! hashed, the User-Agent classes share one multi-pattern automaton, and long runs of
//! rules testing one header's exact value are indexed by that value.

mod bucket;
mod chain;
mod condition;
mod explain;
mod index;
mod request;
mod source;
#[cfg(test)]
mod tests;
mod ua;

pub use bucket::{bucket, murmur3_x86_32, user_group, BUCKETS, USER_GROUPS};
pub use chain::{Chain, Cohort, Decision, KeySource, PoolId, Rule, RuleId, Sources};
pub use condition::Verdict;
pub use condition::{Condition, HeaderTest, KeySet};
pub use explain::{ConditionTrace, Explanation, RuleTrace};
pub use request::RequestView;
pub use source::ValueSource;
pub use ua::{UaClassId, UaClassifier, MAX_UA_CLASSES};
