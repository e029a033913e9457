//! Verification metrics (ROC, TAR@FAR, EER, AUC) and open-set calibration: hand-computed
//! cases, ties, a brute-force reference on a random 300-item set (exact path equal, histogram
//! path within its stated resolution), and degenerate input.

use simlearn_eval::knn::exact_score;
use simlearn_eval::verification::{
    calibrate, f32_threshold_decimal, verification_from_scores, verify, PairSet, VerificationConfig,
};
use simlearn_eval::{Matrix, Similarity};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

fn all_points() -> VerificationConfig {
    VerificationConfig {
        curve_step: 0.0,
        far_targets: vec![0.1, 0.2, 0.4, 1e-3],
        ..VerificationConfig::default()
    }
}

/// genuine 0.9 0.8 0.4, impostor 0.7 0.5 0.3 0.2 0.1 (G = 3, I = 5). Accept score ≥ t:
///
/// | t   | #g≥t | #i≥t | TAR | FAR | FRR | D = FAR − FRR |
/// | 0.1 | 3 | 5 | 1   | 1   | 0   | 1      |
/// | 0.2 | 3 | 4 | 1   | 0.8 | 0   | 0.8    |
/// | 0.3 | 3 | 3 | 1   | 0.6 | 0   | 0.6    |
/// | 0.4 | 3 | 2 | 1   | 0.4 | 0   | 0.4    |
/// | 0.5 | 2 | 2 | 2/3 | 0.4 | 1/3 | 1/15   |
/// | 0.7 | 2 | 1 | 2/3 | 0.2 | 1/3 | −2/15  |
/// | 0.8 | 2 | 0 | 2/3 | 0   | 1/3 |        |
/// | 0.9 | 1 | 0 | 1/3 | 0   | 2/3 |        |
///
/// TAR@FAR 0.1: m = ⌊0.5⌋ = 0, v = 0.7 (largest impostor), TAR = #{g > 0.7}/3 = 2/3 at
/// t = 0.8 (FAR 0). TAR@FAR 0.2: m = 1, v = 0.5, TAR = 2/3 at t = 0.8. TAR@FAR 0.4: m = 2,
/// v = 0.3, TAR = 1 at t = 0.4 (FAR 0.4). EER: bracket t = 0.5 / 0.7, λ = (1/15)/(3/15) = 1/3,
/// EER = 0.4 − 0.2/3 = 1/3, threshold 0.5 + 0.2/3. AUC: impostors below each genuine
/// 5 + 5 + 3 = 13 of 15.
#[test]
fn hand_computed_roc_tar_eer_auc() {
    let v = verification_from_scores(&[0.9, 0.8, 0.4], &[0.7, 0.5, 0.3, 0.2, 0.1], &all_points())
        .unwrap();
    assert_eq!((v.genuine_pairs, v.impostor_pairs), (3, 5));
    assert_eq!(v.pairs, PairSet::Given);
    let want = [
        (0.1, 1.0, 1.0),
        (0.2, 0.8, 1.0),
        (0.3, 0.6, 1.0),
        (0.4, 0.4, 1.0),
        (0.5, 0.4, 2.0 / 3.0),
        (0.7, 0.2, 2.0 / 3.0),
        (0.8, 0.0, 2.0 / 3.0),
        (0.9, 0.0, 1.0 / 3.0),
    ];
    assert_eq!(v.roc.len(), want.len());
    for (p, &(t, far, tar)) in v.roc.iter().zip(&want) {
        close(p.threshold, t);
        close(p.far, far);
        close(p.tar, tar);
        close(p.frr(), 1.0 - tar);
    }
    let rows: Vec<(f64, f64, f64)> = v
        .tar_at_far
        .iter()
        .map(|r| (r.tar, r.threshold, r.far))
        .collect();
    let want = [
        (2.0 / 3.0, 0.8, 0.0),
        (2.0 / 3.0, 0.8, 0.0),
        (1.0, 0.4, 0.4),
        (2.0 / 3.0, 0.8, 0.0),
    ];
    for (r, w) in rows.iter().zip(&want) {
        close(r.0, w.0);
        close(r.1, w.1);
        close(r.2, w.2);
    }
    assert_eq!(v.tar_at_far[0].name(), "tar_at_far_1e-1");
    assert_eq!(v.tar_at(0.2), Some(v.tar_at_far[1].tar));
    close(v.eer, 1.0 / 3.0);
    close(v.eer_threshold, 0.5 + 0.2 / 3.0);
    close(v.roc_auc, 13.0 / 15.0);
    let det = v.det();
    close(det[4].0, 0.4);
    close(det[4].1, 1.0 / 3.0);
    let csv = v.roc_csv();
    assert!(
        csv.starts_with("threshold,far,tar,frr\n0.1,1,1,0\n"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 9);
}

/// Ties: genuine 0.5 0.5 0.2, impostor 0.5 0.2 0.1 0.1 (G = 3, I = 4).
///
/// | t   | #g≥t | #i≥t | TAR | FAR  | FRR |
/// | 0.1 | 3 | 4 | 1   | 1    | 0   |
/// | 0.2 | 3 | 2 | 1   | 0.5  | 0   |
/// | 0.5 | 2 | 1 | 2/3 | 0.25 | 1/3 |
///
/// TAR@FAR 0.25: m = 1, v = 0.2, TAR = #{g > 0.2}/3 = 2/3 at t = 0.5, where the tied impostor
/// 0.5 is accepted too: FAR 0.25 (ties at the threshold count as accepted). TAR@FAR 0.1:
/// m = 0, v = 0.5, no genuine above it: TAR 0 at the next f64 above 0.5, FAR 0.
/// EER: bracket 0.2 (D = 0.5) / 0.5 (D = −1/12), λ = 0.5/(7/12) = 6/7, EER = 0.5 − 6/7·0.25
/// = 2/7, threshold 0.2 + 6/7·0.3. AUC: g = 0.5 has 3 impostors below and 1 equal (3.5),
/// twice; g = 0.2 has 2 below and 1 equal (2.5): 9.5 / 12.
#[test]
fn ties_are_accepted_at_the_threshold() {
    let cfg = VerificationConfig {
        far_targets: vec![0.25, 0.1],
        curve_step: 0.0,
        ..VerificationConfig::default()
    };
    let v = verification_from_scores(&[0.5, 0.5, 0.2], &[0.5, 0.2, 0.1, 0.1], &cfg).unwrap();
    let got: Vec<(f64, f64, f64)> = v.roc.iter().map(|p| (p.threshold, p.far, p.tar)).collect();
    assert_eq!(
        got,
        vec![(0.1, 1.0, 1.0), (0.2, 0.5, 1.0), (0.5, 0.25, 2.0 / 3.0)]
    );
    let r = v.tar_at_far[0];
    close(r.tar, 2.0 / 3.0);
    close(r.threshold, 0.5);
    close(r.far, 0.25);
    let r = v.tar_at_far[1];
    close(r.tar, 0.0);
    assert!(r.threshold > 0.5 && r.threshold < 0.5 + 1e-15);
    close(r.far, 0.0);
    close(v.eer, 2.0 / 7.0);
    close(v.eer_threshold, 0.2 + 6.0 / 7.0 * 0.3);
    close(v.roc_auc, 9.5 / 12.0);
}

/// A perfectly separated pair and a perfectly inverted one: AUC 1 / 0, EER 0 / 1.
#[test]
fn separated_and_inverted_extremes() {
    let cfg = all_points();
    let v = verification_from_scores(&[0.9], &[0.1], &cfg).unwrap();
    close(v.roc_auc, 1.0);
    close(v.eer, 0.0);
    close(v.tar_at(1e-3).unwrap(), 1.0);
    // genuine 0.1, impostor 0.9: at t = 0.9 FAR = 1, FRR = 1, D = 0: EER 1 there.
    let v = verification_from_scores(&[0.1], &[0.9], &cfg).unwrap();
    close(v.roc_auc, 0.0);
    close(v.eer, 1.0);
    close(v.eer_threshold, 0.9);
    close(v.tar_at(0.4).unwrap(), 0.0);
}

/// 1-D embeddings, squared Euclidean (score −(a − b)²), labels A A B B at 0, 1, 3, 6:
/// genuine pairs (0,1): −1, (3,6): −9; impostors (0,3): −9, (0,6): −36, (1,3): −4, (1,6): −25.
/// Thresholds −36 −25 −9 −4 −1: TAR 1 1 1 ½ ½, FAR 1 ¾ ½ ¼ 0. TAR@FAR 0.25: m = 1, v = −9
/// (2nd largest impostor), #{g > −9} = 1: TAR ½ at t = −1. AUC: g = −1 beats 4; g = −9 beats
/// 2 (−36, −25) and ties 1: (4 + 2.5) / 8.
#[test]
fn pairs_of_embeddings_hand_computed() {
    let x = Matrix::new(4, 1, vec![0.0, 1.0, 3.0, 6.0]).unwrap();
    let cfg = VerificationConfig {
        similarity: Similarity::SqEuclidean,
        far_targets: vec![0.25],
        curve_step: 0.0,
        ..VerificationConfig::default()
    };
    let v = verify(&x, &[0, 0, 1, 1], None, &cfg).unwrap();
    assert_eq!(v.pairs, PairSet::AllPairs);
    assert_eq!((v.genuine_pairs, v.impostor_pairs), (2, 4));
    let got: Vec<(f64, f64, f64)> = v.roc.iter().map(|p| (p.threshold, p.far, p.tar)).collect();
    assert_eq!(
        got,
        vec![
            (-36.0, 1.0, 1.0),
            (-25.0, 0.75, 1.0),
            (-9.0, 0.5, 1.0),
            (-4.0, 0.25, 0.5),
            (-1.0, 0.0, 0.5)
        ]
    );
    close(v.tar_at_far[0].tar, 0.5);
    close(v.tar_at_far[0].threshold, -1.0);
    close(v.roc_auc, 6.5 / 8.0);

    // Query × gallery: queries 0 (A) and 5 (B) against the four items.
    let q = Matrix::new(2, 1, vec![0.0, 5.0]).unwrap();
    let v = verify(&q, &[0, 1], Some((&x, &[0, 0, 1, 1])), &cfg).unwrap();
    assert_eq!(v.pairs, PairSet::QueryGallery);
    // genuine: (0,0) 0, (0,1) −1, (5,3) −4, (5,6) −1; impostors (0,3) −9, (0,6) −36,
    // (5,0) −25, (5,1) −16: every genuine beats every impostor.
    assert_eq!((v.genuine_pairs, v.impostor_pairs), (4, 4));
    close(v.roc_auc, 1.0);
    close(v.eer, 0.0);
}

/// A tiny deterministic generator (SplitMix64) for reproducible data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` items in `classes` noisy clusters of dimension `d`, with a few exact duplicates (ties).
fn clustered(n: usize, classes: usize, d: usize, seed: u64) -> (Matrix, Vec<i64>) {
    let mut r = Rng(seed);
    let centres: Vec<Vec<f64>> = (0..classes)
        .map(|_| (0..d).map(|_| r.next() * 2.0 - 1.0).collect())
        .collect();
    let mut data = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (r.next() * classes as f64) as usize % classes;
        labels.push(c as i64);
        if i % 37 == 36 {
            let prev: Vec<f32> = data[(i - 1) * d..i * d].to_vec();
            data.extend(prev);
            labels[i] = labels[i - 1];
            continue;
        }
        for &c0 in &centres[c] {
            data.push((c0 + 0.9 * (r.next() * 2.0 - 1.0)) as f32);
        }
    }
    (Matrix::new(n, d, data).unwrap(), labels)
}

