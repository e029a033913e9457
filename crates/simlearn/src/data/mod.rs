//! Datasets: feature matrices with class or continuous labels, the embedded scikit-learn
//! digits set, and class-disjoint splits.
//!
//! Everything here is framework-free; the trainer turns rows into burn tensors per batch.

pub mod augment;
pub mod digits_augment;
pub mod images;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

use simlearn_eval::{EvalError, Matrix};

/// What each item of a dataset is labelled with.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// One integer class per item (CUB, Cars, SOP, digits, …).
    Class(Vec<i64>),
    /// One label vector per item (angle, pose, font weight, …), `n × d_label`.
    Continuous(Matrix),
}

impl Labels {
    /// Number of labelled items.
    pub fn len(&self) -> usize {
        match self {
            Labels::Class(v) => v.len(),
            Labels::Continuous(m) => m.rows(),
        }
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn select(&self, idx: &[usize]) -> Labels {
        match self {
            Labels::Class(v) => Labels::Class(idx.iter().map(|&i| v[i]).collect()),
            Labels::Continuous(m) => Labels::Continuous(m.select_rows(idx)),
        }
    }
}

/// Precomputed feature vectors (or raw pixels) with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDataset {
    /// `n × d` inputs of the embedding model.
    pub features: Matrix,
    /// Labels of the `n` items.
    pub labels: Labels,
}

/// Errors of dataset construction, each one line naming the file, row or parameter.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Problems reported by the readers of `simlearn-eval`.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Anything else wrong with the data.
    #[error("{0}")]
    Invalid(String),
}

impl FeatureDataset {
    /// Checks shapes and values: as many labels as rows, finite features.
    pub fn new(features: Matrix, labels: Labels) -> Result<Self, DataError> {
        if features.rows() != labels.len() {
            return Err(DataError::Invalid(format!(
                "{} feature rows but {} labels",
                features.rows(),
                labels.len()
            )));
        }
        if features.rows() == 0 {
            return Err(DataError::Invalid("the dataset is empty".into()));
        }
        if let Some(r) = features.first_non_finite_row() {
            return Err(DataError::Invalid(format!(
                "feature row {r} holds a NaN or infinite value"
            )));
        }
        if let Labels::Continuous(m) = &labels {
            if let Some(r) = m.first_non_finite_row() {
                return Err(DataError::Invalid(format!(
                    "label row {r} holds a NaN or infinite value"
                )));
            }
        }
        Ok(Self { features, labels })
    }

    /// Reads features (`.npy`, `.safetensors`, `.csv`) and class labels (`.npy` ints or one
    /// label per line) from files.
    pub fn from_class_files(features: &Path, labels: &Path) -> Result<Self, DataError> {
        let f = simlearn_eval::io::read_embeddings(features, None)?;
        let l = simlearn_eval::io::read_class_labels(labels)?;
        Self::new(f, Labels::Class(l)).map_err(|e| {
            DataError::Invalid(format!(
                "{} / {}: {e}",
                features.display(),
                labels.display()
            ))
        })
    }

