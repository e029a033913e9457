//! Distances between continuous (vector) labels, shared by evaluation (nDCG, mean label
//! distance) and by the training-side dense-triplet sampler.

use serde::{Deserialize, Serialize};

/// How far apart two label vectors are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LabelDistance {
    /// `‖a − b‖₂`, the default (Kim et al. 2019 use the plain pose distance).
    #[default]
    Euclidean,
    /// `Σ |a_i − b_i|`.
    Manhattan,
    /// Per-coordinate wrap-around distance on a circle of circumference `period`
    /// (e.g. 360 for angles in degrees), combined as a Euclidean norm.
    Circular {
        /// Circumference of the circle, in label units.
        period: f64,
    },
}

impl LabelDistance {
    /// Distance between two label vectors of equal length.
    pub fn dist(&self, a: &[f32], b: &[f32]) -> f64 {
        debug_assert_eq!(a.len(), b.len());
        let pairs = a.iter().zip(b).map(|(&x, &y)| (x as f64, y as f64));
        match *self {
            LabelDistance::Euclidean => pairs.map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
            LabelDistance::Manhattan => pairs.map(|(x, y)| (x - y).abs()).sum(),
            LabelDistance::Circular { period } => pairs
                .map(|(x, y)| {
                    let d = (x - y).rem_euclid(period);
                    let d = d.min(period - d);
                    d * d
                })
                .sum::<f64>()
                .sqrt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circular_wraps_around() {
        let c = LabelDistance::Circular { period: 360.0 };
        assert!((c.dist(&[350.0], &[10.0]) - 20.0).abs() < 1e-9);
        assert!((c.dist(&[-170.0], &[170.0]) - 20.0).abs() < 1e-9);
        assert!((c.dist(&[0.0], &[180.0]) - 180.0).abs() < 1e-9);
    }

    #[test]
    fn euclidean_and_manhattan() {
        assert!((LabelDistance::Euclidean.dist(&[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-12);
        assert!((LabelDistance::Manhattan.dist(&[0.0, 0.0], &[3.0, -4.0]) - 7.0).abs() < 1e-12);
    }
}