/// The reference: every pair's exact score, sorted, and every definition evaluated by brute
/// force over all distinct thresholds.
struct Reference {
    genuine: Vec<f64>,
    impostor: Vec<f64>,
}

impl Reference {
    fn new(q: &Matrix, ql: &[i64], g: Option<(&Matrix, &[i64])>, sim: Similarity) -> Self {
        let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
        for i in 0..q.rows() {
            let (gm, gl, start) = match g {
                Some((m, l)) => (m, l, 0),
                None => (q, ql, i + 1),
            };
            for (j, &lj) in gl.iter().enumerate().skip(start) {
                let s = exact_score(sim, q.row(i), gm.row(j));
                if ql[i] == lj {
                    genuine.push(s);
                } else {
                    impostor.push(s);
                }
            }
        }
        genuine.sort_by(f64::total_cmp);
        impostor.sort_by(f64::total_cmp);
        Self { genuine, impostor }
    }

    fn at_least(v: &[f64], t: f64) -> usize {
        v.len() - v.partition_point(|&x| x < t)
    }

    fn thresholds(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.genuine.iter().chain(&self.impostor).copied().collect();
        t.sort_by(f64::total_cmp);
        t.dedup();
        t
    }

    fn far(&self, t: f64) -> f64 {
        Self::at_least(&self.impostor, t) as f64 / self.impostor.len() as f64
    }