    /// Reads features and an `n × d_label` float label matrix from files.
    pub fn from_continuous_files(features: &Path, labels: &Path) -> Result<Self, DataError> {
        let f = simlearn_eval::io::read_embeddings(features, None)?;
        let l = simlearn_eval::io::read_float_matrix(labels)?;
        Self::new(f, Labels::Continuous(l)).map_err(|e| {
            DataError::Invalid(format!(
                "{} / {}: {e}",
                features.display(),
                labels.display()
            ))
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.features.rows()
    }

    /// True when the dataset has no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        self.features.cols()
    }

    /// The class labels, or an error for a continuous-label dataset.
    pub fn class_labels(&self) -> Result<&[i64], DataError> {
        match &self.labels {
            Labels::Class(v) => Ok(v),
            Labels::Continuous(_) => Err(DataError::Invalid(
                "this dataset has continuous labels; a class-label loss or metric needs integer classes".into(),
            )),
        }
    }

    /// The rows with the given indices.
    pub fn subset(&self, idx: &[usize]) -> FeatureDataset {
        FeatureDataset {
            features: self.features.select_rows(idx),
            labels: self.labels.select(idx),
        }
    }

    /// Splits by class as the deep-metric-learning papers do: the first half of the sorted
    /// distinct classes trains, the second half tests (CUB 1–100 / 101–200, Cars 1–98 / 99–196,
    /// digits 0–4 / 5–9). Train and test share no class.
    pub fn class_disjoint_split(&self) -> Result<(FeatureDataset, FeatureDataset), DataError> {
        let labels = self.class_labels()?;
        let classes: Vec<i64> = labels
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if classes.len() < 4 {
            return Err(DataError::Invalid(format!(
                "a class-disjoint split needs at least 4 classes (2 per side), found {}",
                classes.len()
            )));
        }
        let first_test = classes[classes.len().div_ceil(2)];
        let (train, test): (Vec<usize>, Vec<usize>) =
            (0..labels.len()).partition(|&i| labels[i] < first_test);
        Ok((self.subset(&train), self.subset(&test)))
    }
}

impl FeatureDataset {
    /// Splits the items of every class alternately into two halves (in index order: the
    /// 1st, 3rd, … item of a class go left, the 2nd, 4th, … go right). Deterministic; used to
    /// hold out unseen images of the training classes for validation.
    pub fn alternate_split(&self) -> Result<(FeatureDataset, FeatureDataset), DataError> {
        // Continuous-label sets alternate over all items (one pseudo-class).
        let zeros;
        let labels = match &self.labels {
            Labels::Class(v) => v.as_slice(),
            Labels::Continuous(m) => {
                zeros = vec![0i64; m.rows()];
                zeros.as_slice()
            }
        };
        let mut seen: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for (i, l) in labels.iter().enumerate() {
            let c = seen.entry(*l).or_default();
            if c.is_multiple_of(2) {
                left.push(i)
            } else {
                right.push(i)
            }
            *c += 1;
        }
        Ok((self.subset(&left), self.subset(&right)))
    }
}

const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The scikit-learn `digits` dataset, embedded in the binary (57 KB, BSD-3-Clause; see
/// `crates/simlearn/data/LICENSE-digits.txt`): 1,797 images of 8 × 8 pixels with grey levels
/// 0–16 and labels 0–9. Features are the 64 pixels scaled to [0, 1].
pub fn digits() -> FeatureDataset {
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_CSV_GZ)
        .read_to_string(&mut text)
        .expect("the embedded digits.csv.gz is valid gzip (checked by tests)");
    let mut features = Vec::with_capacity(1797 * 64);
    let mut labels = Vec::with_capacity(1797);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let values: Vec<f32> = line
            .split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .expect("the embedded digits CSV is numeric")
            })
            .collect();
        let (pixels, label) = values.split_at(64);
        features.extend(pixels.iter().map(|p| p / 16.0));
        labels.push(label[0] as i64);
    }
    let n = labels.len();
    FeatureDataset {
        features: Matrix::new(n, 64, features).expect("64 pixels per digit"),
        labels: Labels::Class(labels),
    }
}

/// Continuous-label task (a) of the log-ratio paper's setting, built from the embedded digits:
/// every digit is upsampled to 16 × 16 (bilinear) and rotated about its centre by an angle drawn
/// uniformly from [0°, 360°) with a ChaCha8 stream seeded by `seed`; the label is the angle in
/// degrees (compare with `LabelDistance::Circular { period: 360.0 }`). Pixels outside the
/// source are 0 (background). Features: 256 values in [0, 1].
pub fn rotated_digits(seed: u64) -> FeatureDataset {
    use rand::{Rng, SeedableRng};
    let d = digits();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = d.len();
    let mut features = Vec::with_capacity(n * 256);
    let mut angles = Vec::with_capacity(n);
    for i in 0..n {
        let angle: f32 = rng.random_range(0.0..360.0);
        features.extend(rotate_upsampled(d.features.row(i), angle));
        angles.push(angle);
    }
    FeatureDataset {
        features: Matrix::new(n, 256, features).expect("256 pixels per image"),
        labels: Labels::Continuous(Matrix::new(n, 1, angles).expect("one angle per image")),
    }
}

