//! NMI / AMI against scikit-learn 1.9.1 (`normalized_mutual_info_score`,
//! `adjusted_mutual_info_score`, default arithmetic averaging). The expected values were
//! produced once with `/work/venv/bin/python` (sklearn 1.9.1) on the label vectors
//! written here; the larger cases use the closed-form label formulas in the test.
//! Plus seeded k-means++ behaviour and the `nmi` option of `evaluate_classes`.

use simlearn_eval::cluster::{ami, kmeans, nmi};
use simlearn_eval::{evaluate_classes, EvalConfig, Matrix};

fn pred(v: &[usize]) -> Vec<usize> {
    v.to_vec()
}

fn check(t: &[i64], p: &[usize], want_nmi: f64, want_ami: f64) {
    let n = nmi(t, p).unwrap();
    let a = ami(t, p).unwrap();
    assert!(
        (n - want_nmi).abs() < 1e-12,
        "nmi {n} vs sklearn {want_nmi}"
    );
    assert!(
        (a - want_ami).abs() < 1e-12,
        "ami {a} vs sklearn {want_ami}"
    );
}

#[test]
fn small_cases_match_sklearn() {
    check(
        &[0, 0, 0, 1, 1, 1],
        &pred(&[0, 0, 1, 1, 2, 2]),
        0.5158037429793889,
        0.2987924581708901,
    );
    check(
        &[5, 5, 7, 7, 9, 9, 9, 2],
        &pred(&[1, 1, 1, 0, 0, 0, 2, 2]),
        0.5577965290899927,
        0.20118648299711034,
    );
    // Negative AMI: worse than chance.
    check(
        &[0, 1, 0, 1, 0, 1],
        &pred(&[0, 0, 0, 1, 1, 1]),
        0.08170416594551037,
        -0.1111111111111109,
    );
    // Relabelled identical partition; one-cluster-per-item vs one class.
    check(&[0, 0, 1, 1], &pred(&[1, 1, 0, 0]), 1.0, 1.0);
    check(&[0, 0, 0, 0], &pred(&[0, 1, 2, 3]), 0.0, 0.0);
    // sklearn special case: both labelings a single cluster.
    check(&[3, 3, 3], &pred(&[0, 0, 0]), 1.0, 1.0);
}

#[test]
fn larger_cases_match_sklearn() {
    // t_i = (31 i + i²) mod 7, p_i = (t_i + [13 i mod 5 = 0]·(i mod 4)) mod 9, i < 300.
    let t: Vec<i64> = (0..300i64).map(|i| (i * 31 + i * i) % 7).collect();
    let p: Vec<usize> = (0..300usize)
        .map(|i| {
            let extra = if (i * 13) % 5 == 0 { i % 4 } else { 0 };
            (t[i] as usize + extra) % 9
        })
        .collect();
    check(&t, &p, 0.7376070010711225, 0.7296779056349438);
    // n = 3000 (Stirling branch of ln n!): t_i = (7 i² + 3 i) mod 50,
    // p_i = ⌊t_i / 2⌋ + [i mod 7 = 0]·(i mod 3).
    let t: Vec<i64> = (0..3000i64).map(|i| (i * i * 7 + 3 * i) % 50).collect();
    let p: Vec<usize> = (0..3000usize)
        .map(|i| t[i] as usize / 2 + if i % 7 == 0 { i % 3 } else { 0 })
        .collect();
    check(&t, &p, 0.8962066719714379, 0.8943238797596259);
}

#[test]
fn length_mismatch_is_an_error() {
    let e = nmi(&[0, 1], &pred(&[0])).unwrap_err().to_string();
    assert!(
        e.contains("2 true labels") && e.contains("1 cluster"),
        "{e}"
    );
}

/// Three tight, well-separated blobs of 20 points in 2-D.
fn blobs() -> (Matrix, Vec<i64>) {
    let centres = [(0.0f32, 0.0f32), (10.0, 0.0), (0.0, 10.0)];
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for (c, &(cx, cy)) in centres.iter().enumerate() {
        for j in 0..20 {
            let a = j as f32 * 0.7;
            rows.push(vec![cx + 0.3 * a.cos(), cy + 0.3 * a.sin()]);
            labels.push(100 + c as i64);
        }
    }
    (Matrix::from_rows(&rows).unwrap(), labels)
}

#[test]
fn kmeans_recovers_separated_blobs_and_is_seeded() {
    let (x, y) = blobs();
    for seed in 0..5 {
        let a = kmeans(&x, 3, 100, seed).unwrap();
        assert_eq!(nmi(&y, &a).unwrap(), 1.0, "seed {seed}");
        assert_eq!(
            a,
            kmeans(&x, 3, 100, seed).unwrap(),
            "same seed, same result"
        );
    }
    // k = n: every point its own cluster.
    let small = Matrix::from_rows(&[vec![0.0], vec![1.0], vec![5.0]]).unwrap();
    let mut a = kmeans(&small, 3, 10, 1).unwrap();
    a.sort();
    assert_eq!(a, vec![0, 1, 2]);
    assert!(kmeans(&small, 4, 10, 1).is_err());
    assert!(kmeans(&small, 0, 10, 1).is_err());
}

#[test]
fn evaluate_classes_reports_nmi_and_ami() {
    let (x, y) = blobs();
    let cfg = EvalConfig {
        nmi: true,
        ..EvalConfig::default()
    };
    let rep = evaluate_classes(&x, &y, None, &cfg, None).unwrap();
    assert_eq!(rep.get("nmi"), Some(1.0));
    assert!((rep.get("ami").unwrap() - 1.0).abs() < 1e-12);
    assert!(rep.ci("nmi").is_none());
    let off = evaluate_classes(&x, &y, None, &EvalConfig::default(), None).unwrap();
    assert!(off.get("nmi").is_none(), "NMI is opt-in");
}
