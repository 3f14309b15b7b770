//! Latency statistics of a benchmark run: every request's latency is kept (a
//! few bytes each, merged once at the end), so percentiles are exact rather
//! than bucketed.

use std::time::Duration;

use serde::Serialize;

/// Latencies of successful requests, in microseconds.
#[derive(Default, Debug, Clone)]
pub struct Samples {
    micros: Vec<u32>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            micros: Vec::with_capacity(n),
        }
    }

    pub fn record(&mut self, took: Duration) {
        self.micros
            .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    pub fn len(&self) -> usize {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The summary of these samples (all zero when there are none).
    pub fn summary(mut self) -> Summary {
        if self.is_empty() {
            return Summary::default();
        }
        self.micros.sort_unstable();
        let sum: u64 = self.micros.iter().map(|&m| u64::from(m)).sum();
        let ms = |micros: u32| f64::from(micros) / 1000.0;
        Summary {
            avg: sum as f64 / self.micros.len() as f64 / 1000.0,
            p50: ms(percentile(&self.micros, 50.0)),
            p90: ms(percentile(&self.micros, 90.0)),
            p99: ms(percentile(&self.micros, 99.0)),
            max: ms(*self.micros.last().unwrap_or(&0)),
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Default, Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// The nearest-rank percentile of sorted, non-empty samples: the smallest
/// sample that at least `pct` percent of the samples do not exceed.
fn percentile(sorted: &[u32], pct: f64) -> u32 {
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 50.0), 50);
        assert_eq!(percentile(&sorted, 90.0), 90);
        assert_eq!(percentile(&sorted, 99.0), 99);
        assert_eq!(percentile(&sorted, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn summary_in_milliseconds() {
        let mut s = Samples::default();
        for micros in [1000, 2000, 3000, 10_000] {
            s.record(Duration::from_micros(micros));
        }
        let mut other = Samples::default();
        other.record(Duration::from_micros(4000));
        s.merge(other);
        assert_eq!(s.len(), 5);
        let sum = s.summary();
        assert_eq!(sum.avg, 4.0);
        assert_eq!(sum.p50, 3.0);
        assert_eq!(sum.p99, 10.0);
        assert_eq!(sum.max, 10.0);
        assert_eq!(Samples::default().summary(), Summary::default());
    }
}
