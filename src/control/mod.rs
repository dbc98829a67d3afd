//! The control plane: everything that changes what the data plane does, run on the
//! main thread beside the workers. Reloads ([`reload`]) are the one writer of the live
//! snapshot; the file watcher ([`watch`]) and the admin listener ([`admin`]) trigger
//! them, and the rollout controller (`crate::rollout::controller`, timed by
//! [`rollout`]) swaps weights through the same writer, as [`dns`] swaps endpoints when
//! a name's addresses change.

pub mod admin;
pub mod client;
pub mod dns;
pub mod reload;
pub mod rollout;
pub mod stats;
pub mod status_page;
pub mod watch;