    fn tar(&self, t: f64) -> f64 {
        Self::at_least(&self.genuine, t) as f64 / self.genuine.len() as f64
    }

    /// max TAR over all distinct thresholds (and "accept nothing") with FAR ≤ f, and the
    /// largest threshold that reaches it.
    fn tar_at_far(&self, f: f64) -> (f64, f64) {
        let mut best = (0.0, f64::INFINITY);
        for t in self.thresholds() {
            if self.far(t) <= f && self.tar(t) >= best.0 {
                best = (self.tar(t), t);
            }
        }
        best
    }

    /// The largest impostor score whose acceptance would exceed FAR f (none when f ≥ 1).
    fn last_refused(&self, f: f64) -> Option<f64> {
        self.impostor
            .iter()
            .rev()
            .find(|&&s| self.far(s) > f)
            .copied()
    }

    fn eer(&self) -> f64 {
        let ts = self.thresholds();
        let pts: Vec<(f64, f64)> = ts
            .iter()
            .map(|&t| (self.far(t), 1.0 - self.tar(t)))
            .chain(std::iter::once((0.0, 1.0)))
            .collect();
        for k in 0..pts.len() - 1 {
            let (fa, ra) = pts[k];
            let (fb, rb) = pts[k + 1];
            if fa - ra >= 0.0 && fb - rb < 0.0 {
                if fa == ra {
                    return fa;
                }
                let l = (fa - ra) / ((fa - ra) - (fb - rb));
                return fa + l * (fb - fa);
            }
        }
        unreachable!("D goes from 1 to −1")
    }

