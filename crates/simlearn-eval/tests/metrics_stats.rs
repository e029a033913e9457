//! Bootstrap intervals and paired comparisons: hand-checkable quantiles, invariants of
//! the percentile interval, determinism, and the paired comparison entry point.

use simlearn_eval::stats::{average, bootstrap_ci, paired_bootstrap, quantile_sorted, Grouping};
use simlearn_eval::{
    compare_classes, evaluate_classes, BootstrapConfig, EvalConfig, Matrix, Similarity,
};

#[test]
fn quantiles_interpolate_like_numpy() {
    let s = [1.0, 2.0, 3.0, 4.0];
    // numpy.percentile([1,2,3,4], [0, 25, 50, 97.5, 100]) = 1, 1.75, 2.5, 3.925, 4
    assert_eq!(quantile_sorted(&s, 0.0), 1.0);
    assert!((quantile_sorted(&s, 0.25) - 1.75).abs() < 1e-15);
    assert!((quantile_sorted(&s, 0.5) - 2.5).abs() < 1e-15);
    assert!((quantile_sorted(&s, 0.975) - 3.925).abs() < 1e-12);
    assert_eq!(quantile_sorted(&s, 1.0), 4.0);
    assert!(quantile_sorted(&[], 0.5).is_nan());
}

#[test]
fn macro_average_by_hand() {
    let v = [1.0, 0.0, 0.0, 0.5];
    let g = Grouping {
        ids: &[0, 0, 0, 1],
        n_groups: 2,
    };
    assert_eq!(average(&v, None), 0.375);
    assert!((average(&v, Some(g)) - (1.0 / 3.0 + 0.5) / 2.0).abs() < 1e-15);
}

fn values(n: usize) -> Vec<f64> {
    (0..n).map(|i| ((i * 37) % 11) as f64 / 10.0).collect()
}

#[test]
fn interval_properties() {
    let v = values(200);
    let cfg = BootstrapConfig::default();
    let ci = bootstrap_ci(&[&v], None, &cfg).unwrap()[0];
    let m = average(&v, None);
    assert!(ci.0 < m && m < ci.1, "{ci:?} around {m}");
    // Standard error of the mean ≈ sd/√n; a 95% interval is about ±1.96 of it.
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 199.0).sqrt();
    let half = (ci.1 - ci.0) / 2.0;
    let se = sd / 200f64.sqrt();
    assert!(
        half > 1.5 * se && half < 2.5 * se,
        "half-width {half}, se {se}"
    );
    // Same seed → same interval; other seed → (almost surely) another one.
    assert_eq!(ci, bootstrap_ci(&[&v], None, &cfg).unwrap()[0]);
    let other = BootstrapConfig { seed: 9, ..cfg };
    assert_ne!(ci, bootstrap_ci(&[&v], None, &other).unwrap()[0]);
    // A narrower level gives a nested interval.
    let narrow = BootstrapConfig { level: 0.5, ..cfg };
    let ci50 = bootstrap_ci(&[&v], None, &narrow).unwrap()[0];
    assert!(ci.0 <= ci50.0 && ci50.1 <= ci.1);
    // Constant values: degenerate interval.
    let c = vec![0.25; 50];
    assert_eq!(bootstrap_ci(&[&c], None, &cfg).unwrap()[0], (0.25, 0.25));
}

#[test]
fn bad_bootstrap_settings_are_errors() {
    let v = values(5);
    for bad in [
        BootstrapConfig {
            resamples: 0,
            ..BootstrapConfig::default()
        },
        BootstrapConfig {
            level: 1.0,
            ..BootstrapConfig::default()
        },
    ] {
        let e = bootstrap_ci(&[&v], None, &bad).unwrap_err().to_string();
        assert!(e.contains("bootstrap."), "{e}");
    }
    let e = bootstrap_ci(&[&v, &v[..3]], None, &BootstrapConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("series 1 has 3"), "{e}");
}

