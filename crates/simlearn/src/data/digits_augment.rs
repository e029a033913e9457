//! Transforms of the 8 × 8 scikit-learn digits for `simlearn demo`: turning a few classes into
//! many, and label-preserving augmentation.
//!
//! With only the five training classes 0–4, every head trained with a class-label loss collapses
//! onto five directions and gets *worse* on the unseen classes 5–9 than the untrained head
//! (`bench/demo_transfer.py` measures this). Two transforms give the training set more to teach:
//!
//! - [`dihedral_classes`]: each of the 8 rotations / reflections of the square applied to a class
//!   makes a class of its own (a rotated 2 is not a 2), as Omniglot's rotations are used to make
//!   new character classes (Santoro et al. 2016, Vinyals et al. 2016): 5 classes become 40.
//! - [`chimera_classes`]: the top (or left) half of an image of class `a` over the bottom (or
//!   right) half of an image of class `b` makes an image of the class `(a, b, orientation)`: a
//!   shape seen in no class but built from their strokes, many more classes from the same images.
//! - [`augmented_copies`]: label-preserving jitter of handwriting ([`DigitAugment`]): small
//!   rotation, scale, shear (slant) and shift by bilinear resampling with a zero background, then
//!   thicker or thinner strokes (a 2 × 2 grey dilation / erosion blended in).
//!
//! Pixels are grey levels in [0, 1], row-major (`y * 8 + x`). Everything is seeded (ChaCha8), so
//! the same seed gives the same images on every platform.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use simlearn_eval::Matrix;

use super::{DataError, FeatureDataset, Labels};

/// Side of a digit image.
pub const SIDE: usize = 8;
/// Pixels per digit image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of elements of the dihedral group of the square.
pub const DIHEDRAL_ORDER: usize = 8;

/// Element `t` (0..8) of the dihedral group of the square: a transpose (mirror on the main
/// diagonal) when `t ≥ 4`, then `t mod 4` quarter turns. `t = 0` is the identity.
///
/// # Panics
/// When `img` does not hold 64 pixels or `t ≥ 8`.
pub fn dihedral(img: &[f32], t: usize) -> [f32; PIXELS] {
    assert_eq!(img.len(), PIXELS, "a digit image has 64 pixels");
    assert!(t < DIHEDRAL_ORDER, "dihedral element {t} is not in 0..8");
    let n = SIDE - 1;
    let mut out = [0.0f32; PIXELS];
    for y in 0..SIDE {
        for x in 0..SIDE {
            // Source pixel of output (x, y): undo the quarter turns, then the transpose.
            let (mut sx, mut sy) = (x, y);
            for _ in 0..t % 4 {
                // One quarter turn maps source (sx, sy) to output (sy, n − sx).
                (sx, sy) = (n - sy, sx);
            }
            if t >= 4 {
                (sx, sy) = (sy, sx);
            }
            out[y * SIDE + x] = img[sy * SIDE + sx];
        }
    }
    out
}

/// Every (class, dihedral element) pair becomes a class: label `class * 8 + t` for the image
/// transformed by [`dihedral`]`(·, t)`. The result holds the 8 transforms of every row, in
/// blocks of `t` (all rows for `t = 0` first, i.e. the originals).
pub fn dihedral_classes(data: &FeatureDataset) -> Result<FeatureDataset, DataError> {
    check_digits(data)?;
    let labels = data.class_labels()?;
    if let Some(&l) = labels.iter().find(|&&l| l < 0) {
        return Err(DataError::Invalid(format!(
            "dihedral classes need non-negative class labels, found {l}"
        )));
    }
    let n = data.len();
    let mut features = Vec::with_capacity(n * DIHEDRAL_ORDER * PIXELS);
    let mut out_labels = Vec::with_capacity(n * DIHEDRAL_ORDER);
    for t in 0..DIHEDRAL_ORDER {
        for (i, &l) in labels.iter().enumerate() {
            features.extend_from_slice(&dihedral(data.features.row(i), t));
            out_labels.push(l * DIHEDRAL_ORDER as i64 + t as i64);
        }
    }
    FeatureDataset::new(
        Matrix::new(n * DIHEDRAL_ORDER, PIXELS, features)?,
        Labels::Class(out_labels),
    )
}