    fn auc(&self) -> f64 {
        let mut s = 0.0;
        for &g in &self.genuine {
            for &i in &self.impostor {
                s += if g > i {
                    1.0
                } else if g == i {
                    0.5
                } else {
                    0.0
                };
            }
        }
        s / (self.genuine.len() * self.impostor.len()) as f64
    }

    fn genuine_within(&self, t: f64, r: f64) -> usize {
        self.genuine.iter().filter(|&&g| (g - t).abs() <= r).count()
    }

    fn impostor_within(&self, t: f64, r: f64) -> usize {
        self.impostor
            .iter()
            .filter(|&&g| (g - t).abs() <= r)
            .count()
    }

    fn pairs_within(&self, r: f64) -> usize {
        let mut n = 0;
        for &g in &self.genuine {
            n += self.impostor_within(g, r);
        }
        n
    }
}

const TARGETS: [f64; 5] = [0.3, 1e-1, 1e-2, 1e-3, 1e-4];

fn cfg(sim: Similarity) -> VerificationConfig {
    VerificationConfig {
        similarity: sim,
        far_targets: TARGETS.to_vec(),
        curve_step: 0.0,
        ..VerificationConfig::default()
    }
}

#[test]
fn exact_path_equals_brute_force_on_300_items() {
    let (x, y) = clustered(300, 15, 8, 7);
    for sim in [Similarity::Cosine, Similarity::Dot, Similarity::SqEuclidean] {
        let r = Reference::new(&x, &y, None, sim);
        let v = verify(&x, &y, None, &cfg(sim)).unwrap();
        assert_eq!(v.impostor_bin_width, None);
        assert_eq!(v.genuine_pairs as usize, r.genuine.len());
        assert_eq!(v.impostor_pairs as usize, r.impostor.len());
        assert_eq!(r.genuine.len() + r.impostor.len(), 300 * 299 / 2);
        for row in &v.tar_at_far {
            let (tar, t) = r.tar_at_far(row.far_target);
            assert_eq!(row.tar, tar, "{sim:?} TAR@FAR {}", row.far_target);
            if tar > 0.0 {
                assert_eq!(row.threshold, t, "{sim:?} threshold at {}", row.far_target);
            }
            assert_eq!(row.far, r.far(row.threshold));
            assert!(row.far <= row.far_target);
        }
        assert!(
            (v.eer - r.eer()).abs() < 1e-12,
            "{sim:?} {} {}",
            v.eer,
            r.eer()
        );
        assert!((v.roc_auc - r.auc()).abs() < 1e-12);
        // The full curve: one point per distinct score, counts by brute force.
        let ts = r.thresholds();
        assert_eq!(v.roc.len(), ts.len());
        for (p, &t) in v.roc.iter().zip(&ts) {
            assert_eq!(p.threshold, t);
            assert_eq!(p.far, r.far(t));
            assert_eq!(p.tar, r.tar(t));
        }
    }
}

