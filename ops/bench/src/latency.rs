//! Latency distributions, in microseconds, with HdrHistogram.

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;

/// Up to a minute at three significant digits.
const HIGHEST_MICROS: u64 = 60_000_000;

pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies(
            Histogram::new_with_bounds(1, HIGHEST_MICROS, 3).expect("constant bounds are valid"),
        )
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.clamp(1, HIGHEST_MICROS));
    }

    /// Records the time from `since` (a clock reading taken by another
    /// process on this machine) to now; a reading from the future counts as
    /// the smallest lag.
    pub fn record_since(&mut self, since: SystemTime) {
        self.record(SystemTime::now().duration_since(since).unwrap_or_default());
    }

    pub fn merge(&mut self, other: &Latencies) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.50)
    }

    pub fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// A protobuf timestamp as a clock reading.
pub fn system_time(timestamp: &prost_types::Timestamp) -> Option<SystemTime> {
    SystemTime::try_from(*timestamp).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_what_was_recorded() {
        let mut latencies = Latencies::default();
        for micros in 1..=1000 {
            latencies.record(Duration::from_micros(micros));
        }
        assert_eq!(latencies.count(), 1000);
        assert!(
            (latencies.p50_ms() - 0.5).abs() < 0.01,
            "{}",
            latencies.p50_ms()
        );
        assert!(
            (latencies.p99_ms() - 0.99).abs() < 0.01,
            "{}",
            latencies.p99_ms()
        );
        let mut more = Latencies::default();
        more.record(Duration::from_secs(2));
        latencies.merge(&more);
        assert!(
            (latencies.max_ms() - 2000.0).abs() < 2.0,
            "{}",
            latencies.max_ms()
        );
    }
}
