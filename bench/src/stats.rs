//! Summaries of samples (percentiles, medians). Pure functions, unit tested.

use std::time::Duration;

/// The `q`-quantile (`0.0..=1.0`) of `sorted` by the nearest-rank method; `None` if empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median, 99th percentile and mean of durations (sorted in place); `None` if empty.
pub fn summarize(samples: &mut [Duration]) -> Option<Summary> {
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Some(Summary {
        p50: quantile(samples, 0.5)?,
        p99: quantile(samples, 0.99)?,
        mean: total / samples.len() as u32,
        count: samples.len(),
    })
}

/// A summary of duration samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean.
    pub mean: Duration,
    /// Number of samples.
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_pick_actual_samples() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile(&[7], 0.99), Some(7));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let ms = Duration::from_millis;
        let mut v = vec![ms(3), ms(1), ms(2), ms(10)];
        let s = summarize(&mut v).unwrap();
        assert_eq!((s.p50, s.p99, s.count), (ms(2), ms(10), 4));
        assert_eq!(s.mean, Duration::from_micros(4000));
        assert_eq!(summarize(&mut []), None);
    }
}
