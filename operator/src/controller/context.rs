//! What every reconcile shares: the API client, the way to the members, the
//! event reporter and the metrics.

use crate::members::MemberApi;
use crate::metrics::Metrics;
use kube::runtime::events::Reporter;
use kube::Client;
use std::sync::Arc;

/// Shared by every reconcile.
pub struct Context<M: MemberApi> {
    pub client: Client,
    pub members: M,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
}
