//! Class-label retrieval metrics on hand-computed examples: every metric, ties, lone
//! queries, K smaller than R, separate query/gallery sets, macro averaging, validation.

use simlearn_eval::metrics::{
    average_precision_at_k, average_precision_at_r, precision_at_1, r_precision, recall_at_k,
    reciprocal_rank,
};
use simlearn_eval::{evaluate_classes, EvalConfig, MapAtKDivisor, Matrix, Similarity};

fn col(v: &[f32]) -> Matrix {
    Matrix::new(v.len(), 1, v.to_vec()).unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

fn cfg(ks: &[usize]) -> EvalConfig {
    EvalConfig {
        ks: ks.to_vec(),
        similarity: Similarity::SqEuclidean,
        ..EvalConfig::default()
    }
}

/// 1-D positions and labels (A = 10, B = 20, C = 30). Leave-one-out rankings by
/// distance, ties by lower index:
/// q0 → 1 2 3 4 6 5, q1 → 0 2 3 4 6 5 (0/2 tie), q2 → 1 0 3 4 6 5 (0/3 tie),
/// q3 → 2 1 4 6 0 5 (1/4 tie), q4 → 6 3 2 1 0 5, q6 → 4 3 2 1 0 5; q5 is lone.
fn toy() -> (Matrix, Vec<i64>) {
    (
        col(&[0.0, 1.0, 2.0, 4.0, 7.0, 20.0, 7.5]),
        vec![10, 20, 10, 20, 10, 30, 10],
    )
}

#[test]
fn leave_one_out_hand_computed_all_metrics() {
    let (x, y) = toy();
    let rep = evaluate_classes(&x, &y, None, &cfg(&[1, 2, 4]), None).unwrap();
    assert_eq!(
        (rep.n_queries, rep.n_evaluated, rep.n_lone),
        (7, 6, 1),
        "one lone query (class 30) excluded"
    );
    assert_eq!(rep.neighbours, 4, "max(max ks = 4, max R = 3)");
    let want = [
        ("precision_at_1", 1.0 / 3.0),
        ("recall_at_1", 1.0 / 3.0),
        ("recall_at_2", 5.0 / 6.0),
        ("recall_at_4", 1.0),
        ("r_precision", 1.0 / 3.0),
        ("map_at_r", 13.0 / 54.0),
        ("map_at_1", 1.0 / 3.0),
        ("map_at_2", 1.0 / 3.0),
        ("map_at_4", 47.0 / 108.0),
        ("mrr", 23.0 / 36.0),
    ];
    for (name, v) in want {
        close(rep.get(name).unwrap_or_else(|| panic!("{name} missing")), v);
    }
    let names: Vec<&str> = rep.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "precision_at_1",
            "recall_at_1",
            "recall_at_2",
            "recall_at_4",
            "r_precision",
            "map_at_r",
            "map_at_1",
            "map_at_2",
            "map_at_4",
            "mrr"
        ]
    );
    // Per-query values are kept and aligned with the evaluated query rows.
    assert_eq!(rep.evaluated_queries(), &[0, 1, 2, 3, 4, 6]);
    let ap = rep.per_query("map_at_r").unwrap();
    let want_ap = [1.0 / 6.0, 0.0, 1.0 / 6.0, 0.0, 5.0 / 9.0, 5.0 / 9.0];
    for (a, b) in ap.iter().zip(want_ap) {
        close(*a, b);
    }
    let rr = rep.per_query("mrr").unwrap();
    for (a, b) in rr.iter().zip([0.5, 1.0 / 3.0, 0.5, 0.5, 1.0, 1.0]) {
        close(*a, b);
    }
    assert!(rep.per_query("nmi").is_none());
}

#[test]
fn ties_are_broken_by_lower_gallery_index() {
    // q2 (position 2, class A) has item 0 (A) and item 3 (B) both at distance 2; item 0
    // comes first: ranking 1 0 3 4 → rel 0 1 0 1 (item 3 first would give 0 0 1 1).
    let (x, y) = toy();
    let rep = evaluate_classes(&x, &y, None, &cfg(&[2]), None).unwrap();
    let i = rep
        .evaluated_queries()
        .iter()
        .position(|&q| q == 2)
        .unwrap();
    close(rep.per_query("recall_at_2").unwrap()[i], 1.0);
    close(rep.per_query("mrr").unwrap()[i], 0.5);
    close(rep.per_query("map_at_r").unwrap()[i], 0.5 / 3.0);
    // q3 (position 4, class B): item 1 (B) and item 4 (A) tie at distance 3 → item 1 first.
    let i = rep
        .evaluated_queries()
        .iter()
        .position(|&q| q == 3)
        .unwrap();
    close(rep.per_query("mrr").unwrap()[i], 0.5);
    close(rep.per_query("map_at_2").unwrap()[i], 0.5);
}