/// `data` followed by `n_classes` chimera classes of `per_class` images each. Class number `c`
/// (label `max_label + 1 + c`) is a distinct triple `(a, b, orientation)` of two different
/// classes of `data` and a cut (0: rows 0–3 from an image of `a`, rows 4–7 from one of `b`;
/// 1: columns 0–3 from `a`, 4–7 from `b`), drawn at random; each of its images pairs a random
/// image of `a` with a random image of `b`. Seeded by `seed` (ChaCha8).
pub fn chimera_classes(
    data: &FeatureDataset,
    n_classes: usize,
    per_class: usize,
    seed: u64,
) -> Result<FeatureDataset, DataError> {
    check_digits(data)?;
    let labels = data.class_labels()?;
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let classes: Vec<(i64, Vec<usize>)> = by_class.into_iter().collect();
    let possible = classes.len() * classes.len().saturating_sub(1) * 2;
    if n_classes > possible {
        return Err(DataError::Invalid(format!(
            "{n_classes} chimera classes asked, but {} classes give only {possible} (a, b, cut) triples",
            classes.len()
        )));
    }
    if n_classes > 0 && per_class == 0 {
        return Err(DataError::Invalid(
            "chimera classes need at least one image each".into(),
        ));
    }
    let first = classes.last().map_or(0, |(l, _)| l + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen = std::collections::HashSet::new();
    let n = data.len();
    let mut features = Vec::with_capacity((n + n_classes * per_class) * PIXELS);
    features.extend_from_slice(data.features.data());
    let mut out_labels = labels.to_vec();
    while chosen.len() < n_classes {
        let a = rng.random_range(0..classes.len());
        let b = rng.random_range(0..classes.len());
        let cut = rng.random_range(0..2usize);
        if a == b || !chosen.insert((a, b, cut)) {
            continue;
        }
        let label = first + chosen.len() as i64 - 1;
        let (ia, ib) = (&classes[a].1, &classes[b].1);
        for _ in 0..per_class {
            let top = data.features.row(ia[rng.random_range(0..ia.len())]);
            let rest = data.features.row(ib[rng.random_range(0..ib.len())]);
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let from_a = if cut == 0 { y < SIDE / 2 } else { x < SIDE / 2 };
                    let src = if from_a { top } else { rest };
                    features.push(src[y * SIDE + x]);
                }
            }
            out_labels.push(label);
        }
    }
    FeatureDataset::new(
        Matrix::new(out_labels.len(), PIXELS, features)?,
        Labels::Class(out_labels),
    )
}

/// Label-preserving random jitter of a handwritten digit. Every amount is the half-width of a
/// uniform draw; zero switches that part off ([`DigitAugment::none`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DigitAugment {
    /// Rotation about the image centre, degrees (default ±15).
    pub rotation_deg: f32,
    /// Relative scale change (default ±0.1, i.e. 0.9–1.1).
    pub scale: f32,
    /// Horizontal shear, the slant of handwriting (default ±0.2).
    pub shear: f32,
    /// Shift in pixels along each axis (default ±1).
    pub shift_px: f32,
    /// Stroke thickness: with probability 1/3 each, the image is blended towards its 2 × 2 grey
    /// dilation (thicker) or erosion (thinner) by a weight drawn from `[0, thickness)`, else
    /// left as is (default 1).
    pub thickness: f32,
}

impl Default for DigitAugment {
    fn default() -> Self {
        Self {
            rotation_deg: 15.0,
            scale: 0.1,
            shear: 0.2,
            shift_px: 1.0,
            thickness: 1.0,
        }
    }
}

