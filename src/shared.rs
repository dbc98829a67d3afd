//! The long-lived parts every config generation links into: upstream clients (with
//! their warm connections), endpoints (with their health), metric families and access-log writers. A reload builds
//! a new snapshot around them; it never rebuilds them.

use crate::access_log::AccessLogs;
use crate::metrics::Metrics;
use crate::upstream::{Clients, EndpointRegistry};

#[derive(Debug)]
pub struct Shared {
    pub clients: Clients,
    pub endpoints: EndpointRegistry,
    pub metrics: Metrics,
    pub access_logs: AccessLogs,
}

impl Shared {
    pub fn new() -> Self {
        let metrics = Metrics::new();
        let access_logs = AccessLogs::new(metrics.access_log_dropped());
        Shared {
            clients: Clients::new(),
            endpoints: EndpointRegistry::default(),
            metrics,
            access_logs,
        }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new()
    }
}