#[test]
fn query_gallery_exact_path_equals_brute_force() {
    let (g, gl) = clustered(200, 10, 6, 11);
    let (q, ql) = clustered(60, 10, 6, 12);
    let sim = Similarity::Cosine;
    let r = Reference::new(&q, &ql, Some((&g, &gl)), sim);
    let v = verify(&q, &ql, Some((&g, &gl)), &cfg(sim)).unwrap();
    assert_eq!(
        (v.genuine_pairs + v.impostor_pairs) as usize,
        60 * 200,
        "every query × gallery pair once"
    );
    assert_eq!(v.genuine_pairs as usize, r.genuine.len());
    for row in &v.tar_at_far {
        assert_eq!(row.tar, r.tar_at_far(row.far_target).0);
    }
    assert!((v.eer - r.eer()).abs() < 1e-12);
    assert!((v.roc_auc - r.auc()).abs() < 1e-12);
}

/// Histogram path (forced with `exact_max_pairs = 0`, and with `exact_max_genuine = 0` for
/// binned genuine scores too) against the exact reference, within the module's stated
/// resolution: bin width `w` (2w with both binned) plus the f32 GEMM error (`eps`, generous).
#[test]
fn histogram_path_within_its_resolution() {
    let eps = 1e-5;
    let (x, y) = clustered(300, 15, 8, 7);
    let (q, ql) = clustered(80, 15, 8, 9);
    for (sim, bins, gallery, bin_genuine) in [
        (Similarity::Cosine, 1 << 20, false, false),
        (Similarity::Cosine, 64, false, false),
        (Similarity::SqEuclidean, 1 << 16, false, false),
        (Similarity::Dot, 256, false, false),
        (Similarity::Cosine, 512, true, false),
        (Similarity::Cosine, 1 << 20, false, true),
        (Similarity::Cosine, 64, false, true),
        (Similarity::SqEuclidean, 128, true, true),
    ] {
        let (qm, qlab, g) = if gallery {
            (&q, &ql[..], Some((&x, &y[..])))
        } else {
            (&x, &y[..], None)
        };
        let r = Reference::new(qm, qlab, g, sim);
        let c = VerificationConfig {
            exact_max_pairs: 0,
            exact_max_genuine: if bin_genuine { 0 } else { u64::MAX },
            bins,
            block_rows: 64,
            ..cfg(sim)
        };
        let v = verify(qm, qlab, g, &c).unwrap();
        let w = v.impostor_bin_width.expect("histogram path");
        assert_eq!(v.genuine_bin_width, bin_genuine.then_some(w));
        let span = match sim {
            Similarity::Cosine => 2.0,
            _ => {
                let lo = r.impostor[0].min(r.genuine[0]);
                let hi = r.impostor.last().unwrap().max(*r.genuine.last().unwrap());
                assert!(w * bins as f64 >= hi - lo, "the range covers every score");
                w * bins as f64
            }
        };
        assert!((w - span / bins as f64).abs() <= 1e-12 * span);
        // Binned genuine scores move down by up to w more.
        let tol = if bin_genuine { 2.0 * w } else { w } + eps * span;
        assert_eq!(v.genuine_pairs as usize, r.genuine.len());
        assert_eq!(v.impostor_pairs as usize, r.impostor.len());
        let (gn, inn) = (r.genuine.len() as f64, r.impostor.len() as f64);
        for row in &v.tar_at_far {
            let (tar, _) = r.tar_at_far(row.far_target);
            let v_exact = r.last_refused(row.far_target).unwrap();
            // Conservative: the true FAR at the reported threshold (up to the f32 error) is
            // within the target, so TAR cannot exceed the exact TAR@FAR by more than the
            // genuine scores within eps of that threshold.
            assert!(r.far(row.threshold + eps * span) <= row.far_target);
            assert!(row.far <= row.far_target);
            // Nor is TAR overstated: the genuine scores at or above the threshold (up to eps).
            assert!(row.tar <= r.tar(row.threshold - eps * span));
            let band = r.genuine_within(v_exact, tol) as f64 / gn;
            assert!(
                (row.tar - tar).abs() <= band,
                "{sim:?} bins {bins}: TAR@FAR {}: {} vs exact {tar} (band {band})",
                row.far_target,
                row.tar
            );
            if band == 0.0 {
                assert_eq!(row.tar, tar, "{sim:?} bins {bins}");
            }
        }
        let e = r.eer();
        let t_eer = v.eer_threshold;
        let slack = (r.genuine_within(t_eer, 2.0 * tol) + 1) as f64 / gn
            + (r.impostor_within(t_eer, 2.0 * tol) + 1) as f64 / inn;
        assert!(
            (v.eer - e).abs() <= slack,
            "{sim:?} bins {bins}: EER {} vs {e} (slack {slack})",
            v.eer
        );
        let auc_bound = r.pairs_within(tol) as f64 / (gn * inn);
        assert!(
            (v.roc_auc - r.auc()).abs() <= auc_bound + 1e-12,
            "{sim:?} bins {bins}: AUC {} vs {} (bound {auc_bound})",
            v.roc_auc,
            r.auc()
        );
        // The fine histogram resolves this set essentially exactly.
        if bins == 1 << 20 {
            assert!((v.roc_auc - r.auc()).abs() < 1e-4);
            assert!((v.eer - e).abs() < 1e-3);
        }
    }
}