impl DigitAugment {
    /// No jitter at all: [`DigitAugment::apply`] returns its input.
    pub fn none() -> Self {
        Self {
            rotation_deg: 0.0,
            scale: 0.0,
            shear: 0.0,
            shift_px: 0.0,
            thickness: 0.0,
        }
    }

    /// One random jitter of `img` (64 pixels in [0, 1]); the output is in [0, 1].
    ///
    /// # Panics
    /// When `img` does not hold 64 pixels.
    pub fn apply(&self, img: &[f32], rng: &mut impl Rng) -> [f32; PIXELS] {
        assert_eq!(img.len(), PIXELS, "a digit image has 64 pixels");
        let mut sym = |half: f32| -> f32 {
            if half > 0.0 {
                rng.random_range(-half..half)
            } else {
                0.0
            }
        };
        let rot = sym(self.rotation_deg).to_radians();
        let scale = 1.0 + sym(self.scale);
        let shear = sym(self.shear);
        let (tx, ty) = (sym(self.shift_px), sym(self.shift_px));
        let (s, c) = rot.sin_cos();
        // Output → source map (pixel units about the centre 3.5, 3.5): the inverse of
        // scale · shear · rotation, then the shift.
        let a = [
            [c / scale, (s + c * shear) / scale],
            [-s / scale, (c - s * shear) / scale],
        ];
        let px = |x: i32, y: i32| -> f32 {
            if (0..SIDE as i32).contains(&x) && (0..SIDE as i32).contains(&y) {
                img[y as usize * SIDE + x as usize]
            } else {
                0.0
            }
        };
        let centre = (SIDE as f32 - 1.0) / 2.0;
        let mut out = [0.0f32; PIXELS];
        for v in 0..SIDE {
            for u in 0..SIDE {
                let (x, y) = (u as f32 - centre, v as f32 - centre);
                let sx = a[0][0] * x + a[0][1] * y + tx + centre;
                let sy = a[1][0] * x + a[1][1] * y + ty + centre;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                let (x0, y0) = (x0 as i32, y0 as i32);
                out[v * SIDE + u] = px(x0, y0) * (1.0 - fx) * (1.0 - fy)
                    + px(x0 + 1, y0) * fx * (1.0 - fy)
                    + px(x0, y0 + 1) * (1.0 - fx) * fy
                    + px(x0 + 1, y0 + 1) * fx * fy;
            }
        }
        if self.thickness > 0.0 {
            let p: f32 = rng.random_range(0.0..1.0);
            let w: f32 = rng.random_range(0.0..self.thickness);
            if p < 2.0 / 3.0 {
                let thicker = p < 1.0 / 3.0;
                let morph = grey_morphology_2x2(&out, thicker);
                for (o, m) in out.iter_mut().zip(morph) {
                    *o += w * (m - *o);
                }
            }
        }
        for o in &mut out {
            *o = o.clamp(0.0, 1.0);
        }
        out
    }
}

/// 2 × 2 grey dilation (`max`, the image padded with background 0) or erosion (`min`, pixels
/// beyond the border ignored) over each pixel and its right, lower and lower-right neighbours.
fn grey_morphology_2x2(img: &[f32; PIXELS], dilate: bool) -> [f32; PIXELS] {
    let mut out = [0.0f32; PIXELS];
    for y in 0..SIDE {
        for x in 0..SIDE {
            let mut acc = img[y * SIDE + x];
            for (dx, dy) in [(1, 0), (0, 1), (1, 1)] {
                let (nx, ny) = (x + dx, y + dy);
                let inside = nx < SIDE && ny < SIDE;
                let v = if inside { img[ny * SIDE + nx] } else { 0.0 };
                acc = match (dilate, inside) {
                    (true, _) => acc.max(v),
                    (false, true) => acc.min(v),
                    (false, false) => acc,
                };
            }
            out[y * SIDE + x] = acc;
        }
    }
    out
}

