//! Continuous-label metrics against the worked example of
//! `shared/specs/log-ratio-loss.md` §6 ("Retrieval metrics"), plus leave-one-out,
//! clamping and validation.

use simlearn_eval::continuous::{dcg_at_k, ideal_distances, ndcg_at_k, relevance};
use simlearn_eval::{evaluate_continuous, ContinuousConfig, LabelDistance, Matrix, Similarity};

const F: [[f32; 2]; 5] = [
    [0.5, 0.25],
    [1.0, 0.0],
    [0.0, 2.0],
    [-1.5, -0.5],
    [2.0, 2.0],
];
const Y: [f32; 5] = [0.0, 1.0, 1.5, 3.0, 4.0];
const NDCG: [f64; 4] = [0.6000000000, 0.6313833434, 0.8164141999, 0.8742284883];
const MLD: [f64; 4] = [1.5, 2.0, 1.5, 1.5];

fn rows(idx: &[usize]) -> (Matrix, Matrix) {
    let e: Vec<Vec<f32>> = idx.iter().map(|&i| F[i].to_vec()).collect();
    let l: Vec<Vec<f32>> = idx.iter().map(|&i| vec![Y[i]]).collect();
    (
        Matrix::from_rows(&e).unwrap(),
        Matrix::from_rows(&l).unwrap(),
    )
}

fn cfg4() -> ContinuousConfig {
    ContinuousConfig {
        ndcg_ks: vec![1, 2, 3, 4],
        distance_ks: vec![1, 2, 3, 4],
        ..ContinuousConfig::default()
    }
}

#[test]
fn spec_worked_example_query_against_database() {
    // Query = row 2; database = rows 0, 1, 3, 4; ranking by squared Euclidean distance.
    let (q, ql) = rows(&[2]);
    let (g, gl) = rows(&[0, 1, 3, 4]);
    let rep = evaluate_continuous(&q, &ql, Some((&g, &gl)), &cfg4(), None).unwrap();
    assert_eq!(rep.similarity, Similarity::SqEuclidean, "default ranking");
    for k in 1..=4 {
        let n = rep.get(&format!("ndcg_at_{k}")).unwrap();
        assert!((n - NDCG[k - 1]).abs() < 1e-9, "nDCG@{k} = {n}");
        let d = rep.get(&format!("mean_label_distance_at_{k}")).unwrap();
        assert!((d - MLD[k - 1]).abs() < 1e-12, "MD@{k} = {d}");
    }
}

#[test]
fn leave_one_out_excludes_the_query_from_both_rankings() {
    let (x, l) = rows(&[0, 1, 2, 3, 4]);
    let rep = evaluate_continuous(&x, &l, None, &cfg4(), None).unwrap();
    assert!(rep.leave_one_out);
    // Query 2's gallery is exactly the §6 database.
    for k in 1..=4 {
        let v = rep.per_query(&format!("ndcg_at_{k}")).unwrap()[2];
        assert!((v - NDCG[k - 1]).abs() < 1e-9, "nDCG@{k} = {v}");
    }
    // Every nDCG lies in (0, 1]; the average is the mean of the per-query values.
    let per = rep.per_query("ndcg_at_4").unwrap();
    assert!(per.iter().all(|&v| v > 0.0 && v <= 1.0 + 1e-12));
    let mean = per.iter().sum::<f64>() / 5.0;
    assert!((rep.get("ndcg_at_4").unwrap() - mean).abs() < 1e-15);
}

#[test]
fn building_blocks_by_hand() {
    assert_eq!(relevance(0.0), 1.0);
    assert_eq!(relevance(1.0), 0.5);
    // 1/(1+1)/log2(2) + 1/(1+3)/log2(3)
    let v = dcg_at_k(&[1.0, 3.0, 9.0], 2);
    assert!((v - (0.5 + 0.25 / 3f64.log2())).abs() < 1e-15);
    assert_eq!(ndcg_at_k(&[0.0, 2.0], &[0.0, 2.0], 2), 1.0);
    // Ideal ranking: ties by index, self skipped.
    let l = Matrix::from_rows(&[vec![0.0], vec![2.0], vec![-1.0], vec![1.0], vec![0.0]]).unwrap();
    let ideal = ideal_distances(&[0.0], &l, Some(0), 3, &LabelDistance::Euclidean);
    assert_eq!(ideal, vec![0.0, 1.0, 1.0]);
}

