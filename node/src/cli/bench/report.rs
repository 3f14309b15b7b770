//! The result of a benchmark run, as a human table or as JSON (for scripts such
//! as bench/compare-etcd.sh).

use serde::Serialize;

use super::latency::Summary;
use super::workload::Workload;

#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub serializable: bool,
    /// Fraction of reads (mixed workload only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_ratio: Option<f64>,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    pub key_size: usize,
    pub value_size: usize,
    pub key_space: u64,
    /// Requests answered successfully.
    pub requests: u64,
    pub errors: u64,
    /// Compare-and-swaps whose compare failed (txn workload only).
    pub cas_failed: u64,
    pub seconds: f64,
    /// Successful requests per second.
    pub throughput: f64,
    pub latency_ms: Summary,
    /// A few distinct error messages, to say what went wrong.
    pub error_samples: Vec<String>,
    /// Elections during the run: how far the highest Raft term the members
    /// report rose (`None` if they could not be asked).
    pub elections: Option<u64>,
}

impl Report {
    pub fn human(&self) -> String {
        let mut what = format!("{:?}", self.workload).to_lowercase();
        if self.serializable {
            what.push_str(" (serializable)");
        }
        if let Some(r) = self.read_ratio {
            what.push_str(&format!(" ({:.0}% reads)", r * 100.0));
        }
        let l = &self.latency_ms;
        let mut out = format!(
            "workload     {what}\n\
             endpoints    {}\n\
             clients      {} over {} connections\n\
             keys         {} B keys, {} B values, key space {}\n\
             requests     {} in {:.2} s, {} errors\n\
             throughput   {:.1} req/s\n\
             latency ms   avg {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}\n",
            self.endpoints.join(","),
            self.clients,
            self.conns,
            self.key_size,
            self.value_size,
            self.key_space,
            self.requests,
            self.seconds,
            self.errors,
            self.throughput,
            l.avg,
            l.p50,
            l.p90,
            l.p99,
            l.max,
        );
        if self.workload == Workload::Txn {
            out.push_str(&format!("cas failed   {}\n", self.cas_failed));
        }
        if let Some(n) = self.elections {
            out.push_str(&format!("elections    {n} (rise of the Raft term)\n"));
        }
        for e in &self.error_samples {
            out.push_str(&format!("error        {e}\n"));
        }
        out
    }
}