/// Samples the 8 × 8 image at the points of a 16 × 16 grid rotated by `angle_deg`, bilinearly.
fn rotate_upsampled(img: &[f32], angle_deg: f32) -> Vec<f32> {
    let (s, c) = angle_deg.to_radians().sin_cos();
    let px = |x: i32, y: i32| -> f32 {
        if (0..8).contains(&x) && (0..8).contains(&y) {
            img[(y * 8 + x) as usize]
        } else {
            0.0
        }
    };
    let mut out = Vec::with_capacity(256);
    for v in 0..16 {
        for u in 0..16 {
            // Output pixel centre in source coordinates (centre of the image at 3.5, 3.5),
            // rotated backwards so the content turns by +angle.
            let (x, y) = ((u as f32 + 0.5) / 2.0 - 4.0, (v as f32 + 0.5) / 2.0 - 4.0);
            let (sx, sy) = (c * x + s * y + 3.5, -s * x + c * y + 3.5);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i32, y0 as i32);
            out.push(
                px(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + px(x0 + 1, y0) * fx * (1.0 - fy)
                    + px(x0, y0 + 1) * (1.0 - fx) * fy
                    + px(x0 + 1, y0 + 1) * fx * fy,
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_has_the_published_shape_and_counts() {
        let d = digits();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.dim(), 64);
        let labels = d.class_labels().unwrap();
        let mut counts = [0usize; 10];
        labels.iter().for_each(|&l| counts[l as usize] += 1);
        // scikit-learn documents 174–183 samples per class.
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(counts.iter().sum::<usize>(), 1797);
        let max = d.features.data().iter().cloned().fold(0.0f32, f32::max);
        assert_eq!(max, 1.0);
    }

    #[test]
    fn class_disjoint_split_of_digits_is_0_to_4_and_5_to_9() {
        let (train, test) = digits().class_disjoint_split().unwrap();
        assert!(train.class_labels().unwrap().iter().all(|&l| l <= 4));
        assert!(test.class_labels().unwrap().iter().all(|&l| l >= 5));
        assert_eq!(train.len() + test.len(), 1797);
    }

    #[test]
    fn rotation_by_zero_is_a_plain_upsampling_and_by_360_the_same() {
        let d = digits();
        let img = d.features.row(0);
        let a = rotate_upsampled(img, 0.0);
        let b = rotate_upsampled(img, 360.0);
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
        // Upsampling preserves the mean grey level up to the border halo.
        let mean_in = img.iter().sum::<f32>() / 64.0;
        let mean_out = a.iter().sum::<f32>() / 256.0;
        assert!((mean_in - mean_out).abs() < 0.05, "{mean_in} vs {mean_out}");
        // A quarter turn maps the 16 x 16 grid onto itself: output (u, v) samples (v, 15 - u).
        let q = rotate_upsampled(img, 90.0);
        for v in 0..16 {
            for u in 0..16 {
                let turned = q[v * 16 + u];
                let src = a[(15 - u) * 16 + v];
                assert!((turned - src).abs() < 1e-4, "({u},{v}): {turned} vs {src}");
            }
        }
    }

    #[test]
    fn rotated_digits_labels_are_angles_and_seeded() {
        let a = rotated_digits(3);
        let b = rotated_digits(3);
        assert_eq!(a, b);
        let Labels::Continuous(l) = &a.labels else {
            panic!()
        };
        assert_eq!((l.rows(), l.cols()), (1797, 1));
        assert!(l.data().iter().all(|&t| (0.0..360.0).contains(&t)));
        assert_ne!(rotated_digits(4).labels, a.labels);
    }

    #[test]
    fn mismatched_counts_are_rejected_with_both_numbers() {
        let f = Matrix::new(3, 1, vec![0.0, 1.0, 2.0]).unwrap();
        let err = FeatureDataset::new(f, Labels::Class(vec![0, 1])).unwrap_err();
        assert_eq!(err.to_string(), "3 feature rows but 2 labels");
    }

    #[test]
    fn nan_feature_row_is_named() {
        let f = Matrix::new(3, 1, vec![0.0, f32::NAN, 2.0]).unwrap();
        let err = FeatureDataset::new(f, Labels::Class(vec![0, 1, 1])).unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}
