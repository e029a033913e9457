//! Golden test against pytorch-metric-learning's `AccuracyCalculator` (PML 2.9.0, faiss
//! exact kNN): every fixture set under `tests/golden/<set>/` (`embeddings.npy`,
//! `labels.npy`, optionally `query_embeddings.npy` + `query_labels.npy`, and
//! `expected.json` written by `scripts/make_pml_golden.py`) must be reproduced to 1e-6.
//! An empty or missing fixture folder is a failure, not a silent pass.

use serde_json::Value;
use simlearn_eval::io::{read_class_labels, read_embeddings};
use simlearn_eval::{evaluate_classes, ClassReport, EvalConfig, MapAtKDivisor, Matrix, Similarity};
use std::path::{Path, PathBuf};

const TOL: f64 = 1e-6;

struct Set {
    name: String,
    expected: Value,
    gallery: Matrix,
    gallery_labels: Vec<i64>,
    /// `None`: leave-one-out on the gallery (PML `ref_includes_query`).
    queries: Option<(Matrix, Vec<i64>)>,
}

fn load(dir: &Path) -> Set {
    let text = std::fs::read_to_string(dir.join("expected.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let expected: Value = serde_json::from_str(&text).unwrap();
    let gallery = read_embeddings(&dir.join("embeddings.npy"), None).unwrap();
    let gallery_labels = read_class_labels(&dir.join("labels.npy")).unwrap();
    let qe = dir.join("query_embeddings.npy");
    let queries = qe.exists().then(|| {
        (
            read_embeddings(&qe, None).unwrap(),
            read_class_labels(&dir.join("query_labels.npy")).unwrap(),
        )
    });
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    if let Some(mode) = expected.get("mode").and_then(Value::as_str) {
        assert_eq!(
            mode == "loo",
            queries.is_none(),
            "{name}: mode {mode:?} disagrees with the files present"
        );
    }
    Set {
        name,
        expected,
        gallery,
        gallery_labels,
        queries,
    }
}

fn sets() -> Vec<Set> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("golden fixtures missing at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.json").is_file())
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no golden fixture set (a folder with expected.json) under {}",
        root.display()
    );
    dirs.iter().map(|d| load(d)).collect()
}

fn run(s: &Set, cfg: &EvalConfig) -> ClassReport {
    match &s.queries {
        Some((q, ql)) => evaluate_classes(q, ql, Some((&s.gallery, &s.gallery_labels)), cfg, None),
        None => evaluate_classes(&s.gallery, &s.gallery_labels, None, cfg, None),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", s.name))
}

/// Items every query can retrieve: the whole gallery, minus itself in leave-one-out.
fn full_depth(s: &Set) -> usize {
    s.gallery.rows() - usize::from(s.queries.is_none())
}

fn num(v: &Value, key: &str, set: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{set}: expected.json lacks {key}"))
}

fn check(set: &str, what: &str, got: Option<f64>, want: f64) {
    let got = got.unwrap_or_else(|| panic!("{set}: {what} not reported"));
    assert!(
        (got - want).abs() <= TOL,
        "{set}: {what} = {got}, PML {want} (diff {:.3e})",
        (got - want).abs()
    );
}

fn base() -> EvalConfig {
    EvalConfig {
        similarity: Similarity::Cosine,
        ..EvalConfig::default()
    }
}

#[test]
fn pml_primary_metrics_and_lone_count() {
    for s in sets() {
        let rep = run(&s, &base());
        let e = &s.expected;
        check(
            &s.name,
            "precision_at_1",
            rep.get("precision_at_1"),
            num(e, "precision_at_1", &s.name),
        );
        check(
            &s.name,
            "r_precision",
            rep.get("r_precision"),
            num(e, "r_precision", &s.name),
        );
        check(
            &s.name,
            "map_at_r",
            rep.get("map_at_r"),
            num(e, "mean_average_precision_at_r", &s.name),
        );
        if let Some(n) = e.get("n_lone").and_then(Value::as_u64) {
            assert_eq!(rep.n_lone as u64, n, "{}: n_lone", s.name);
            assert_eq!(rep.n_evaluated + rep.n_lone, rep.n_queries, "{}", s.name);
        }
        if let Some(n) = e.get("n_queries").and_then(Value::as_u64) {
            assert_eq!(rep.n_queries as u64, n, "{}: n_queries", s.name);
        }
    }
}

#[test]
fn pml_full_ranking_map_mrr_and_recall() {
    for s in sets() {
        let e = &s.expected;
        let full = full_depth(&s);
        let mut ks: Vec<usize> = e
            .get("recall_at_k")
            .and_then(Value::as_object)
            .map(|o| o.keys().map(|k| k.parse().unwrap()).collect())
            .unwrap_or_default();
        ks.push(full);
        let cfg = EvalConfig {
            ks,
            map_at_k_divisor: MapAtKDivisor::R,
            ..base()
        };
        let rep = run(&s, &cfg);
        assert_eq!(rep.neighbours, full, "{}", s.name);
        // PML k = None: the whole ranking; mean_average_precision divides by R.
        if let Some(v) = e.get("mean_average_precision").and_then(Value::as_f64) {
            check(
                &s.name,
                "map over full ranking",
                rep.get(&format!("map_at_{full}")),
                v,
            );
        }
        if let Some(v) = e.get("mean_reciprocal_rank").and_then(Value::as_f64) {
            check(&s.name, "mrr (PML, float32)", rep.get("mrr"), v);
        }
        if let Some(v) = e
            .get("mean_reciprocal_rank_float64")
            .and_then(Value::as_f64)
        {
            let got = rep.get("mrr").unwrap();
            assert!(
                (got - v).abs() < 1e-12,
                "{}: mrr {got} vs float64 {v}",
                s.name
            );
        }
        if let Some(o) = e.get("recall_at_k").and_then(Value::as_object) {
            for (k, v) in o {
                check(
                    &s.name,
                    &format!("recall_at_{k}"),
                    rep.get(&format!("recall_at_{k}")),
                    v.as_f64().unwrap(),
                );
            }
        }
    }
}

#[test]
fn pml_max_bin_count_depth() {
    for s in sets() {
        let Some(m) = s.expected.get("at_max_bin_count") else {
            continue;
        };
        let k = m["k"].as_u64().unwrap() as usize;
        let cfg = EvalConfig {
            ks: vec![k],
            map_at_k_divisor: MapAtKDivisor::R,
            ..base()
        };
        let rep = run(&s, &cfg);
        assert_eq!(rep.neighbours, k, "{}: depth = max R", s.name);
        check(
            &s.name,
            "map at max_bin_count",
            rep.get(&format!("map_at_{k}")),
            num(m, "mean_average_precision", &s.name),
        );
        check(
            &s.name,
            "mrr at max_bin_count",
            rep.get("mrr"),
            num(m, "mean_reciprocal_rank", &s.name),
        );
    }
}

#[test]
fn pml_avg_of_avgs() {
    for s in sets() {
        let Some(m) = s.expected.get("avg_of_avgs") else {
            continue;
        };
        let cfg = EvalConfig {
            per_class: true,
            ..base()
        };
        let rep = run(&s, &cfg);
        check(
            &s.name,
            "macro precision_at_1",
            rep.get("precision_at_1"),
            num(m, "precision_at_1", &s.name),
        );
        check(
            &s.name,
            "macro r_precision",
            rep.get("r_precision"),
            num(m, "r_precision", &s.name),
        );
        check(
            &s.name,
            "macro map_at_r",
            rep.get("map_at_r"),
            num(m, "mean_average_precision_at_r", &s.name),
        );
    }
}
