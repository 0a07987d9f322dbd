//! The latency histogram: log buckets, 6.25% precision, mergeable per thread.

/// Sub-buckets per power of two: a bucket is at most 1/16 (6.25%) of its values wide.
const SUB_BUCKETS: u64 = 16;
/// Buckets enough for every u64 (the last power of two is 2^63).
const BUCKETS: usize = (64 - 3) * SUB_BUCKETS as usize;

/// A latency histogram in the manner of HdrHistogram, std only: values below 16 are
/// counted exactly; above, each power of two is split into 16 buckets by the 4 bits after
/// the leading one, so a reported value is within 6.25% of the true one. It covers every
/// `u64` (in µs, far beyond 60 s) in 976 counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// The bucket of `value`.
    fn index(value: u64) -> usize {
        if value < SUB_BUCKETS {
            return value as usize;
        }
        let exponent = 63 - u64::from(value.leading_zeros()); // 4 ..= 63
        let sub = (value >> (exponent - 4)) & (SUB_BUCKETS - 1);
        ((exponent - 3) * SUB_BUCKETS + sub) as usize
    }

    /// The smallest value that falls in bucket `index`.
    fn lowest(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let exponent = index / SUB_BUCKETS + 3;
        let sub = index % SUB_BUCKETS;
        (SUB_BUCKETS + sub) << (exponent - 4)
    }

    /// The largest value that falls in bucket `index`.
    fn highest(index: usize) -> u64 {
        if index + 1 >= BUCKETS {
            u64::MAX
        } else {
            Histogram::lowest(index + 1) - 1
        }
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.counts[Histogram::index(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    /// Adds another histogram's counts to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value counted, exactly (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value that `percentile` % (0 to 100) of the counted values do not exceed: the
    /// top of the bucket holding that rank, capped at the maximum, so it errs high by at
    /// most 6.25%. 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let wanted = (percentile.clamp(0.0, 100.0) / 100.0 * self.total as f64).ceil();
        let rank = (wanted as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Histogram::highest(index).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution_are_within_the_bucket_error() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (p, exact) in [
            (1.0, 1_000.0),
            (50.0, 50_000.0),
            (90.0, 90_000.0),
            (99.0, 99_000.0),
            (99.9, 99_900.0),
        ] {
            let got = h.percentile(p) as f64;
            assert!(
                (got - exact).abs() / exact <= 1.0 / 16.0,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile(100.0), 100_000);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 100_000);
    }

    #[test]
    fn small_values_are_exact_and_large_ones_fit_their_bucket() {
        let mut h = Histogram::new();
        for v in 0..16 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 7);
        for v in [16, 17, 31, 32, 1000, 60_000_000, 3_600_000_000, u64::MAX] {
            let index = Histogram::index(v);
            let (low, high) = (Histogram::lowest(index), Histogram::highest(index));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
            assert!(
                high - low <= low / 16,
                "bucket of {v} too wide: [{low}, {high}]"
            );
        }
        assert_eq!(Histogram::index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn one_slow_value_shows_in_the_tail_only() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(100);
        }
        h.record(50_000);
        assert!((100..=106).contains(&h.percentile(50.0)));
        assert!((100..=106).contains(&h.percentile(99.0)));
        assert_eq!(h.percentile(99.99), 50_000);
        assert_eq!(h.max(), 50_000);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_larger_max() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(20);
        b.record(3000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), 3000);
        assert_eq!(a.percentile(50.0), 20);
        let mut both = Histogram::new();
        for v in [10, 20, 3000] {
            both.record(v);
        }
        assert_eq!(a, both);
    }

    #[test]
    fn empty_histogram_reports_zero() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.percentile(50.0), 0);
        assert_eq!(h.percentile(99.9), 0);
    }
}
