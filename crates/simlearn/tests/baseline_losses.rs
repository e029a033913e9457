//! Baseline losses, miners and the loss registry.
//!
//! Everything runs in f64 on the flex backend with autodiff (the device's default float dtype is
//! configured to f64 once per test binary), so the autodiff-vs-central-difference checks can use
//! tight tolerances. Each loss is also compared with a plain-Rust f64 reference implementation
//! of its equation written here, and the triplet / multi-similarity losses with values worked
//! out by hand on four points of the unit circle.

use std::sync::OnceLock;

use burn::module::{Module, Param};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use simlearn::losses::fastap::FastApConfig;
use simlearn::losses::multi_similarity::MultiSimilarityConfig;
use simlearn::losses::normalized_softmax::NormalizedSoftmaxConfig;
use simlearn::losses::ntxent::NtXentConfig;
use simlearn::losses::proxy_anchor::ProxyAnchorConfig;
use simlearn::losses::proxy_nca::ProxyNcaConfig;
use simlearn::losses::registry::{AnyClassLoss, LossConfig};
use simlearn::losses::smooth_ap::SmoothApConfig;
use simlearn::losses::supcon::SupConConfig;
use simlearn::losses::triplet::TripletConfig;
use simlearn::losses::{ClassLoss, LossError};
use simlearn::miners::batch_hard::BatchHardMiner;
use simlearn::miners::distance_weighted::DistanceWeightedConfig;
use simlearn::miners::multi_similarity::MultiSimilarityMinerConfig;
use simlearn::miners::{AllTuples, HostBatch, IndexTuples, Miner, MinerConfig, PairList};

// ---------------------------------------------------------------------------------------------
// Set-up helpers
// ---------------------------------------------------------------------------------------------

fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let mut d = Device::flex();
            d.configure(FloatDType::F64)
                .expect("configure flex to f64 before any tensor exists");
            d.autodiff()
        })
        .clone()
}

fn tensor(values: &[f64], n: usize, d: usize) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [n, d]),
        (&device(), DType::F64),
    )
}

fn random_values(count: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f64>()
}

fn host(values: &[f64], n: usize, d: usize) -> HostBatch {
    HostBatch {
        n,
        d,
        values: values.to_vec(),
    }
}

/// Value of a loss at `values` (no gradient).
fn loss_value(loss: &dyn ClassLoss, values: &[f64], n: usize, d: usize, labels: &[i64]) -> f64 {
    scalar(loss.forward(tensor(values, n, d), labels).unwrap().total)
}

/// Autodiff gradient of a loss with respect to the embeddings.
fn autodiff_grad(
    loss: &dyn ClassLoss,
    values: &[f64],
    n: usize,
    d: usize,
    labels: &[i64],
) -> Vec<f64> {
    let x = tensor(values, n, d).require_grad();
    let out = loss.forward(x.clone(), labels).unwrap().total;
    let grads = out.backward();
    x.grad(&grads)
        .expect("embeddings receive a gradient")
        .try_into_vec_as::<f64>()
        .unwrap()
}

