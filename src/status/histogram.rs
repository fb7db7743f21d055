//! Response-time histograms: fixed buckets (Prometheus's default ones, 5 ms to 10 s), counted
//! per peer in shared memory (`shm::PeerShared`) and shown in every status format.

/// Upper bounds of the buckets, ms; a last bucket counts everything slower (`+Inf`).
pub const BOUNDS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Buckets counted: one per bound, and `+Inf`.
pub const BUCKETS: usize = BOUNDS_MS.len() + 1;

/// The bucket a response of `ms` milliseconds falls in (the first whose bound is >= it).
#[inline]
pub fn bucket_of(ms: u64) -> usize {
    BOUNDS_MS.partition_point(|&b| b < ms)
}

/// One peer's histogram, as read from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Histogram {
    /// Responses per bucket (not cumulative).
    pub counts: [u64; BUCKETS],
    /// All response times added up, ms.
    pub sum_ms: u64,
}

impl Histogram {
    /// Responses counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Cumulative counts, one per bucket, as Prometheus's `_bucket{le=...}` series: the last
    /// is the total.
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut total = 0;
        core::array::from_fn(|i| {
            total += self.counts[i];
            total
        })
    }
}

/// A bucket's bound as Prometheus writes `le`: seconds, `+Inf` for the last.
pub fn le(i: usize) -> String {
    match BOUNDS_MS.get(i) {
        Some(&ms) => {
            let s = ms as f64 / 1000.0;
            format!("{s}")
        }
        None => "+Inf".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(5), 0);
        assert_eq!(bucket_of(6), 1);
        assert_eq!(bucket_of(10_000), 10);
        assert_eq!(bucket_of(10_001), 11);
        assert_eq!(bucket_of(u64::MAX), 11);
        let mut h = Histogram::default();
        for ms in [1, 7, 7, 300, 20_000] {
            h.counts[bucket_of(ms)] += 1;
            h.sum_ms += ms;
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.cumulative(), [1, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5]);
        assert_eq!(le(0), "0.005");
        assert_eq!(le(7), "1");
        assert_eq!(le(10), "10");
        assert_eq!(le(11), "+Inf");
    }
}
