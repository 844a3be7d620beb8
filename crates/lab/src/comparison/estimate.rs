//! Summary statistics of a comparison cell: mean and the half-width of a 95 % confidence
//! interval over the K attacked batches, from Student's t distribution (K is small: 3–10).

use serde::{Deserialize, Serialize};

/// Two-sided 97.5 % quantiles of Student's t for 1–30 degrees of freedom (standard tables,
/// e.g. NIST/SEMATECH e-Handbook of Statistical Methods, Table 1.3.6.7.2).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t₀.₉₇₅ with `df` degrees of freedom (the normal 1.960 beyond the table).
pub fn t_quantile_975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T_975[df - 1],
        _ => 1.960,
    }
}

/// Mean ± half-width of the 95 % confidence interval of the mean.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width; `NaN` (null in JSON) for fewer than two values.
    #[serde(with = "nan_as_null")]
    pub ci95: f64,
    pub n: usize,
}

impl Estimate {
    /// The estimate from finite `values` (non-finite ones, e.g. the infinite PSNR of an exact
    /// reconstruction, are left out and do not count in `n`).
    pub fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let n = v.len();
        if n == 0 {
            return Self {
                mean: f64::NAN,
                ci95: f64::NAN,
                n,
            };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let ci95 = if n < 2 {
            f64::NAN
        } else {
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t_quantile_975(n - 1) * (var / n as f64).sqrt()
        };
        Self { mean, ci95, n }
    }

    /// `12.34 ± 0.56` with `digits` decimals (`—` for no data, no ± for one value).
    pub fn display(&self, digits: usize) -> String {
        if !self.mean.is_finite() {
            "—".into()
        } else if self.ci95.is_finite() {
            format!("{:.digits$} ± {:.digits$}", self.mean, self.ci95)
        } else {
            format!("{:.digits$}", self.mean)
        }
    }
}

mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_interval_by_hand() {
        // values 2, 4, 6, 8: mean 5, s² = 20/3, s/√n = 1.2910, t(3) = 3.182 → 4.108
        let e = Estimate::of([2.0, 4.0, 6.0, 8.0]);
        assert_eq!(e.mean, 5.0);
        assert!((e.ci95 - 3.182 * (20.0f64 / 3.0 / 4.0).sqrt()).abs() < 1e-12);
        assert!((e.ci95 - 4.108).abs() < 1e-3);
        assert_eq!(e.n, 4);
        assert_eq!(e.display(2), "5.00 ± 4.11");
    }

    #[test]
    fn degenerate_inputs() {
        let one = Estimate::of([3.0]);
        assert!(one.ci95.is_nan());
        assert_eq!(one.display(1), "3.0");
        let with_inf = Estimate::of([1.0, f64::INFINITY, 3.0]);
        assert_eq!((with_inf.mean, with_inf.n), (2.0, 2));
        assert_eq!(Estimate::of([]).display(1), "—");
        let json = serde_json::to_string(&one).unwrap();
        assert_eq!(json, r#"{"mean":3.0,"ci95":null,"n":1}"#);
        let back: Estimate = serde_json::from_str(&json).unwrap();
        assert!(back.ci95.is_nan());
    }

    #[test]
    fn t_quantiles() {
        assert_eq!(t_quantile_975(1), 12.706);
        assert_eq!(t_quantile_975(4), 2.776);
        assert_eq!(t_quantile_975(100), 1.960);
    }
}