/// Central differences of `f` at `values`, step `h`.
fn central_diff(values: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    (0..values.len())
        .map(|k| {
            let mut plus = values.to_vec();
            let mut minus = values.to_vec();
            plus[k] += h;
            minus[k] -= h;
            (f(&plus) - f(&minus)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * scale,
            "{what}: entry {k}: got {g}, want {w} (tol {tol} × scale {scale})"
        );
    }
}

/// Autodiff vs central differences with respect to the embeddings, on a random batch.
fn check_embedding_gradient(loss: &dyn ClassLoss, n: usize, d: usize, labels: &[i64], seed: u64) {
    let values = random_values(n * d, seed);
    let ad = autodiff_grad(loss, &values, n, d, labels);
    let fd = central_diff(&values, 1e-6, |v| loss_value(loss, v, n, d, labels));
    assert!(
        ad.iter().any(|g| g.abs() > 1e-8),
        "{}: gradient is identically zero",
        loss.name()
    );
    assert_close(
        &format!("{} gradient (seed {seed})", loss.name()),
        &ad,
        &fd,
        1e-5,
    );
}

// A batch with three classes of unequal sizes, one singleton class (no positive).
const LABELS_8: [i64; 8] = [0, 1, 0, 2, 1, 0, 1, 3];

// ---------------------------------------------------------------------------------------------
// Plain-Rust f64 references
// ---------------------------------------------------------------------------------------------

fn normalized(values: &[f64], n: usize, d: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let row = &values[i * d..(i + 1) * d];
            let norm = (row.iter().map(|v| v * v).sum::<f64>() + 1e-12).sqrt();
            row.iter().map(|v| v / norm).collect()
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn cos_matrix(values: &[f64], n: usize, d: usize) -> Vec<Vec<f64>> {
    let z = normalized(values, n, d);
    (0..n)
        .map(|i| (0..n).map(|j| dot(&z[i], &z[j])).collect())
        .collect()
}

fn ref_triplet(
    values: &[f64],
    n: usize,
    d: usize,
    triplets: &[(usize, usize, usize)],
    margin: f64,
) -> f64 {
    let c = cos_matrix(values, n, d);
    let dist = |i: usize, j: usize| (2.0 - 2.0 * c[i][j]).max(1e-12).sqrt();
    let losses: Vec<f64> = triplets
        .iter()
        .map(|&(a, p, m)| (dist(a, p) - dist(a, m) + margin).max(0.0))
        .filter(|&l| l > 0.0)
        .collect();
    if losses.is_empty() {
        0.0
    } else {
        losses.iter().sum::<f64>() / losses.len() as f64
    }
}

fn all_triplets(labels: &[i64]) -> Vec<(usize, usize, usize)> {
    let n = labels.len();
    let mut out = Vec::new();
    for a in 0..n {
        for p in 0..n {
            for m in 0..n {
                if a != p && labels[a] == labels[p] && labels[m] != labels[a] {
                    out.push((a, p, m));
                }
            }
        }
    }
    out
}

fn log1p_sum_exp(xs: &[f64]) -> f64 {
    (1.0 + xs.iter().map(|x| x.exp()).sum::<f64>()).ln()
}

// Index loops mirror the equations' subscripts.
#[allow(clippy::needless_range_loop)]
fn ref_multi_similarity(
    values: &[f64],
    n: usize,
    d: usize,
    pos: &[(usize, usize)],
    neg: &[(usize, usize)],
    (alpha, beta, base): (f64, f64, f64),
) -> f64 {
    let c = cos_matrix(values, n, d);
    let mut total = 0.0;
    for i in 0..n {
        let p: Vec<f64> = pos
            .iter()
            .filter(|e| e.0 == i)
            .map(|&(_, j)| -alpha * (c[i][j] - base))
            .collect();
        let q: Vec<f64> = neg
            .iter()
            .filter(|e| e.0 == i)
            .map(|&(_, j)| beta * (c[i][j] - base))
            .collect();
        total += log1p_sum_exp(&p) / alpha + log1p_sum_exp(&q) / beta;
    }
    total / n as f64
}

fn label_pairs(labels: &[i64]) -> (PairList, PairList) {
    let n = labels.len();
    let mut pos = Vec::new();
    let mut neg = Vec::new();
    for i in 0..n {
        for j in 0..n {
            if labels[i] == labels[j] && i != j {
                pos.push((i, j));
            } else if labels[i] != labels[j] {
                neg.push((i, j));
            }
        }
    }
    (pos, neg)
}

fn ref_ntxent(values: &[f64], n: usize, d: usize, labels: &[i64], tau: f64) -> f64 {
    let c = cos_matrix(values, n, d);
    let (pos, _) = label_pairs(labels);
    let mut total = 0.0;
    for &(a, p) in &pos {
        let num = (c[a][p] / tau).exp();
        let den: f64 = num
            + (0..n)
                .filter(|&k| labels[k] != labels[a])
                .map(|k| (c[a][k] / tau).exp())
                .sum::<f64>();
        total += -(num / den).ln();
    }
    total / pos.len() as f64
}

fn ref_supcon(values: &[f64], n: usize, d: usize, labels: &[i64], tau: f64) -> f64 {
    let c = cos_matrix(values, n, d);
    let mut losses = Vec::new();
    for i in 0..n {
        let positives: Vec<usize> = (0..n)
            .filter(|&j| j != i && labels[j] == labels[i])
            .collect();
        if positives.is_empty() {
            continue;
        }
        let log_den = (0..n)
            .filter(|&j| j != i)
            .map(|j| (c[i][j] / tau).exp())
            .sum::<f64>()
            .ln();
        let l = -positives
            .iter()
            .map(|&p| c[i][p] / tau - log_den)
            .sum::<f64>()
            / positives.len() as f64;
        if l > 0.0 {
            losses.push(l);
        }
    }
    losses.iter().sum::<f64>() / losses.len() as f64
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn ref_smooth_ap(values: &[f64], n: usize, d: usize, labels: &[i64], tau: f64) -> f64 {
    let c = cos_matrix(values, n, d);
    let mut aps = Vec::new();
    for i in 0..n {
        let positives: Vec<usize> = (0..n)
            .filter(|&j| j != i && labels[j] == labels[i])
            .collect();
        if positives.is_empty() {
            continue;
        }
        let mut ap = 0.0;
        for &p in &positives {
            let mut r_all = 1.0;
            let mut r_pos = 1.0;
            for j in (0..n).filter(|&j| j != i && j != p) {
                let s = sigmoid((c[i][j] - c[i][p]) / tau);
                r_all += s;
                if labels[j] == labels[i] {
                    r_pos += s;
                }
            }
            ap += r_pos / r_all;
        }
        aps.push(ap / positives.len() as f64);
    }
    1.0 - aps.iter().sum::<f64>() / aps.len() as f64
}

fn ref_fastap(values: &[f64], n: usize, d: usize, labels: &[i64], bins: usize) -> f64 {
    let c = cos_matrix(values, n, d);
    let delta = 4.0 / bins as f64;
    let mut losses = Vec::new();
    for i in 0..n {
        let npos = (0..n).filter(|&j| j != i && labels[j] == labels[i]).count();
        if npos == 0 {
            continue;
        }
        let (mut cum_pos, mut cum_all, mut ap) = (0.0, 0.0, 0.0);
        for l in 0..=bins {
            let centre = l as f64 * delta;
            let (mut hp, mut hn) = (0.0, 0.0);
            for j in (0..n).filter(|&j| j != i) {
                let dist = (2.0 - 2.0 * c[i][j]).max(0.0);
                let pulse = (1.0 - (dist - centre).abs() / delta).max(0.0);
                if labels[j] == labels[i] {
                    hp += pulse;
                } else {
                    hn += pulse;
                }
            }
            cum_pos += hp;
            cum_all += hp + hn;
            if cum_all > 0.0 {
                ap += hp * cum_pos / cum_all;
            }
        }
        losses.push(1.0 - ap / npos as f64);
    }
    losses.iter().sum::<f64>() / losses.len() as f64
}

fn log_softmax_at(logits: &[f64], k: usize) -> f64 {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    logits[k] - m - logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln()
}

fn proxy_cos(values: &[f64], proxies: &[f64], n: usize, c: usize, d: usize) -> Vec<Vec<f64>> {
    let z = normalized(values, n, d);
    let w = normalized(proxies, c, d);
    (0..n)
        .map(|i| (0..c).map(|k| dot(&z[i], &w[k])).collect())
        .collect()
}

fn ref_proxy_nca(
    values: &[f64],
    proxies: &[f64],
    n: usize,
    c: usize,
    d: usize,
    labels: &[i64],
    scale: f64,
) -> f64 {
    let cos = proxy_cos(values, proxies, n, c, d);
    let mut total = 0.0;
    for i in 0..n {
        let logits: Vec<f64> = cos[i].iter().map(|s| -scale * (2.0 - 2.0 * s)).collect();
        total -= log_softmax_at(&logits, labels[i] as usize);
    }
    total / n as f64
}

fn ref_norm_softmax(
    values: &[f64],
    proxies: &[f64],
    n: usize,
    c: usize,
    d: usize,
    labels: &[i64],
    t: f64,
) -> f64 {
    let cos = proxy_cos(values, proxies, n, c, d);
    let mut total = 0.0;
    for i in 0..n {
        let logits: Vec<f64> = cos[i].iter().map(|s| s / t).collect();
        total -= log_softmax_at(&logits, labels[i] as usize);
    }
    total / n as f64
}

#[allow(clippy::needless_range_loop)]
fn ref_proxy_anchor(
    values: &[f64],
    proxies: &[f64],
    n: usize,
    c: usize,
    d: usize,
    labels: &[i64],
    (alpha, margin): (f64, f64),
) -> f64 {
    let cos = proxy_cos(values, proxies, n, c, d);
    let mut pos_sum = 0.0;
    let mut with_pos = 0;
    let mut neg_sum = 0.0;
    for k in 0..c {
        let pos: Vec<f64> = (0..n)
            .filter(|&i| labels[i] == k as i64)
            .map(|i| -alpha * (cos[i][k] - margin))
            .collect();
        let neg: Vec<f64> = (0..n)
            .filter(|&i| labels[i] != k as i64)
            .map(|i| alpha * (cos[i][k] + margin))
            .collect();
        if !pos.is_empty() {
            with_pos += 1;
            pos_sum += log1p_sum_exp(&pos);
        }
        neg_sum += log1p_sum_exp(&neg);
    }
    pos_sum / with_pos as f64 + neg_sum / c as f64
}

// ---------------------------------------------------------------------------------------------
// Device sanity
// ---------------------------------------------------------------------------------------------

#[test]
fn test_device_is_f64() {
    let t = Tensor::<2>::zeros([1, 1], &device());
    assert_eq!(t.dtype(), DType::F64);
}

// ---------------------------------------------------------------------------------------------
// Hand-computed values: four points on the unit circle at 0°, 60°, 90°, 180° (scaled by
// different norms to exercise the normalisation), labels [0, 0, 1, 1].
// ---------------------------------------------------------------------------------------------

fn circle_points() -> Vec<f64> {
    let angles = [0.0f64, 60.0, 90.0, 180.0];
    let scales = [2.0, 0.5, 1.0, 3.0];
    angles
        .iter()
        .zip(scales)
        .flat_map(|(a, s)| {
            let r = a.to_radians();
            [s * r.cos(), s * r.sin()]
        })
        .collect()
}

const CIRCLE_LABELS: [i64; 4] = [0, 0, 1, 1];

#[test]
fn triplet_all_triplets_hand_value() {
    // Chord lengths 2·sin(Δθ/2): d01 = 1, d02 = √2, d03 = 2, d12 = 2 sin 15° = (√6 − √2)/2,
    // d13 = √3, d23 = √2. With margin 0.05 the violated triplets are (1,0,2): 1 − d12 + 0.05,
    // (2,3,0): √2 − √2 + 0.05 and (2,3,1): √2 − d12 + 0.05; every other triplet is satisfied.
    // Mean over the three: (1.15 + 2√2 − √6) / 3.
    let loss = TripletConfig {
        margin: 0.05,
        miner: MinerConfig::All,
    }
    .init()
    .unwrap();
    let got = loss_value(&loss, &circle_points(), 4, 2, &CIRCLE_LABELS);
    let want = (1.15 + 2.0 * 2f64.sqrt() - 6f64.sqrt()) / 3.0;
    // 1e-10: the 1e-12 inside the normalisation's square root shifts the value by ~1e-12.
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");
}

#[test]
fn multi_similarity_hand_value() {
    // Cosines: c01 = 1/2, c02 = 0, c03 = −1, c12 = √3/2, c13 = −1/2, c23 = 0.
    // Row i: ½·ln(1 + e^{−2(c_pos − ½)}) + (1/50)·ln(1 + Σ_neg e^{50(c − ½)}).
    let loss = MultiSimilarityConfig::default().init().unwrap();
    let got = loss_value(&loss, &circle_points(), 4, 2, &CIRCLE_LABELS);
    let h = 3f64.sqrt() / 2.0;
    let pos = |c: f64| 0.5 * (1.0 + (-2.0 * (c - 0.5)).exp()).ln();
    let neg =
        |cs: &[f64]| (1.0 + cs.iter().map(|c| (50.0 * (c - 0.5)).exp()).sum::<f64>()).ln() / 50.0;
    let rows = [
        pos(0.5) + neg(&[0.0, -1.0]),
        pos(0.5) + neg(&[h, -0.5]),
        pos(0.0) + neg(&[0.0, h]),
        pos(0.0) + neg(&[-1.0, -0.5]),
    ];
    let want = rows.iter().sum::<f64>() / 4.0;
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");
}

#[test]
fn ntxent_hand_value() {
    // Positive pairs (0,1), (1,0), (2,3), (3,2); ℓ = ln(1 + Σ_neg e^{(c_neg − c_pos)/τ}).
    let tau = 0.07;
    let loss = NtXentConfig { temperature: tau }.init().unwrap();
    let got = loss_value(&loss, &circle_points(), 4, 2, &CIRCLE_LABELS);
    let h = 3f64.sqrt() / 2.0;
    let l = |cp: f64, negs: &[f64]| {
        (1.0 + negs.iter().map(|c| ((c - cp) / tau).exp()).sum::<f64>()).ln()
    };
    let want =
        (l(0.5, &[0.0, -1.0]) + l(0.5, &[h, -0.5]) + l(0.0, &[0.0, h]) + l(0.0, &[-1.0, -0.5]))
            / 4.0;
    // The normalisation eps (1e-12 inside the sqrt) is amplified by 1/τ here.
    assert!((got - want).abs() < 1e-10, "got {got}, want {want}");
}

// ---------------------------------------------------------------------------------------------
// Values against the plain-Rust references on random batches
// ---------------------------------------------------------------------------------------------

#[test]
fn triplet_matches_reference_all_and_given_triplets() {
    let (n, d) = (8, 3);
    for seed in 0..3 {
        let values = random_values(n * d, seed);
        for margin in [0.05, 0.5] {
            let loss = TripletConfig {
                margin,
                miner: MinerConfig::All,
            }
            .init()
            .unwrap();
            let got = loss_value(&loss, &values, n, d, &LABELS_8);
            let want = ref_triplet(&values, n, d, &all_triplets(&LABELS_8), margin);
            assert!(
                (got - want).abs() < 1e-10,
                "seed {seed} margin {margin}: {got} vs {want}"
            );
            let some = [(0, 2, 1), (1, 4, 3), (5, 0, 7), (0, 2, 1)];
            let got = scalar(
                loss.forward_triplets(tensor(&values, n, d), &LABELS_8, &some)
                    .unwrap()
                    .total,
            );
            let want = ref_triplet(&values, n, d, &some, margin);
            assert!(
                (got - want).abs() < 1e-10,
                "given triplets: {got} vs {want}"
            );
        }
    }
}

#[test]
fn multi_similarity_matches_reference_all_and_mined() {
    let (n, d) = (8, 3);
    for seed in 0..3 {
        let values = random_values(n * d, 10 + seed);
        let loss = MultiSimilarityConfig::default().init().unwrap();
        let (pos, neg) = label_pairs(&LABELS_8);
        let got = loss_value(&loss, &values, n, d, &LABELS_8);
        let want = ref_multi_similarity(&values, n, d, &pos, &neg, (2.0, 50.0, 0.5));
        assert!((got - want).abs() < 1e-10, "all pairs: {got} vs {want}");

        let mined_cfg = MultiSimilarityConfig {
            miner: MinerConfig::MultiSimilarity(MultiSimilarityMinerConfig { epsilon: 0.1 }),
            ..Default::default()
        };
        let mined = mined_cfg.init().unwrap();
        let tuples = mined_cfg_miner_pairs(&values, n, d);
        let got = loss_value(&mined, &values, n, d, &LABELS_8);
        let want = ref_multi_similarity(&values, n, d, &tuples.0, &tuples.1, (2.0, 50.0, 0.5));
        assert!((got - want).abs() < 1e-10, "mined pairs: {got} vs {want}");
    }
}

fn mined_cfg_miner_pairs(values: &[f64], n: usize, d: usize) -> (PairList, PairList) {
    MultiSimilarityMinerConfig { epsilon: 0.1 }
        .init()
        .unwrap()
        .mine(&host(values, n, d), &LABELS_8)
        .unwrap()
        .to_pairs()
}

#[test]
fn ntxent_supcon_smoothap_fastap_match_references() {
    let (n, d) = (8, 3);
    for seed in 0..3 {
        let values = random_values(n * d, 20 + seed);
        let ntx = NtXentConfig::default().init().unwrap();
        let sup = SupConConfig::default().init().unwrap();
        let sap = SmoothApConfig { temperature: 0.1 }.init().unwrap();
        let sap_default = SmoothApConfig::default().init().unwrap();
        let fap = FastApConfig::default().init().unwrap();
        let fap5 = FastApConfig { num_bins: 5 }.init().unwrap();
        let cases: [(&dyn ClassLoss, f64); 6] = [
            (&ntx, ref_ntxent(&values, n, d, &LABELS_8, 0.07)),
            (&sup, ref_supcon(&values, n, d, &LABELS_8, 0.1)),
            (&sap, ref_smooth_ap(&values, n, d, &LABELS_8, 0.1)),
            (&sap_default, ref_smooth_ap(&values, n, d, &LABELS_8, 0.01)),
            (&fap, ref_fastap(&values, n, d, &LABELS_8, 10)),
            (&fap5, ref_fastap(&values, n, d, &LABELS_8, 5)),
        ];
        for (loss, want) in cases {
            let got = loss_value(loss, &values, n, d, &LABELS_8);
            assert!(
                (got - want).abs() < 1e-10,
                "{} seed {seed}: {got} vs {want}",
                loss.name()
            );
        }
    }
}

/// Replaces the proxies of a proxy loss (for references and proxy gradients).
fn with_proxies(loss: AnyClassLoss, proxies: &[f64], c: usize, d: usize) -> AnyClassLoss {
    let p = Param::from_tensor(tensor(proxies, c, d));
    match loss {
        AnyClassLoss::ProxyNca(mut l) => {
            l.proxies = p;
            AnyClassLoss::ProxyNca(l)
        }
        AnyClassLoss::ProxyAnchor(mut l) => {
            l.proxies = p;
            AnyClassLoss::ProxyAnchor(l)
        }
        AnyClassLoss::NormalizedSoftmax(mut l) => {
            l.proxies = p;
            AnyClassLoss::NormalizedSoftmax(l)
        }
        other => other,
    }
}

fn proxy_configs() -> Vec<LossConfig> {
    vec![
        LossConfig::ProxyNca(ProxyNcaConfig::default()),
        LossConfig::ProxyAnchor(ProxyAnchorConfig::default()),
        LossConfig::NormalizedSoftmax(NormalizedSoftmaxConfig::default()),
    ]
}

fn proxy_reference(
    cfg: &LossConfig,
    values: &[f64],
    proxies: &[f64],
    n: usize,
    c: usize,
    d: usize,
    labels: &[i64],
) -> f64 {
    match cfg {
        LossConfig::ProxyNca(p) => ref_proxy_nca(values, proxies, n, c, d, labels, p.softmax_scale),
        LossConfig::ProxyAnchor(p) => {
            ref_proxy_anchor(values, proxies, n, c, d, labels, (p.alpha, p.margin))
        }
        LossConfig::NormalizedSoftmax(p) => {
            ref_norm_softmax(values, proxies, n, c, d, labels, p.temperature)
        }
        _ => unreachable!("not a proxy loss"),
    }
}

#[test]
fn proxy_losses_match_references() {
    let (n, c, d) = (8, 5, 3);
    // Class 4 has no sample: Proxy-Anchor's positive term skips it, its negative term keeps it.
    for seed in 0..3 {
        let values = random_values(n * d, 30 + seed);
        let proxies = random_values(c * d, 40 + seed);
        for cfg in proxy_configs() {
            let loss = with_proxies(cfg.init(c, d, &device()).unwrap(), &proxies, c, d);
            let got = loss_value(&loss, &values, n, d, &LABELS_8);
            let want = proxy_reference(&cfg, &values, &proxies, n, c, d, &LABELS_8);
            assert!(
                (got - want).abs() < 1e-10,
                "{} seed {seed}: {got} vs {want}",
                cfg.name()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gradients: autodiff vs central differences
// ---------------------------------------------------------------------------------------------

#[test]
fn gradients_of_pair_and_triplet_losses() {
    let (n, d) = (8, 3);
    let losses: Vec<Box<dyn ClassLoss>> = vec![
        Box::new(
            TripletConfig {
                margin: 0.3,
                miner: MinerConfig::All,
            }
            .init()
            .unwrap(),
        ),
        Box::new(
            TripletConfig {
                margin: 0.3,
                miner: MinerConfig::BatchHard,
            }
            .init()
            .unwrap(),
        ),
        Box::new(MultiSimilarityConfig::default().init().unwrap()),
        Box::new(
            MultiSimilarityConfig {
                miner: MinerConfig::MultiSimilarity(Default::default()),
                ..Default::default()
            }
            .init()
            .unwrap(),
        ),
        Box::new(NtXentConfig::default().init().unwrap()),
        Box::new(SupConConfig::default().init().unwrap()),
    ];
    for loss in &losses {
        for seed in 0..2 {
            check_embedding_gradient(loss.as_ref(), n, d, &LABELS_8, 100 + seed);
        }
    }
}

#[test]
fn gradients_of_ranking_losses() {
    let (n, d) = (8, 3);
    let losses: Vec<Box<dyn ClassLoss>> = vec![
        Box::new(SmoothApConfig::default().init().unwrap()),
        Box::new(SmoothApConfig { temperature: 0.1 }.init().unwrap()),
        Box::new(FastApConfig::default().init().unwrap()),
    ];
    for loss in &losses {
        for seed in 0..2 {
            check_embedding_gradient(loss.as_ref(), n, d, &LABELS_8, 200 + seed);
        }
    }
}

#[test]
fn gradients_of_proxy_losses_wrt_embeddings_and_proxies() {
    let (n, c, d) = (8, 5, 3);
    for cfg in proxy_configs() {
        for seed in 0..2 {
            let values = random_values(n * d, 300 + seed);
            let proxies = random_values(c * d, 400 + seed);
            let loss = with_proxies(cfg.init(c, d, &device()).unwrap(), &proxies, c, d);
            check_embedding_gradient(&loss, n, d, &LABELS_8, 300 + seed);

            // Gradient with respect to the proxies.
            let p = tensor(&proxies, c, d).require_grad();
            let loss_p = match cfg.init(c, d, &device()).unwrap() {
                AnyClassLoss::ProxyNca(mut l) => {
                    l.proxies = Param::from_tensor(p.clone());
                    AnyClassLoss::ProxyNca(l)
                }
                AnyClassLoss::ProxyAnchor(mut l) => {
                    l.proxies = Param::from_tensor(p.clone());
                    AnyClassLoss::ProxyAnchor(l)
                }
                AnyClassLoss::NormalizedSoftmax(mut l) => {
                    l.proxies = Param::from_tensor(p.clone());
                    AnyClassLoss::NormalizedSoftmax(l)
                }
                other => other,
            };
            let out = loss_p
                .forward(tensor(&values, n, d), &LABELS_8)
                .unwrap()
                .total;
            let grads = out.backward();
            let ad = loss_p
                .proxies()
                .unwrap()
                .grad(&grads)
                .expect("proxies receive a gradient")
                .try_into_vec_as::<f64>()
                .unwrap();
            let fd = central_diff(&proxies, 1e-6, |pv| {
                let l = with_proxies(cfg.init(c, d, &device()).unwrap(), pv, c, d);
                loss_value(&l, &values, n, d, &LABELS_8)
            });
            assert!(
                ad.iter().any(|g| g.abs() > 1e-8),
                "{}: zero proxy gradient",
                cfg.name()
            );
            assert_close(&format!("{} proxy gradient", cfg.name()), &ad, &fd, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Miners
// ---------------------------------------------------------------------------------------------

fn euclid_normalized(values: &[f64], n: usize, d: usize) -> Vec<Vec<f64>> {
    let c = cos_matrix(values, n, d);
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (2.0 - 2.0 * c[i][j]).max(0.0).sqrt())
                .collect()
        })
        .collect()
}

#[test]
fn batch_hard_picks_the_hardest_positive_and_negative() {
    let (n, d) = (12, 4);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    for seed in 0..5 {
        let values = random_values(n * d, 500 + seed);
        let dist = euclid_normalized(&values, n, d);
        let IndexTuples::Triplets(t) = BatchHardMiner.mine(&host(&values, n, d), &labels).unwrap()
        else {
            panic!("batch-hard returns triplets");
        };
        assert_eq!(t.len(), n, "one triplet per anchor");
        for (a, p, m) in t {
            assert_eq!(labels[a], labels[p]);
            assert_ne!(a, p);
            assert_ne!(labels[a], labels[m]);
            for j in 0..n {
                if j != a && labels[j] == labels[a] {
                    assert!(
                        dist[a][p] >= dist[a][j] - 1e-12,
                        "anchor {a}: positive {j} is farther than {p}"
                    );
                }
                if labels[j] != labels[a] {
                    assert!(
                        dist[a][m] <= dist[a][j] + 1e-12,
                        "anchor {a}: negative {j} is closer than {m}"
                    );
                }
            }
        }
    }
    // Anchors without a positive (singleton class 3 in LABELS_8) give no triplet.
    let values = random_values(8 * 3, 9);
    let IndexTuples::Triplets(t) = BatchHardMiner
        .mine(&host(&values, 8, 3), &LABELS_8)
        .unwrap()
    else {
        panic!("batch-hard returns triplets");
    };
    assert!(t.iter().all(|&(a, _, _)| a != 3 && a != 7));
    assert_eq!(t.len(), 6);
}

#[test]
fn distance_weighted_weights_respect_cutoffs_and_formula() {
    let (n, d) = (16, 5);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
    let cfg = DistanceWeightedConfig::default();
    let miner = cfg.init().unwrap();
    for seed in 0..4 {
        let values = random_values(n * d, 600 + seed);
        let dist = euclid_normalized(&values, n, d);
        let w = miner.weights(&host(&values, n, d), &labels);
        for a in 0..n {
            let row = &w[a * n..(a + 1) * n];
            let total: f64 = row.iter().sum();
            let eligible: Vec<usize> = (0..n)
                .filter(|&j| labels[j] != labels[a] && dist[a][j] < cfg.nonzero_loss_cutoff)
                .collect();
            if eligible.is_empty() {
                assert_eq!(total, 0.0);
                continue;
            }
            assert!((total - 1.0).abs() < 1e-12, "row {a} sums to {total}");
            for j in 0..n {
                if labels[j] == labels[a] || dist[a][j] >= cfg.nonzero_loss_cutoff {
                    assert_eq!(row[j], 0.0, "anchor {a}: weight on ineligible {j}");
                }
            }
            // Ratios follow w ∝ δ^{2−d}(1 − δ²/4)^{−(d−3)/2}, δ = max(dist, cutoff).
            let q = |j: usize| {
                let delta = dist[a][j].max(cfg.cutoff);
                let dd = d as f64;
                ((2.0 - dd) * delta.ln() - ((dd - 3.0) / 2.0) * (1.0 - 0.25 * delta * delta).ln())
                    .exp()
            };
            let j0 = eligible[0];
            for &j in &eligible {
                let want = q(j) / q(j0);
                let got = row[j] / row[j0];
                assert!(
                    (got - want).abs() <= 1e-9 * want.max(1.0),
                    "anchor {a}: ratio {got} vs {want}"
                );
            }
        }
        // Every sampled triplet uses a negative with positive weight.
        let IndexTuples::Triplets(t) = miner.mine(&host(&values, n, d), &labels).unwrap() else {
            panic!("distance-weighted returns triplets");
        };
        assert!(!t.is_empty());
        for (a, p, m) in t {
            assert_eq!(labels[a], labels[p]);
            assert_ne!(a, p);
            assert!(
                w[a * n + m] > 0.0,
                "sampled zero-weight negative ({a}, {m})"
            );
        }
    }
}

#[test]
fn distance_weighted_cutoff_flattens_close_negatives() {
    // Anchor (1, 0); negatives at angles 10° and 20° (distances 0.174 and 0.347, both below the
    // 0.5 cutoff) get equal weight; one at 120° (distance √3 > 1.4) gets none.
    let pts: Vec<f64> = [0.0f64, 5.0, 10.0, 20.0, 120.0]
        .iter()
        .flat_map(|a| [a.to_radians().cos(), a.to_radians().sin(), 0.0, 0.0])
        .collect();
    let labels = [0, 0, 1, 2, 3];
    let miner = DistanceWeightedConfig::default().init().unwrap();
    let w = miner.weights(&host(&pts, 5, 4), &labels);
    assert!(
        (w[2] - 0.5).abs() < 1e-12 && (w[3] - 0.5).abs() < 1e-12,
        "{:?}",
        &w[..5]
    );
    assert_eq!(w[4], 0.0);
    assert_eq!(w[1], 0.0);
}

#[test]
fn distance_weighted_sampling_is_reproducible_from_the_seed() {
    let (n, d) = (12, 4);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let values = random_values(n * d, 700);
    let b = host(&values, n, d);
    let a1 = DistanceWeightedConfig::default()
        .init()
        .unwrap()
        .mine(&b, &labels)
        .unwrap();
    let a2 = DistanceWeightedConfig::default()
        .init()
        .unwrap()
        .mine(&b, &labels)
        .unwrap();
    assert_eq!(a1, a2);
    // One triplet per (anchor, positive) with an eligible negative.
    assert!(a1.len() <= n * 3);
}

#[test]
fn multi_similarity_miner_conditions() {
    let (n, d) = (12, 3);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let eps = 0.1;
    let miner = MultiSimilarityMinerConfig { epsilon: eps }.init().unwrap();
    for seed in 0..4 {
        let values = random_values(n * d, 800 + seed);
        let c = cos_matrix(&values, n, d);
        let (pos, neg) = miner
            .mine(&host(&values, n, d), &labels)
            .unwrap()
            .to_pairs();
        for a in 0..n {
            let max_neg = (0..n)
                .filter(|&j| labels[j] != labels[a])
                .map(|j| c[a][j])
                .fold(f64::NEG_INFINITY, f64::max);
            let min_pos = (0..n)
                .filter(|&j| j != a && labels[j] == labels[a])
                .map(|j| c[a][j])
                .fold(f64::INFINITY, f64::min);
            for j in 0..n {
                if j != a && labels[j] == labels[a] {
                    assert_eq!(
                        pos.contains(&(a, j)),
                        c[a][j] - eps < max_neg,
                        "positive ({a}, {j})"
                    );
                } else if labels[j] != labels[a] {
                    assert_eq!(
                        neg.contains(&(a, j)),
                        c[a][j] + eps > min_pos,
                        "negative ({a}, {j})"
                    );
                }
            }
        }
    }
}

#[test]
fn tuple_conversions() {
    let pairs = IndexTuples::Pairs {
        positives: vec![(0, 1), (0, 1), (2, 3)],
        negatives: vec![(0, 2), (0, 3), (1, 2)],
    };
    assert_eq!(pairs.to_triplets(), vec![(0, 1, 2), (0, 1, 3)]);
    let triplets = IndexTuples::Triplets(vec![(0, 1, 2), (0, 1, 3), (2, 3, 0)]);
    assert_eq!(
        triplets.to_pairs(),
        (vec![(0, 1), (2, 3)], vec![(0, 2), (0, 3), (2, 0)])
    );
    let all = AllTuples
        .mine(&host(&[0.0; 8], 4, 2), &CIRCLE_LABELS)
        .unwrap();
    assert_eq!(all.to_triplets(), all_triplets(&CIRCLE_LABELS));
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Section {
    loss: LossConfig,
}

fn parse(toml_text: &str) -> Result<LossConfig, toml::de::Error> {
    toml::from_str::<Section>(toml_text).map(|s| s.loss)
}

#[test]
fn registry_parses_every_name_with_defaults() {
    let names = [
        "contextual",
        "contrastive",
        "triplet",
        "multi_similarity",
        "ntxent",
        "supcon",
        "smooth_ap",
        "fastap",
        "proxy_nca",
        "proxy_anchor",
        "normalized_softmax",
    ];
    for name in names {
        let cfg = parse(&format!("[loss]\nname = \"{name}\"\n")).unwrap();
        assert_eq!(cfg.name(), name);
        // Round trip through TOML keeps the config.
        let text = toml::to_string(&Section2 { loss: cfg.clone() }).unwrap();
        assert_eq!(parse(&text).unwrap(), cfg, "round trip of {name}: {text}");
    }
    assert_eq!(
        parse("[loss]\nname = \"multi_similarity\"\n").unwrap(),
        LossConfig::MultiSimilarity(MultiSimilarityConfig::default())
    );
    for (alias, name) in [
        ("multisimilarity", "multi_similarity"),
        ("ms", "multi_similarity"),
        ("smoothap", "smooth_ap"),
        ("fast_ap", "fastap"),
        ("proxynca", "proxy_nca"),
        ("normsoftmax", "normalized_softmax"),
    ] {
        assert_eq!(
            parse(&format!("[loss]\nname = \"{alias}\"\n"))
                .unwrap()
                .name(),
            name
        );
    }
}

#[derive(serde::Serialize)]
struct Section2 {
    loss: LossConfig,
}

#[test]
fn registry_defaults_are_the_documented_ones() {
    let LossConfig::Triplet(t) = parse("[loss]\nname = \"triplet\"").unwrap() else {
        panic!()
    };
    assert_eq!(t.margin, 0.05);
    assert_eq!(
        t.miner,
        MinerConfig::DistanceWeighted(DistanceWeightedConfig {
            cutoff: 0.5,
            nonzero_loss_cutoff: 1.4,
            seed: 0
        })
    );
    let LossConfig::MultiSimilarity(m) = parse("[loss]\nname = \"ms\"").unwrap() else {
        panic!()
    };
    assert_eq!(
        (m.alpha, m.beta, m.base, m.miner),
        (2.0, 50.0, 0.5, MinerConfig::All)
    );
    let LossConfig::NtXent(x) = parse("[loss]\nname = \"ntxent\"").unwrap() else {
        panic!()
    };
    assert_eq!(x.temperature, 0.07);
    let LossConfig::SupCon(x) = parse("[loss]\nname = \"supcon\"").unwrap() else {
        panic!()
    };
    assert_eq!(x.temperature, 0.1);
    let LossConfig::SmoothAp(x) = parse("[loss]\nname = \"smooth_ap\"").unwrap() else {
        panic!()
    };
    assert_eq!(x.temperature, 0.01);
    let LossConfig::FastAp(x) = parse("[loss]\nname = \"fastap\"").unwrap() else {
        panic!()
    };
    assert_eq!(x.num_bins, 10);
    let LossConfig::ProxyNca(x) = parse("[loss]\nname = \"proxy_nca\"").unwrap() else {
        panic!()
    };
    assert_eq!((x.softmax_scale, x.proxy_lr_multiplier), (10.0, 100.0));
    let LossConfig::ProxyAnchor(x) = parse("[loss]\nname = \"proxy_anchor\"").unwrap() else {
        panic!()
    };
    assert_eq!(
        (x.alpha, x.margin, x.proxy_lr_multiplier),
        (32.0, 0.1, 100.0)
    );
    let LossConfig::NormalizedSoftmax(x) = parse("[loss]\nname = \"normalized_softmax\"").unwrap()
    else {
        panic!()
    };
    assert_eq!((x.temperature, x.proxy_lr_multiplier), (0.05, 100.0));
}

#[test]
fn registry_miner_spellings_and_overrides() {
    let cfg = parse("[loss]\nname = \"triplet\"\nmargin = 0.2\nminer = \"batch_hard\"\n").unwrap();
    assert_eq!(
        cfg,
        LossConfig::Triplet(TripletConfig {
            margin: 0.2,
            miner: MinerConfig::BatchHard
        })
    );
    let cfg = parse("[loss]\nname = \"triplet\"\nminer = \"all\"\n").unwrap();
    assert_eq!(
        cfg,
        LossConfig::Triplet(TripletConfig {
            margin: 0.05,
            miner: MinerConfig::All
        })
    );
    let cfg = parse(
        "[loss]\nname = \"triplet\"\n[loss.miner]\nname = \"distance_weighted\"\ncutoff = 0.3\n",
    )
    .unwrap();
    assert_eq!(
        cfg,
        LossConfig::Triplet(TripletConfig {
            margin: 0.05,
            miner: MinerConfig::DistanceWeighted(DistanceWeightedConfig {
                cutoff: 0.3,
                ..Default::default()
            })
        })
    );
    let cfg = parse("[loss]\nname = \"multi_similarity\"\nminer = { name = \"multi_similarity\", epsilon = 0.2 }\n").unwrap();
    assert_eq!(
        cfg,
        LossConfig::MultiSimilarity(MultiSimilarityConfig {
            miner: MinerConfig::MultiSimilarity(MultiSimilarityMinerConfig { epsilon: 0.2 }),
            ..Default::default()
        })
    );
}

#[test]
fn registry_rejects_unknown_names_and_fields() {
    assert!(parse("[loss]\nname = \"no_such_loss\"").is_err());
    assert!(parse("[loss]\nname = \"triplet\"\nmargn = 0.1").is_err());
    assert!(parse("[loss]\nname = \"triplet\"\nminer = \"hardest\"").is_err());
    assert!(parse("[loss]\nname = \"proxy_anchor\"\nalpha = \"big\"").is_err());
}

#[test]
fn registry_init_builds_every_loss_and_reports_parameters() {
    let (n, c, d) = (8, 4, 3);
    let values = random_values(n * d, 900);
    let names = [
        "contextual",
        "contrastive",
        "triplet",
        "multi_similarity",
        "ntxent",
        "supcon",
        "smooth_ap",
        "fastap",
        "proxy_nca",
        "proxy_anchor",
        "normalized_softmax",
    ];
    for name in names {
        let cfg = parse(&format!("[loss]\nname = \"{name}\"\n")).unwrap();
        let loss = cfg.init(c, d, &device()).unwrap();
        assert_eq!(loss.name(), name);
        assert_eq!(loss.has_parameters(), cfg.has_parameters(), "{name}");
        let is_proxy = matches!(name, "proxy_nca" | "proxy_anchor" | "normalized_softmax");
        assert_eq!(loss.has_parameters(), is_proxy, "{name}");
        assert_eq!(cfg.proxy_lr_multiplier().is_some(), is_proxy, "{name}");
        assert_eq!(
            loss.num_params(),
            if is_proxy { c * d } else { 0 },
            "{name}"
        );
        // Labels in 0..c; the contextual loss needs k = 4 ≤ n.
        let labels: Vec<i64> = (0..n as i64).map(|i| i % c as i64).collect();
        let out = loss.forward(tensor(&values, n, d), &labels).unwrap();
        let v = scalar(out.total);
        assert!(v.is_finite() && v >= 0.0, "{name}: loss {v}");
    }
}

#[test]
fn proxy_initialisation_is_seeded_and_scaled() {
    let (c, d) = (50, 40);
    let a = LossConfig::ProxyAnchor(ProxyAnchorConfig::default())
        .init(c, d, &device())
        .unwrap();
    let b = LossConfig::ProxyAnchor(ProxyAnchorConfig::default())
        .init(c, d, &device())
        .unwrap();
    let pa = a.proxies().unwrap().try_into_vec_as::<f64>().unwrap();
    let pb = b.proxies().unwrap().try_into_vec_as::<f64>().unwrap();
    assert_eq!(pa, pb, "same seed, same proxies");
    // Kaiming-normal fan_out: variance 2 / C. 2000 samples: the sample variance is within 15 %.
    let var = pa.iter().map(|v| v * v).sum::<f64>() / pa.len() as f64;
    assert!(
        (var / (2.0 / c as f64) - 1.0).abs() < 0.15,
        "variance {var}"
    );
    let nca = LossConfig::ProxyNca(ProxyNcaConfig::default())
        .init(c, d, &device())
        .unwrap();
    let pn = nca.proxies().unwrap().try_into_vec_as::<f64>().unwrap();
    let var = pn.iter().map(|v| v * v).sum::<f64>() / pn.len() as f64;
    assert!((var - 1.0).abs() < 0.15, "ProxyNCA N(0,1) variance {var}");
}

// ---------------------------------------------------------------------------------------------
// Bad input and degenerate batches
// ---------------------------------------------------------------------------------------------

fn every_loss(c: usize, d: usize) -> Vec<AnyClassLoss> {
    [
        "triplet",
        "multi_similarity",
        "ntxent",
        "supcon",
        "smooth_ap",
        "fastap",
        "proxy_nca",
        "proxy_anchor",
        "normalized_softmax",
    ]
    .iter()
    .map(|name| {
        parse(&format!("[loss]\nname = \"{name}\"\n"))
            .unwrap()
            .init(c, d, &device())
            .unwrap()
    })
    .collect()
}

fn message(e: LossError) -> String {
    e.to_string()
}

#[test]
fn label_length_mismatch_and_nan_are_errors() {
    let (n, d) = (6, 3);
    let values = random_values(n * d, 1000);
    for loss in every_loss(4, d) {
        let err = loss
            .forward(tensor(&values, n, d), &[0, 1, 0, 1, 2])
            .unwrap_err();
        let msg = message(err);
        assert!(msg.contains("labels") && msg.contains(loss.name()), "{msg}");

        let mut bad = values.clone();
        bad[4 * d + 1] = f64::NAN;
        let msg = message(
            loss.forward(tensor(&bad, n, d), &[0, 1, 0, 1, 2, 2])
                .unwrap_err(),
        );
        assert!(msg.contains("row 4"), "{}: {msg}", loss.name());
    }
}

#[test]
fn proxy_losses_reject_bad_labels_and_widths() {
    let (n, c, d) = (4, 3, 2);
    let values = random_values(n * d, 1100);
    for cfg in proxy_configs() {
        let loss = cfg.init(c, d, &device()).unwrap();
        let msg = message(
            loss.forward(tensor(&values, n, d), &[0, 1, 3, 1])
                .unwrap_err(),
        );
        assert!(msg.contains("label 3") && msg.contains("row 2"), "{msg}");
        let msg = message(
            loss.forward(tensor(&values, n, d), &[0, -1, 2, 1])
                .unwrap_err(),
        );
        assert!(msg.contains("label -1"), "{msg}");
        let wide = random_values(n * 4, 1101);
        let msg = message(
            loss.forward(tensor(&wide, n, 4), &[0, 1, 2, 1])
                .unwrap_err(),
        );
        assert!(msg.contains("dimension 4"), "{msg}");
        assert!(cfg.init(0, d, &device()).is_err());
    }
}

#[test]
fn invalid_hyper_parameters_are_errors() {
    let dev = device();
    let bad = [
        "[loss]\nname = \"ntxent\"\ntemperature = 0.0",
        "[loss]\nname = \"supcon\"\ntemperature = -1.0",
        "[loss]\nname = \"smooth_ap\"\ntemperature = 0.0",
        "[loss]\nname = \"fastap\"\nnum_bins = 0",
        "[loss]\nname = \"multi_similarity\"\nalpha = 0.0",
        "[loss]\nname = \"proxy_nca\"\nsoftmax_scale = 0.0",
        "[loss]\nname = \"proxy_anchor\"\nalpha = -32.0",
        "[loss]\nname = \"normalized_softmax\"\ntemperature = 0.0",
        "[loss]\nname = \"triplet\"\nmargin = nan",
        "[loss]\nname = \"triplet\"\n[loss.miner]\nname = \"distance_weighted\"\ncutoff = 1.5\nnonzero_loss_cutoff = 1.4",
    ];
    for text in bad {
        let cfg = parse(text).unwrap();
        let msg = message(cfg.init(3, 2, &dev).unwrap_err());
        assert!(msg.contains('`'), "error names the parameter: {msg}");
    }
}

#[test]
fn batches_without_positive_pairs_give_zero_loss_and_zero_gradient() {
    // All labels distinct: no positive pair. Pair/ranking losses return 0 (documented); the
    // proxy losses still have a well-defined non-zero loss (every row has its proxy).
    let (n, d) = (5, 3);
    let values = random_values(n * d, 1200);
    let labels = [0, 1, 2, 3, 4];
    for loss in every_loss(5, d) {
        let x = tensor(&values, n, d).require_grad();
        let out = loss.forward(x.clone(), &labels).unwrap().total;
        let v = scalar(out.clone());
        let g = x
            .grad(&out.backward())
            .map(|g| g.try_into_vec_as::<f64>().unwrap());
        if loss.has_parameters() {
            assert!(v > 0.0, "{}: proxy loss {v}", loss.name());
        } else if loss.name() == "multi_similarity" {
            // Negative pairs still contribute (mean over rows of the negative term).
            assert!(v > 0.0);
        } else {
            assert_eq!(v, 0.0, "{}", loss.name());
            if let Some(g) = g {
                assert!(
                    g.iter().all(|&x| x == 0.0),
                    "{}: gradient {g:?}",
                    loss.name()
                );
            }
        }
    }
    // A single row: no pair at all; every pair loss is 0, with no NaN.
    for loss in every_loss(1, d).into_iter().filter(|l| !l.has_parameters()) {
        let v = scalar(
            loss.forward(tensor(&values[..d], 1, d), &[0])
                .unwrap()
                .total,
        );
        assert_eq!(v, 0.0, "{}", loss.name());
    }
}

#[test]
fn triplet_rejects_out_of_range_triplets() {
    let loss = TripletConfig::default().init().unwrap();
    let values = random_values(8, 1300);
    let msg = message(
        loss.forward_triplets(tensor(&values, 4, 2), &CIRCLE_LABELS, &[(0, 1, 9)])
            .unwrap_err(),
    );
    assert!(msg.contains("(0, 1, 9)"), "{msg}");
}

#[test]
fn triplet_with_distance_weighted_miner_trains_in_the_right_direction() {
    // One gradient step on the default (mined) triplet loss lowers the all-triplet loss.
    let (n, d) = (12, 4);
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let values = random_values(n * d, 1400);
    let mined = TripletConfig {
        margin: 0.2,
        ..Default::default()
    }
    .init()
    .unwrap();
    let all = TripletConfig {
        margin: 0.2,
        miner: MinerConfig::All,
    }
    .init()
    .unwrap();
    let before = loss_value(&all, &values, n, d, &labels);
    let g = autodiff_grad(&mined, &values, n, d, &labels);
    let stepped: Vec<f64> = values.iter().zip(&g).map(|(v, g)| v - 0.05 * g).collect();
    let after = loss_value(&all, &stepped, n, d, &labels);
    assert!(after < before, "all-triplet loss {before} → {after}");
}

// ---------------------------------------------------------------------------------------------
// Parity with pytorch-metric-learning 2.9.0 (torch 2.13, float64)
// ---------------------------------------------------------------------------------------------
//
// Golden values printed by PML on the batch below (labels LABELS_8, 5 proxies `PML_P`):
// `TripletMarginLoss(margin=m)(X, L)`, `MultiSimilarityLoss()(X, L)` (and with the pairs of
// `MultiSimilarityMiner(epsilon=0.1)`), `NTXentLoss(0.07)`, `SupConLoss(0.1)`,
// `FastAPLoss(10)`, `ProxyNCALoss(5, 3, softmax_scale=10)` with `proxies = P`,
// `NormalizedSoftmaxLoss(5, 3, temperature=0.05)` with `W = Pᵀ`,
// `ProxyAnchorLoss(5, 3, margin=0.1, alpha=32)` with `proxies = P`, and `BatchHardMiner()`.

const PML_X: [f64; 24] = [
    0.25, 0.794, 0.551, -0.55, -0.4, 0.747, -0.989, 0.642, 0.594, -0.064, -0.394, -0.443, -0.49,
    -0.11, 0.009, 0.107, 0.991, 0.585, 0.244, 0.978, -0.569, -0.68, 0.225, -0.912,
];
const PML_P: [f64; 15] = [
    -0.929, 0.03, -0.068, 0.834, 0.258, 0.028, -0.006, -0.505, -0.976, -0.615, 0.384, -0.599,
    -0.261, -0.993, 0.66,
];

#[test]
fn parity_with_pytorch_metric_learning() {
    let (n, d, c) = (8, 3, 5);
    let x = &PML_X[..];
    let all = |m: f64| {
        TripletConfig {
            margin: m,
            miner: MinerConfig::All,
        }
        .init()
        .unwrap()
    };
    let ms_mined = MultiSimilarityConfig {
        miner: MinerConfig::MultiSimilarity(MultiSimilarityMinerConfig { epsilon: 0.1 }),
        ..Default::default()
    }
    .init()
    .unwrap();
    let proxy = |cfg: LossConfig| with_proxies(cfg.init(c, d, &device()).unwrap(), &PML_P, c, d);
    let cases: Vec<(Box<dyn ClassLoss>, f64)> = vec![
        (Box::new(all(0.05)), 0.4572947889319263),
        (Box::new(all(0.5)), 0.7319920733400982),
        (
            Box::new(MultiSimilarityConfig::default().init().unwrap()),
            0.7156771668009758,
        ),
        (Box::new(ms_mined), 0.6861666935339401),
        (
            Box::new(NtXentConfig::default().init().unwrap()),
            6.128619977831733,
        ),
        (
            Box::new(SupConConfig::default().init().unwrap()),
            5.3545607799685415,
        ),
        (
            Box::new(FastApConfig::default().init().unwrap()),
            0.46496783165855066,
        ),
        (
            Box::new(proxy(LossConfig::ProxyNca(ProxyNcaConfig::default()))),
            11.801523280697797,
        ),
        (
            Box::new(proxy(LossConfig::NormalizedSoftmax(
                NormalizedSoftmaxConfig::default(),
            ))),
            11.801523280697799,
        ),
        (
            Box::new(proxy(LossConfig::ProxyAnchor(ProxyAnchorConfig::default()))),
            37.017969358629955,
        ),
    ];
    for (loss, want) in cases {
        let got = loss_value(loss.as_ref(), x, n, d, &LABELS_8);
        assert!(
            (got - want).abs() < 1e-9 * want.abs().max(1.0),
            "{}: {got} vs PML {want}",
            loss.name()
        );
    }
    let IndexTuples::Triplets(t) = BatchHardMiner.mine(&host(x, n, d), &LABELS_8).unwrap() else {
        panic!("batch-hard returns triplets");
    };
    assert_eq!(
        t,
        vec![
            (0, 2, 6),
            (1, 6, 2),
            (2, 0, 4),
            (4, 6, 2),
            (5, 2, 6),
            (6, 1, 5)
        ]
    );
}

#[test]
fn distance_weighted_draws_follow_the_weights() {
    // 3000 mining rounds on a fixed 3-D batch (d = 3 makes the density term vanish, so the
    // weights are spread over several negatives); anchor 0's empirical negative frequencies
    // match its weights within 0.03 (binomial standard error ≤ 0.0092 per entry).
    let values: Vec<f64> = [0.0f64, 15.0, 35.0, 50.0, 70.0, 80.0]
        .iter()
        .flat_map(|a| [a.to_radians().cos(), a.to_radians().sin(), 0.1])
        .collect();
    let labels = [0, 0, 1, 2, 3, 4];
    let miner = DistanceWeightedConfig::default().init().unwrap();
    let b = host(&values, 6, 3);
    let w = miner.weights(&b, &labels);
    let rounds = 3000;
    let mut counts = [0usize; 6];
    for _ in 0..rounds {
        let IndexTuples::Triplets(t) = miner.mine(&b, &labels).unwrap() else {
            panic!("distance-weighted returns triplets");
        };
        for (a, _, m) in t {
            if a == 0 {
                counts[m] += 1;
            }
        }
    }
    assert!(
        w[2..6].iter().filter(|&&x| x > 0.05).count() >= 3,
        "{:?}",
        &w[..6]
    );
    for j in 0..6 {
        let freq = counts[j] as f64 / rounds as f64;
        assert!(
            (freq - w[j]).abs() < 0.03,
            "negative {j}: frequency {freq} vs weight {}",
            w[j]
        );
    }
}

#[test]
fn multi_similarity_forward_pairs() {
    let (n, d) = (8, 3);
    let values = random_values(n * d, 1500);
    let loss = MultiSimilarityConfig::default().init().unwrap();
    let (pos, neg) = label_pairs(&LABELS_8);
    let all = loss_value(&loss, &values, n, d, &LABELS_8);
    let given = scalar(
        loss.forward_pairs(tensor(&values, n, d), &LABELS_8, &pos, &neg)
            .unwrap()
            .total,
    );
    assert!((all - given).abs() < 1e-12, "{all} vs {given}");
    let some_pos = [(0, 2), (4, 1)];
    let some_neg = [(0, 1), (3, 7), (3, 7)];
    let got = scalar(
        loss.forward_pairs(tensor(&values, n, d), &LABELS_8, &some_pos, &some_neg)
            .unwrap()
            .total,
    );
    let want = ref_multi_similarity(&values, n, d, &some_pos, &some_neg[..2], (2.0, 50.0, 0.5));
    assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    let msg = message(
        loss.forward_pairs(tensor(&values, n, d), &LABELS_8, &[(0, 8)], &[])
            .unwrap_err(),
    );
    assert!(msg.contains("(0, 8)"), "{msg}");
}