#[test]
fn perfect_embedding_scores_one() {
    // Embedding = label: the embedding ranking is the ideal ranking.
    let x = Matrix::from_rows(&[vec![0.0], vec![0.3], vec![1.1], vec![2.0], vec![5.0]]).unwrap();
    let rep = evaluate_continuous(&x, &x, None, &cfg4(), None).unwrap();
    for k in 1..=4 {
        assert!((rep.get(&format!("ndcg_at_{k}")).unwrap() - 1.0).abs() < 1e-12);
    }
    // Mean distance to the single nearest neighbour: (0.3 + 0.3 + 0.8 + 0.9 + 3.0) / 5.
    let d1 = rep.get("mean_label_distance_at_1").unwrap();
    assert!((d1 - 5.3 / 5.0).abs() < 1e-6, "{d1}");
}

#[test]
fn defaults_clamp_and_bad_input() {
    let d = ContinuousConfig::default();
    assert_eq!(d.ndcg_ks, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(d.distance_ks, (1..=10).collect::<Vec<_>>());
    let (x, l) = rows(&[0, 1, 2, 3, 4]);
    let rep = evaluate_continuous(&x, &l, None, &d, None).unwrap();
    // 4 retrievable items: every nDCG cut-off collapses to 4, distances 5..10 too.
    assert_eq!(rep.ndcg_ks, vec![4]);
    assert_eq!(rep.distance_ks, vec![1, 2, 3, 4]);
    assert_eq!(rep.warnings.len(), 16, "{:?}", rep.warnings);

    let e = evaluate_continuous(&x, &rows(&[0, 1]).1, None, &d, None).unwrap_err();
    assert!(e.to_string().contains("2 labels for 5"), "{e}");
    let mut bad = l.clone();
    bad.data_mut()[3] = f32::INFINITY;
    let e = evaluate_continuous(&x, &bad, None, &d, None).unwrap_err();
    assert!(e.to_string().contains("query labels: row 3"), "{e}");
    let l2 = Matrix::new(5, 2, vec![0.0; 10]).unwrap();
    let e = evaluate_continuous(&x, &l, Some((&x, &l2)), &d, None).unwrap_err();
    assert!(e.to_string().contains("label dimension"), "{e}");
    let z = ContinuousConfig {
        ndcg_ks: vec![0],
        ..ContinuousConfig::default()
    };
    let e = evaluate_continuous(&x, &l, None, &z, None).unwrap_err();
    assert!(e.to_string().contains("ndcg_ks: k = 0"), "{e}");
}

#[test]
fn paired_continuous_comparison() {
    // A: embedding = label (ideal ranking); B: the §6 embeddings, same labels.
    let (fb, l) = rows(&[0, 1, 2, 3, 4]);
    let fa = Matrix::from_rows(&Y.iter().map(|&y| vec![y]).collect::<Vec<_>>()).unwrap();
    let cfg = cfg4();
    let cmp = simlearn_eval::compare_continuous(&fa, &fb, &l, None, &cfg).unwrap();
    let rb = evaluate_continuous(&fb, &l, None, &cfg, None).unwrap();
    let n = cmp.get("ndcg_at_4").unwrap();
    assert!((n.a - 1.0).abs() < 1e-12);
    assert!((n.b - rb.get("ndcg_at_4").unwrap()).abs() < 1e-15);
    assert!(n.diff > 0.0 && n.ci.0 <= n.diff && n.diff <= n.ci.1);
    let d = cmp.get("mean_label_distance_at_1").unwrap();
    assert!(
        d.diff < 0.0,
        "A's nearest neighbours are closer in label space"
    );
    assert_eq!(cmp.bootstrap.resamples, 1000, "default bootstrap");
}