#[test]
fn lone_queries_count_as_zero_when_not_excluded() {
    let (x, y) = toy();
    let c = EvalConfig {
        exclude_lone: false,
        ..cfg(&[1, 2, 4])
    };
    let rep = evaluate_classes(&x, &y, None, &c, None).unwrap();
    assert_eq!((rep.n_evaluated, rep.n_lone), (7, 1));
    close(rep.get("precision_at_1").unwrap(), 2.0 / 7.0);
    close(rep.get("map_at_r").unwrap(), 13.0 / 54.0 * 6.0 / 7.0);
    close(rep.get("mrr").unwrap(), 23.0 / 36.0 * 6.0 / 7.0);
    close(rep.get("recall_at_4").unwrap(), 6.0 / 7.0);
}

#[test]
fn macro_averaging_and_per_class_rows() {
    let (x, y) = toy();
    let c = EvalConfig {
        per_class: true,
        ..cfg(&[1, 2, 4])
    };
    let rep = evaluate_classes(&x, &y, None, &c, None).unwrap();
    // Class A: q0 q2 q4 q6; class B: q1 q3 (the lone class 30 has no evaluated query).
    close(rep.get("precision_at_1").unwrap(), (0.5 + 0.0) / 2.0);
    close(rep.get("map_at_r").unwrap(), (13.0 / 36.0 + 0.0) / 2.0);
    close(rep.get("mrr").unwrap(), (0.75 + 5.0 / 12.0) / 2.0);
    let rows = rep.per_class.as_ref().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].label, rows[0].n_queries), (10, 4));
    assert_eq!((rows[1].label, rows[1].n_queries), (20, 2));
    let mrr_b = rows[1].metrics.iter().find(|m| m.name == "mrr").unwrap();
    close(mrr_b.value, 5.0 / 12.0);
}

#[test]
fn map_at_k_divisors() {
    let (x, y) = toy();
    // Per query (q0 q1 q2 q3 q4 q6), Σ P(i)·rel_i over the top 2: .5 0 .5 .5 1 1;
    // hits in top 2: 1 0 1 1 1 1; R: 3 1 3 1 3 3.
    let r = EvalConfig {
        map_at_k_divisor: MapAtKDivisor::R,
        ..cfg(&[2])
    };
    let rep = evaluate_classes(&x, &y, None, &r, None).unwrap();
    close(
        rep.get("map_at_2").unwrap(),
        (0.5 / 3.0 + 0.0 + 0.5 / 3.0 + 0.5 + 1.0 / 3.0 + 1.0 / 3.0) / 6.0,
    );
    let hits = EvalConfig {
        map_at_k_divisor: MapAtKDivisor::Hits,
        ..cfg(&[2])
    };
    let rep = evaluate_classes(&x, &y, None, &hits, None).unwrap();
    close(
        rep.get("map_at_2").unwrap(),
        (0.5 + 0.0 + 0.5 + 0.5 + 1.0 + 1.0) / 6.0,
    );
}

#[test]
fn separate_query_and_gallery_sets() {
    // Gallery: 0.0 A, 1.0 B, 3.0 A, 10.0 C. Queries: 0.4 A, 0.9 B, 2.0 A (g1/g2 tie at
    // distance 1 → g1 first), 5.0 D (lone: no D in the gallery), 9.0 C (R = 1: the
    // query is not in the gallery, so nothing is subtracted).
    let g = col(&[0.0, 1.0, 3.0, 10.0]);
    let gl = [1i64, 2, 1, 3];
    let q = col(&[0.4, 0.9, 2.0, 5.0, 9.0]);
    let ql = [1i64, 2, 1, 4, 3];
    let rep = evaluate_classes(&q, &ql, Some((&g, &gl)), &cfg(&[1, 2]), None).unwrap();
    assert!(!rep.leave_one_out);
    assert_eq!((rep.n_evaluated, rep.n_lone, rep.n_gallery), (4, 1, 4));
    close(rep.get("precision_at_1").unwrap(), 0.75);
    close(rep.get("r_precision").unwrap(), 0.75);
    close(rep.get("map_at_r").unwrap(), 11.0 / 16.0);
    close(rep.get("mrr").unwrap(), 7.0 / 8.0);
    close(rep.get("recall_at_2").unwrap(), 1.0);
    assert_eq!(rep.evaluated_queries(), &[0, 1, 2, 4]);
}

