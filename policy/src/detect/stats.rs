//! Robust statistics for the baselines: the median and the median absolute deviation, and the
//! modified z-score built on them (Iglewicz and Hoaglin: z = 0.6745·(x − median)/MAD, an outlier
//! from 3.5). Medians, not means, because one odd hour (a month-end report, a training day) must
//! not move the baseline it is judged against.

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [u64]) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        // The mean of the two middle values, without overflow.
        let (a, b) = (values[n / 2 - 1], values[n / 2]);
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

/// The median and the median absolute deviation of `values` (reordered).
pub fn median_mad(values: &mut [u64]) -> (u64, u64) {
    let m = median(values);
    let mut deviations: Vec<u64> = values.iter().map(|&v| v.abs_diff(m)).collect();
    (m, median(&mut deviations))
}

/// The modified z-score's scale: MAD·1.4826 estimates σ for normal data; 0.6745 = 1/1.4826.
pub const Z_SCALE: f64 = 0.6745;

/// The value above which the modified z-score of a value exceeds `z`, for a baseline with this
/// `median` and (floored) `spread`: median + z·spread/0.6745, rounded up.
pub fn value_at_z(median: u64, spread: f64, z: f64) -> u64 {
    let at = median as f64 + z * spread / Z_SCALE;
    if at >= u64::MAX as f64 {
        u64::MAX
    } else {
        at.ceil() as u64
    }
}

/// The modified z-score of `x` against a baseline.
pub fn z_score(x: u64, median: u64, spread: f64) -> f64 {
    if spread <= 0.0 {
        return if x > median { f64::INFINITY } else { 0.0 };
    }
    Z_SCALE * (x as f64 - median as f64) / spread
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_resist_one_wild_value() {
        assert_eq!(median(&mut []), 0);
        assert_eq!(median(&mut [5]), 5);
        assert_eq!(median(&mut [1, 3]), 2);
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), u64::MAX);
        let mut hours = [10, 12, 11, 9, 10, 1_000_000];
        assert_eq!(median_mad(&mut hours), (10, 1));
        // value_at_z and z_score agree.
        let at = value_at_z(10, 2.0, 3.5);
        assert!(z_score(at, 10, 2.0) >= 3.5 && z_score(at - 1, 10, 2.0) < 3.5);
    }
}
