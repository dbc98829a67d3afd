//! The long-lived parts every config generation links into: endpoints (with their
//! health and warm keep-alive connections), the addresses endpoint names resolved to,
//! metric families and access-log writers.
//! A reload builds a new snapshot around them; it never rebuilds them.

use crate::access_log::AccessLogs;
use crate::metrics::Metrics;
use crate::mirror::MirrorRegistry;
use crate::upstream::{EndpointRegistry, ResolvedNames};

#[derive(Debug)]
pub struct Shared {
    pub endpoints: EndpointRegistry,
    /// What each endpoint name resolved to last.
    pub names: ResolvedNames,
    pub metrics: Metrics,
    pub access_logs: AccessLogs,
    /// Each mirror's copies in flight, counters and recent differences.
    pub mirrors: MirrorRegistry,
}

impl Shared {
    pub fn new() -> Self {
        let metrics = Metrics::new();
        let access_logs = AccessLogs::new(metrics.access_log_dropped());
        Shared {
            endpoints: EndpointRegistry::default(),
            names: ResolvedNames::default(),
            metrics,
            access_logs,
            mirrors: MirrorRegistry::default(),
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}