#[test]
fn k_smaller_than_r_per_metric() {
    // Ranked relevance 1 1 0 1 for a class of R = 5 other items, only 4 retrieved.
    let rel = [true, true, false, true];
    // Σ P(i)·rel_i over the top 2 = 1 + 1 = 2.
    close(
        average_precision_at_k(&rel, 2, 5, MapAtKDivisor::MinKR),
        1.0,
    );
    close(average_precision_at_k(&rel, 2, 5, MapAtKDivisor::R), 0.4);
    close(average_precision_at_k(&rel, 2, 5, MapAtKDivisor::Hits), 1.0);
    // Missing positions 5.. count as misses: R-precision 3/5, AP@R (1 + 1 + 3/4)/5.
    close(r_precision(&rel, 5), 0.6);
    close(average_precision_at_r(&rel, 5), 2.75 / 5.0);
    close(recall_at_k(&rel, 2), 1.0);
    close(precision_at_1(&rel), 1.0);
    close(reciprocal_rank(&[false, false, true]), 1.0 / 3.0);
    close(recall_at_k(&[false, false, true], 2), 0.0);
    // Lone query (R = 0): every R-based value is 0.
    close(r_precision(&rel, 0), 0.0);
    close(average_precision_at_r(&rel, 0), 0.0);
    close(
        average_precision_at_k(&rel, 2, 0, MapAtKDivisor::MinKR),
        0.0,
    );
}

#[test]
fn k_above_gallery_size_is_clamped_with_a_warning() {
    let (x, y) = toy();
    let rep = evaluate_classes(&x, &y, None, &cfg(&[1, 6, 50]), None).unwrap();
    assert_eq!(
        rep.ks,
        vec![1, 6],
        "50 clamps to the 6 other items and merges with 6"
    );
    assert_eq!(rep.warnings.len(), 1);
    assert!(rep.warnings[0].contains("k = 50") && rep.warnings[0].contains("clamped to 6"));
    close(rep.get("recall_at_6").unwrap(), 1.0);
    assert!(rep.to_table().contains("warning: ks: k = 50"));
}

fn err(r: Result<simlearn_eval::ClassReport, simlearn_eval::EvalError>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_input_is_a_one_line_error() {
    let (x, y) = toy();
    let c = cfg(&[1]);
    let mut msgs = Vec::new();
    let e = err(evaluate_classes(&x, &y[..5], None, &c, None));
    assert!(e.contains('5') && e.contains('7'), "{e}");
    msgs.push(e);
    let e = err(evaluate_classes(&x, &[4; 7], None, &c, None));
    assert!(e.contains("single class 4"), "{e}");
    msgs.push(e);
    let mut bad = x.clone();
    bad.data_mut()[3] = f32::NAN;
    let e = err(evaluate_classes(&bad, &y, None, &c, None));
    assert!(e.contains("query embeddings: row 3"), "{e}");
    msgs.push(e);
    let e = err(evaluate_classes(&x, &y, Some((&bad, &y)), &c, None));
    assert!(e.contains("gallery embeddings: row 3"), "{e}");
    msgs.push(e);
    let g2 = Matrix::new(2, 2, vec![0.0; 4]).unwrap();
    let e = err(evaluate_classes(&x, &y, Some((&g2, &[1, 2])), &c, None));
    assert!(
        e.contains("dimension 1") && e.contains("dimension 2"),
        "{e}"
    );
    msgs.push(e);
    let e = err(evaluate_classes(&x, &y, Some((&x, &y[..3])), &c, None));
    assert!(
        e.contains("gallery labels") && e.contains('3') && e.contains('7'),
        "{e}"
    );
    msgs.push(e);
    let e = err(evaluate_classes(&x, &y, None, &cfg(&[0]), None));
    assert!(e.contains("k = 0"), "{e}");
    msgs.push(e);
    let all_lone = [1i64, 2, 3, 4, 5, 6, 7];
    let e = err(evaluate_classes(&x, &all_lone, None, &c, None));
    assert!(e.contains("lone"), "{e}");
    msgs.push(e);
    let e = err(evaluate_classes(
        &Matrix::new(0, 1, vec![]).unwrap(),
        &[],
        None,
        &c,
        None,
    ));
    assert!(e.contains("no rows"), "{e}");
    msgs.push(e);
    assert!(msgs.iter().all(|m| !m.contains('\n')));
}

#[test]
fn report_serialises_and_renders() {
    let (x, y) = toy();
    let rep = evaluate_classes(&x, &y, None, &cfg(&[1, 2]), None).unwrap();
    let j = serde_json::to_value(&rep).unwrap();
    assert_eq!(j["n_lone"], 1);
    assert_eq!(j["metrics"][0]["name"], "precision_at_1");
    assert!(
        j.get("per_query").is_none(),
        "per-query values are not serialised"
    );
    let t = rep.to_table();
    assert!(
        t.contains("| map_at_r") && t.contains("1 lone excluded"),
        "{t}"
    );
}