#[test]
fn the_curve_is_thinned_but_keeps_its_ends() {
    let (x, y) = clustered(300, 15, 8, 7);
    let full = verify(&x, &y, None, &cfg(Similarity::Cosine)).unwrap();
    let thin = verify(
        &x,
        &y,
        None,
        &VerificationConfig {
            curve_step: 1e-2,
            ..cfg(Similarity::Cosine)
        },
    )
    .unwrap();
    assert!(thin.roc.len() < full.roc.len() / 4, "{}", thin.roc.len());
    assert_eq!(thin.roc.first(), full.roc.first());
    assert_eq!(thin.roc.last(), full.roc.last());
    assert_eq!(thin.eer, full.eer);
    assert_eq!(thin.tar_at_far, full.tar_at_far);
    for w in thin.roc.windows(2) {
        assert!(w[0].threshold < w[1].threshold && w[0].far >= w[1].far);
    }
}

#[test]
fn degenerate_input_is_a_clear_error() {
    let x = Matrix::new(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
    let c = VerificationConfig::default();
    let e = verify(&x, &[4, 4, 4], None, &c).unwrap_err().to_string();
    assert!(e.contains("no impostor") && e.contains("one class"), "{e}");
    let e = verify(&x, &[1, 2, 3], None, &c).unwrap_err().to_string();
    assert!(e.contains("no genuine"), "{e}");
    let e = verify(&x, &[1, 2], None, &c).unwrap_err().to_string();
    assert!(e.contains("2 labels for 3"), "{e}");
    let nan = Matrix::new(2, 1, vec![1.0, f32::NAN]).unwrap();
    let e = verify(&nan, &[1, 1], None, &c).unwrap_err().to_string();
    assert!(e.contains("row 1"), "{e}");
    let e = verification_from_scores(&[], &[0.5], &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no genuine"), "{e}");
    let e = verification_from_scores(&[0.5], &[], &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no impostor"), "{e}");
    let e = verification_from_scores(&[f64::NAN], &[0.5], &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
    let bad = VerificationConfig {
        far_targets: vec![0.0],
        ..VerificationConfig::default()
    };
    let e = verification_from_scores(&[0.5], &[0.1], &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("far_targets"), "{e}");
    for e in [
        verify(&x, &[4, 4, 4], None, &c).unwrap_err().to_string(),
        verify(&x, &[1, 2], None, &c).unwrap_err().to_string(),
    ] {
        assert_eq!(e.lines().count(), 1);
    }
}

/// Top-1 scores and correctness, descending: 0.9 ✓, 0.8 ✓, 0.7 ✗, 0.6 ✓, 0.5 ✗, 0.5 ✓, 0.3 ✗
/// (7 queries, 4 correct). Per threshold (accepted, correct, P, R, F1 = 2·ok/(acc + n)):
/// 0.9: 1 1 1 1/7 2/8 · 0.8: 2 2 1 2/7 4/9 · 0.7: 3 2 2/3 2/7 4/10 · 0.6: 4 3 3/4 3/7 6/11 ·
/// 0.5: 6 4 2/3 4/7 8/13 · 0.3: 7 4 4/7 4/7 8/14. F1-optimal: 0.5. Precision ≥ 0.75:
/// thresholds 0.9, 0.8, 0.6 → the smallest, 0.6. Precision ≥ 0.95: 0.8. 0.7: 0.6.
#[test]
fn calibration_hand_computed() {
    let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.3];
    let ok = [true, true, false, true, false, true, false];
    let c = calibrate(&s, &ok, &[0.75, 0.95, 0.7]).unwrap();
    assert_eq!((c.n_queries, c.n_correct), (7, 4));
    let want = [
        (0.9, 1, 1, 1.0, 1.0 / 7.0, 2.0 / 8.0),
        (0.8, 2, 2, 1.0, 2.0 / 7.0, 4.0 / 9.0),
        (0.7, 3, 2, 2.0 / 3.0, 2.0 / 7.0, 4.0 / 10.0),
        (0.6, 4, 3, 0.75, 3.0 / 7.0, 6.0 / 11.0),
        (0.5, 6, 4, 2.0 / 3.0, 4.0 / 7.0, 8.0 / 13.0),
        (0.3, 7, 4, 4.0 / 7.0, 4.0 / 7.0, 8.0 / 14.0),
    ];
    assert_eq!(c.curve.len(), want.len());
    for (p, w) in c.curve.iter().zip(&want) {
        close(p.threshold, w.0);
        assert_eq!((p.accepted, p.correct), (w.1, w.2));
        close(p.precision, w.3);
        close(p.recall, w.4);
        close(p.f1, w.5);
    }
    close(c.f1.threshold, 0.5);
    close(c.f1.f1, 8.0 / 13.0);
    let th: Vec<f64> = c
        .precision
        .iter()
        .map(|t| t.point.unwrap().threshold)
        .collect();
    assert_eq!(th, vec![0.6, 0.8, 0.6]);
    close(c.rule("precision=0.75").unwrap().threshold, 0.6);
    close(c.rule("precision>=1").unwrap().threshold, 0.8);
    close(c.rule("F1").unwrap().threshold, 0.5);
    let table = c.to_table();
    assert!(table.contains("precision>=0.95"), "{table}");
}

/// F1 ties: 8 queries, 0.9 ✓ 0.8 ✓ 0.7 ✗ 0.6 ✓ 0.5 ✗ 0.4 ✗ 0.3 ✗ 0.2 ✓: at 0.6 (acc 4, ok 3)
/// F1 = 6/12 and at 0.2 (acc 8, ok 4) F1 = 8/16, both ½ and the largest; the larger threshold
/// (fewer matches) wins. Precision 0.99 is only reached at 0.8; no threshold reaches it if the
/// first two are wrong.
#[test]
fn calibration_ties_unreached_targets_and_errors() {
    let s = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2];
    let ok = [true, true, false, true, false, false, false, true];
    let c = calibrate(&s, &ok, &[0.99]).unwrap();
    close(c.f1.f1, 0.5);
    close(c.f1.threshold, 0.6);
    close(c.precision[0].point.unwrap().threshold, 0.8);
    let ok2 = [false, false, false, true, false, false, false, true];
    let c = calibrate(&s, &ok2, &[0.99]).unwrap();
    assert!(c.precision[0].point.is_none());
    assert!(c.to_table().contains("not reached"));
    let e = c.rule("precision=0.99").unwrap_err().to_string();
    assert!(e.contains("no threshold reaches precision 0.99"), "{e}");
    assert!(e.starts_with("rule precision>=0.99"), "{e}");
    let e = c.rule("recall=0.5").unwrap_err().to_string();
    assert!(e.contains("expected f1 or precision=P"), "{e}");
    let e = c.rule("precision=1.5").unwrap_err().to_string();
    assert!(e.contains("not in (0, 1]"), "{e}");
    let e = calibrate(&s, &[false; 8], &[]).unwrap_err().to_string();
    assert!(e.contains("none of the 8 queries"), "{e}");
    let e = calibrate(&s, &[true; 3], &[]).unwrap_err().to_string();
    assert!(e.contains("3 correctness flags for 8"), "{e}");
    let e = calibrate(&[], &[], &[]).unwrap_err().to_string();
    assert!(e.contains("no queries"), "{e}");
    let e = calibrate(&[f64::NAN], &[true], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
    let e = calibrate(&[0.5], &[true], &[0.0]).unwrap_err().to_string();
    assert!(e.contains("precision 0"), "{e}");
}

/// The stored decimal threshold decides every f32 score as the f32 threshold does, is short,
/// and parses back to itself.
#[test]
fn f32_threshold_decimal_keeps_decisions() {
    let mut r = Rng(5);
    for _ in 0..2000 {
        let t32 = (r.next() * 4.0 - 2.0) as f32;
        let t = f64::from(t32);
        let d = f32_threshold_decimal(t);
        assert!(d <= t && d > f64::from(t32.next_down()), "{t} -> {d}");
        for s in [t32, t32.next_down(), t32.next_up()] {
            assert_eq!(f64::from(s) >= d, s >= t32);
        }
        let text = format!("{d:e}");
        let digits = text
            .split('e')
            .next()
            .unwrap()
            .chars()
            .filter(char::is_ascii_digit)
            .count();
        assert!(digits <= 10, "{text}: {digits} significant digits");
        assert_eq!(text.parse::<f64>().unwrap(), d);
        assert_eq!(format!("{d}").parse::<f64>().unwrap(), d);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<f64>(&json).unwrap(), d, "{json}");
    }
    // 0.1 is not an f32 value: unchanged.
    assert_eq!(f32_threshold_decimal(0.1), 0.1);
    assert_eq!(f32_threshold_decimal(f64::INFINITY), f64::INFINITY);
}
