//! The operator's own Prometheus metrics: a few counters, rendered as text.
//! Small enough that a metrics library would be more code than it saves.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    /// Planner steps carried out (Kubernetes and Raft).
    pub steps: Counter,
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "raftkv_operator_reconciles_total",
                "Reconciles started.",
                self.reconciles.get(),
            ),
            (
                "raftkv_operator_reconcile_errors_total",
                "Reconciles that failed.",
                self.reconcile_errors.get(),
            ),
            (
                "raftkv_operator_steps_total",
                "Membership plan steps carried out.",
                self.steps.get(),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        out
    }
}