/// The rows of `data` followed by `copies` jittered copies of every row (copy `j` of all rows
/// after copy `j − 1`), labels repeated. Row `i` of copy `j` is drawn from its own ChaCha8
/// stream keyed by `(seed, j, i)`, so the result does not depend on the order of the work.
pub fn augmented_copies(
    data: &FeatureDataset,
    copies: usize,
    augment: &DigitAugment,
    seed: u64,
) -> Result<FeatureDataset, DataError> {
    check_digits(data)?;
    let n = data.len();
    let mut features = Vec::with_capacity(n * (copies + 1) * PIXELS);
    features.extend_from_slice(data.features.data());
    for j in 0..copies {
        for i in 0..n {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(((j as u64) << 32) | i as u64);
            features.extend_from_slice(&augment.apply(data.features.row(i), &mut rng));
        }
    }
    let all: Vec<usize> = (0..copies + 1).flat_map(|_| 0..n).collect();
    let labels = data.subset(&all).labels;
    FeatureDataset::new(Matrix::new(n * (copies + 1), PIXELS, features)?, labels)
}

fn check_digits(data: &FeatureDataset) -> Result<(), DataError> {
    if data.dim() != PIXELS {
        return Err(DataError::Invalid(format!(
            "digit transforms need 8 x 8 = 64 pixels per row, the dataset has {}",
            data.dim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::digits;
    use super::*;

    fn ramp() -> Vec<f32> {
        (0..PIXELS).map(|i| i as f32 / 63.0).collect()
    }

    #[test]
    fn dihedral_is_the_group_of_the_square() {
        let img = ramp();
        assert_eq!(dihedral(&img, 0).as_slice(), img.as_slice());
        // Four quarter turns and two transposes are the identity.
        let mut q = dihedral(&img, 1);
        for _ in 0..3 {
            q = dihedral(&q, 1);
        }
        assert_eq!(q.as_slice(), img.as_slice());
        let tt = dihedral(&dihedral(&img, 4), 4);
        assert_eq!(tt.as_slice(), img.as_slice());
        // t = 4 is the transpose; a quarter turn moves the top-left corner to the bottom-left.
        assert_eq!(dihedral(&img, 4)[1], img[SIDE]);
        assert_eq!(dihedral(&img, 1)[(SIDE - 1) * SIDE], img[0]);
        // Two quarter turns are t = 2; the 8 elements give 8 different images of the ramp.
        assert_eq!(dihedral(&dihedral(&img, 1), 1), dihedral(&img, 2));
        let all: Vec<[f32; PIXELS]> = (0..8).map(|t| dihedral(&img, t)).collect();
        for a in 0..8 {
            for b in a + 1..8 {
                assert_ne!(all[a], all[b], "elements {a} and {b}");
            }
        }
    }

    #[test]
    fn dihedral_classes_are_8_per_class_with_the_originals_first() {
        let (seen, _) = digits().class_disjoint_split().unwrap();
        let d = dihedral_classes(&seen).unwrap();
        assert_eq!(d.len(), 8 * seen.len());
        assert_eq!(d.features.row(0), seen.features.row(0));
        let labels = d.class_labels().unwrap();
        let mut classes = labels.to_vec();
        classes.sort_unstable();
        classes.dedup();
        assert_eq!(classes, (0..40).collect::<Vec<i64>>());
        let l0 = seen.class_labels().unwrap()[0];
        assert_eq!(labels[3 * seen.len()], l0 * 8 + 3);
    }

    #[test]
    fn augmentation_is_seeded_in_range_and_none_is_the_identity() {
        let (seen, _) = digits().class_disjoint_split().unwrap();
        let small = seen.subset(&(0..50).collect::<Vec<_>>());
        let aug = DigitAugment::default();
        let a = augmented_copies(&small, 3, &aug, 7).unwrap();
        assert_eq!(a, augmented_copies(&small, 3, &aug, 7).unwrap());
        assert_ne!(a, augmented_copies(&small, 3, &aug, 8).unwrap());
        assert_eq!((a.len(), a.dim()), (200, 64));
        assert_eq!(a.subset(&(0..50).collect::<Vec<_>>()), small);
        assert_eq!(
            a.class_labels().unwrap()[150..],
            small.class_labels().unwrap()[..]
        );
        assert!(a.features.data().iter().all(|v| (0.0..=1.0).contains(v)));
        // The copies differ from the originals but keep most of their ink.
        let (orig, copy) = (small.features.row(5), a.features.row(55));
        assert_ne!(orig, copy);
        let ink = |r: &[f32]| r.iter().sum::<f32>();
        assert!(
            (ink(copy) / ink(orig) - 1.0).abs() < 0.6,
            "{} vs {}",
            ink(copy),
            ink(orig)
        );
        let none = augmented_copies(&small, 1, &DigitAugment::none(), 7).unwrap();
        let max_diff = none
            .features
            .row(60)
            .iter()
            .zip(small.features.row(10))
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(max_diff < 1e-6, "{max_diff}");
    }

    #[test]
    fn shifts_and_stroke_changes_stay_in_range() {
        let img = ramp();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for aug in [
            DigitAugment {
                shift_px: 1.0,
                ..DigitAugment::none()
            },
            DigitAugment {
                thickness: 1.0,
                ..DigitAugment::none()
            },
        ] {
            for _ in 0..20 {
                let out = aug.apply(&img, &mut rng);
                assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
        // Dilation never darkens a pixel, erosion never brightens one.
        let dil = grey_morphology_2x2(&dihedral(&img, 0), true);
        let ero = grey_morphology_2x2(&dihedral(&img, 0), false);
        assert!(dil.iter().zip(&img).all(|(d, i)| d >= i));
        assert!(ero.iter().zip(&img).all(|(e, i)| e <= i));
        // On the ramp (brighter to the right and down) the 2 x 2 max is the lower-right
        // neighbour inside the image, the min the pixel itself.
        assert_eq!(dil[0], img[9]);
        assert_eq!(ero[0], img[0]);
    }

    #[test]
    fn chimeras_are_seeded_halves_of_two_classes() {
        let (seen, _) = digits().class_disjoint_split().unwrap();
        let c = chimera_classes(&seen, 30, 5, 1).unwrap();
        assert_eq!(c, chimera_classes(&seen, 30, 5, 1).unwrap());
        assert_ne!(c, chimera_classes(&seen, 30, 5, 2).unwrap());
        assert_eq!(c.len(), seen.len() + 150);
        assert_eq!(c.subset(&(0..seen.len()).collect::<Vec<_>>()), seen);
        let labels = c.class_labels().unwrap();
        let mut new: Vec<i64> = labels[seen.len()..].to_vec();
        new.dedup();
        assert_eq!(new, (5..35).collect::<Vec<i64>>());
        // Every chimera row is made of halves of real images: each half matches some image.
        let rows: Vec<&[f32]> = (0..seen.len()).map(|i| seen.features.row(i)).collect();
        for i in seen.len()..c.len() {
            let r = c.features.row(i);
            let top = rows.iter().any(|s| s[..32] == r[..32]);
            let left = rows
                .iter()
                .any(|s| (0..8).all(|y| s[y * 8..y * 8 + 4] == r[y * 8..y * 8 + 4]));
            assert!(top || left, "row {i}");
        }
        // 5 classes give 5 * 4 * 2 = 40 triples at most.
        assert!(chimera_classes(&seen, 41, 1, 0).is_err());
        assert_eq!(
            chimera_classes(&seen, 40, 1, 0).unwrap().len(),
            seen.len() + 40
        );
    }

    #[test]
    fn non_digit_rows_are_rejected() {
        let f = Matrix::new(2, 3, vec![0.0; 6]).unwrap();
        let d = FeatureDataset::new(f, Labels::Class(vec![0, 1])).unwrap();
        let err = dihedral_classes(&d).unwrap_err().to_string();
        assert!(err.contains("64 pixels"), "{err}");
        assert!(augmented_copies(&d, 1, &DigitAugment::default(), 0).is_err());
    }
}