#[test]
fn paired_differences() {
    let a = values(100);
    let cfg = BootstrapConfig::default();
    let names = vec!["m".to_string()];
    // Constant per-query difference 0.1: point estimate and interval are exactly it.
    let b: Vec<f64> = a.iter().map(|x| x - 0.1).collect();
    let d = &paired_bootstrap(&names, &[&a], &[&b], None, &cfg).unwrap()[0];
    assert!((d.diff - 0.1).abs() < 1e-12);
    assert!((d.ci.0 - 0.1).abs() < 1e-12 && (d.ci.1 - 0.1).abs() < 1e-12);
    assert_eq!(d.sign_flip_fraction, 0.0);
    // Identical sets: no difference, every resample "flips".
    let d = &paired_bootstrap(&names, &[&a], &[&a], None, &cfg).unwrap()[0];
    assert_eq!((d.diff, d.ci, d.sign_flip_fraction), (0.0, (0.0, 0.0), 1.0));
    // Pure noise difference (±0.5 alternating): the interval covers 0 and the sign flips
    // often.
    let c: Vec<f64> = a
        .iter()
        .enumerate()
        .map(|(i, x)| if i % 2 == 0 { x + 0.5 } else { x - 0.5 })
        .collect();
    let d = &paired_bootstrap(&names, &[&a], &[&c], None, &cfg).unwrap()[0];
    assert!(d.ci.0 < 0.0 && 0.0 < d.ci.1, "{:?}", d.ci);
    assert!(d.sign_flip_fraction > 0.0, "{}", d.sign_flip_fraction);
}

#[test]
fn evaluate_with_bootstrap_and_compare_classes() {
    // Two classes on a line (1-D), A: the true layout; B: the same with the class
    // offsets shrunk so that classes interleave.
    let n = 40;
    let labels: Vec<i64> = (0..n).map(|i| (i % 2) as i64).collect();
    let good: Vec<f32> = (0..n)
        .map(|i| (i % 2) as f32 * 10.0 + i as f32 * 0.01)
        .collect();
    let bad: Vec<f32> = (0..n)
        .map(|i| (i % 2) as f32 * 0.005 + i as f32 * 0.01)
        .collect();
    let a = Matrix::new(n, 1, good).unwrap();
    let b = Matrix::new(n, 1, bad).unwrap();
    let cfg = EvalConfig {
        similarity: Similarity::SqEuclidean,
        bootstrap: Some(BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        }),
        ..EvalConfig::default()
    };
    let rep = evaluate_classes(&a, &labels, None, &cfg, None).unwrap();
    assert_eq!(rep.get("map_at_r"), Some(1.0));
    assert_eq!(rep.ci("map_at_r"), Some((1.0, 1.0)));
    let rb = evaluate_classes(&b, &labels, None, &cfg, None).unwrap();
    let (lo, hi) = rb.ci("map_at_r").unwrap();
    let v = rb.get("map_at_r").unwrap();
    assert!(lo <= v && v <= hi && lo < hi, "{lo} {v} {hi}");

    let cmp = compare_classes(&a, &b, &labels, None, &cfg).unwrap();
    let m = cmp.get("map_at_r").unwrap();
    assert_eq!(m.a, 1.0);
    assert!((m.b - v).abs() < 1e-15);
    assert!((m.diff - (1.0 - v)).abs() < 1e-15);
    assert!(m.ci.0 > 0.0 && m.sign_flip_fraction == 0.0, "{m:?}");
    assert_eq!(cmp.bootstrap.resamples, 200);
    assert!(cmp.to_table().contains("| map_at_r"));
    let e = compare_classes(
        &a,
        &Matrix::new(3, 1, vec![0.0; 3]).unwrap(),
        &labels,
        None,
        &cfg,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("40") && e.contains('3'), "{e}");
}

#[test]
fn macro_bootstrap_resamples_queries_and_averages_per_class() {
    // Class 0 (four points near 0) is retrieved perfectly; classes 1 and 2 interleave
    // (10.0/10.05 and 20.0/20.05 pair across classes), so their P@1 is 0: micro 4/8,
    // macro (1 + 0 + 0)/3.
    let pts: Vec<f32> = vec![0.0, 0.1, 0.2, 0.3, 10.0, 20.0, 10.05, 20.05];
    let labels = [0i64, 0, 0, 0, 1, 2, 2, 1];
    let x = Matrix::new(8, 1, pts).unwrap();
    let cfg = EvalConfig {
        similarity: Similarity::SqEuclidean,
        per_class: true,
        bootstrap: Some(BootstrapConfig::default()),
        ..EvalConfig::default()
    };
    let rep = evaluate_classes(&x, &labels, None, &cfg, None).unwrap();
    assert_eq!(rep.get("precision_at_1"), Some(1.0 / 3.0));
    let (lo, hi) = rep.ci("precision_at_1").unwrap();
    // A resample that misses a class averages over the classes it holds.
    assert!(lo >= 0.0 && hi <= 1.0 && lo <= 1.0 / 3.0 && 1.0 / 3.0 <= hi);
    let micro = evaluate_classes(
        &x,
        &labels,
        None,
        &EvalConfig {
            per_class: false,
            ..cfg.clone()
        },
        None,
    )
    .unwrap();
    assert_eq!(micro.get("precision_at_1"), Some(0.5));
}
