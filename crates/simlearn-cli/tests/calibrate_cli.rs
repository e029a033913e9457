//! End-to-end tests of `simlearn calibrate`: an index of generated clustered embeddings,
//! held-out labelled queries (some of classes the index does not hold), thresholds checked
//! against a brute-force computation, and `simlearn search` marking matches under the stored
//! threshold.

mod common;

use common::{fails_with, json_ok, ok, simlearn};
use serde_json::Value;
use simlearn_eval::io::{write_npy_f32, write_npy_i64};
use simlearn_eval::knn::exact_score;
use simlearn_eval::{Matrix, Similarity};
use std::path::{Path, PathBuf};

const D: usize = 8;

fn dir(name: &str) -> PathBuf {
    common::dir("calibrate-cli", name)
}

/// SplitMix64 in [0, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// `per_class` noisy items of each class in `classes` around fixed class centres.
fn items(classes: &[i64], per_class: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut centre_rng = Rng(1234);
    let centres: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..D).map(|_| centre_rng.next() * 2.0 - 1.0).collect())
        .collect();
    let mut r = Rng(seed);
    let (mut v, mut l) = (Vec::new(), Vec::new());
    for &c in classes {
        for _ in 0..per_class {
            for &x in &centres[c as usize] {
                v.push(x + noise * (r.next() * 2.0 - 1.0));
            }
            l.push(c);
        }
    }
    (v, l)
}

fn npy(d: &Path, name: &str, cols: usize, data: &[f32]) -> PathBuf {
    let p = d.join(name);
    let m = Matrix::new(data.len() / cols, cols, data.to_vec()).unwrap();
    write_npy_f32(&p, &m).unwrap();
    p
}

fn ints(d: &Path, name: &str, v: &[i64]) -> PathBuf {
    let p = d.join(name);
    write_npy_i64(&p, v).unwrap();
    p
}

/// Top-1 (score as the index reports it: the exact cosine rounded to f32; ties by the lower
/// row) and whether its label is the query's.
fn brute_top1(g: &[f32], gl: &[i64], q: &[f32], ql: &[i64]) -> Vec<(f64, bool)> {
    (0..ql.len())
        .map(|i| {
            let qi = &q[i * D..(i + 1) * D];
            let mut best = (f64::NEG_INFINITY, 0usize);
            for j in 0..gl.len() {
                let s = exact_score(Similarity::Cosine, qi, &g[j * D..(j + 1) * D]);
                if s > best.0 {
                    best = (s, j);
                }
            }
            (f64::from(best.0 as f32), gl[best.1] == ql[i])
        })
        .collect()
}

/// (threshold, accepted, correct, precision, recall, f1) at every distinct top-1 score,
/// descending, counted directly.
fn brute_curve(top: &[(f64, bool)]) -> Vec<(f64, usize, usize, f64, f64, f64)> {
    let mut ts: Vec<f64> = top.iter().map(|t| t.0).collect();
    ts.sort_by(|a, b| b.total_cmp(a));
    ts.dedup();
    ts.into_iter()
        .map(|t| {
            let acc = top.iter().filter(|x| x.0 >= t).count();
            let ok = top.iter().filter(|x| x.0 >= t && x.1).count();
            let p = ok as f64 / acc as f64;
            let r = ok as f64 / top.len() as f64;
            let f1 = if ok == 0 { 0.0 } else { 2.0 * p * r / (p + r) };
            (t, acc, ok, p, r, f1)
        })
        .collect()
}

/// A stored threshold `got` decides every f32 score as the f32 top-1 score `want` does: it
/// lies in `(previous f32, want]`.
fn same_decisions(got: &Value, want: f64) {
    let g = got.as_f64().unwrap();
    let w32 = want as f32;
    assert!(
        g <= want && g > f64::from(w32.next_down()),
        "{g} does not stand for {want}"
    );
}

/// A hit's score as the f32 the index computed.
fn score32(h: &Value) -> f32 {
    h["score"].as_f64().unwrap() as f32
}

fn manifest_threshold(idx: &Path) -> Value {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(idx.join("manifest.json")).unwrap()).unwrap();
    m["threshold"].clone()
}

fn build_index(d: &Path, e: &Path, l: Option<&Path>, name: &str) -> PathBuf {
    let out = d.join(name);
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
        vec![&"index", &"build", &"--embeddings", &e, &"--out", &out];
    if let Some(l) = &l {
        args.push(&"--labels");
        args.push(l);
    }
    ok(&simlearn(&args));
    out
}

#[test]
fn calibrated_threshold_equals_brute_force_and_search_marks_matches() {
    let d = dir("main");
    // Gallery: classes 0..6, 10 items each. Held-out queries: 5 of each known class and 5 of
    // each of two classes the index does not hold (their top-1 can never be right).
    let (gv, gl) = items(&[0, 1, 2, 3, 4, 5], 10, 0.8, 1);
    let (qv, ql) = items(&[0, 1, 2, 3, 4, 5, 6, 7], 5, 0.8, 2);
    let e = npy(&d, "g.npy", D, &gv);
    let l = ints(&d, "gl.npy", &gl);
    let q = npy(&d, "q.npy", D, &qv);
    let qlp = ints(&d, "ql.npy", &ql);
    let idx = build_index(&d, &e, Some(&l), "idx");
    // A file of the user's inside the index folder survives the rewrite.
    std::fs::write(idx.join("NOTES.txt"), "mine").unwrap();

    let top = brute_top1(&gv, &gl, &qv, &ql);
    let curve = brute_curve(&top);
    let n_correct = top.iter().filter(|t| t.1).count();
    assert!(
        n_correct > 5 && n_correct < 38,
        "a non-trivial set: {n_correct}"
    );
    // F1-optimal (ties: the larger threshold, i.e. the first seen descending).
    let mut best = curve[0];
    for c in &curve {
        if c.5 > best.5 {
            best = *c;
        }
    }
    let smallest_at = |p: f64| curve.iter().rev().find(|c| c.3 >= p).copied();

    let cal_out = d.join("cal.json");
    let v = json_ok(&simlearn(&[
        &"calibrate",
        &"--index",
        &idx,
        &"--embeddings",
        &q,
        &"--labels",
        &qlp,
        &"--precision",
        &"0.8,0.9",
        &"--out",
        &cal_out,
        &"--json",
    ]));
    assert_eq!(v["queries"], 40);
    assert_eq!(v["top1_correct"], n_correct);
    assert_eq!(v["rule"], "f1");
    assert_eq!(v["written"], true);
    let chosen = &v["chosen"];
    same_decisions(&chosen["threshold"], best.0);
    assert_eq!(chosen["accepted"], best.1);
    assert_eq!(chosen["correct"], best.2);
    assert!((chosen["precision"].as_f64().unwrap() - best.3).abs() < 1e-12);
    assert!((chosen["recall"].as_f64().unwrap() - best.4).abs() < 1e-12);
    assert!((chosen["f1"].as_f64().unwrap() - best.5).abs() < 1e-12);
    for (k, p) in [0.8, 0.9].iter().enumerate() {
        let got = &v["precision"][k];
        assert_eq!(got["target"].as_f64().unwrap(), *p);
        match smallest_at(*p) {
            Some(c) => same_decisions(&got["point"]["threshold"], c.0),
            None => assert!(got["point"].is_null()),
        }
    }
    // The whole curve went to --out.
    let full: Value = serde_json::from_str(&std::fs::read_to_string(&cal_out).unwrap()).unwrap();
    let fc = full["curve"].as_array().unwrap();
    assert_eq!(fc.len(), curve.len());
    for (a, b) in fc.iter().zip(&curve) {
        same_decisions(&a["threshold"], b.0);
        assert_eq!(a["accepted"], b.1);
        assert_eq!(a["correct"], b.2);
    }
    // Stored in the manifest; the index still loads (checksums) and the user's file is kept.
    let t = manifest_threshold(&idx);
    assert_eq!(t["score"], chosen["threshold"]);
    same_decisions(&t["score"], best.0);
    let stored = t["score"].as_f64().unwrap();
    assert_eq!(t["rule"], "f1");
    assert_eq!(
        std::fs::read_to_string(idx.join("NOTES.txt")).unwrap(),
        "mine"
    );

    // search marks every hit by score ≥ threshold; over the top-1 hits that reproduces the
    // calibration's accepted and correct counts.
    let s = json_ok(&simlearn(&[
        &"search",
        &"--index",
        &idx,
        &"--vector",
        &q,
        &"-k",
        &"3",
        &"--json",
    ]));
    assert_eq!(s["threshold"].as_f64().unwrap(), stored);
    let qs = s["queries"].as_array().unwrap();
    assert_eq!(qs.len(), 40);
    let (mut acc, mut okc) = (0, 0);
    for (i, qj) in qs.iter().enumerate() {
        for h in qj["hits"].as_array().unwrap() {
            let m = h["match"].as_bool().unwrap();
            assert_eq!(m, score32(h) >= best.0 as f32, "query {i}");
        }
        let h0 = &qj["hits"][0];
        assert_eq!(f64::from(score32(h0)), top[i].0);
        if h0["match"].as_bool().unwrap() {
            acc += 1;
            okc += usize::from(h0["label"].as_i64().unwrap() == ql[i]);
        }
    }
    assert_eq!((acc, okc), (best.1, best.2));
    // Unknown-class queries exist among both outcomes' candidates: at least one is refused.
    assert!(qs[30..]
        .iter()
        .any(|qj| !qj["hits"][0]["match"].as_bool().unwrap()));

    // --rule precision=0.9 replaces it (if reachable), --dry-run changes nothing.
    let target = smallest_at(0.9).expect("precision 0.9 is reachable on this set");
    let table = ok(&simlearn(&[
        &"calibrate",
        &"--index",
        &idx,
        &"--embeddings",
        &q,
        &"--labels",
        &qlp,
        &"--rule",
        &"precision=0.9",
    ]));
    for needle in ["rule", "threshold", "precision", "recall", "accepted", "f1"] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    let t = manifest_threshold(&idx);
    same_decisions(&t["score"], target.0);
    assert_eq!(t["rule"], "precision>=0.9");
    assert!((t["precision"].as_f64().unwrap() - target.3).abs() < 1e-12);
    let before = std::fs::read(idx.join("manifest.json")).unwrap();
    let v = json_ok(&simlearn(&[
        &"calibrate",
        &"--index",
        &idx,
        &"--embeddings",
        &q,
        &"--labels",
        &qlp,
        &"--dry-run",
        &"--json",
    ]));
    assert_eq!(v["written"], false);
    assert_eq!(std::fs::read(idx.join("manifest.json")).unwrap(), before);
    ok(&simlearn(&[
        &"search", &"--index", &idx, &"--id", &"0", &"-k", &"1",
    ]));
}

#[test]
fn bad_input_gives_one_line_errors() {
    let d = dir("bad");
    let (gv, gl) = items(&[0, 1], 5, 0.5, 3);
    let (qv, ql) = items(&[0, 1], 2, 0.5, 4);
    let e = npy(&d, "g.npy", D, &gv);
    let l = ints(&d, "gl.npy", &gl);
    let q = npy(&d, "q.npy", D, &qv);
    let qlp = ints(&d, "ql.npy", &ql);
    let idx = build_index(&d, &e, Some(&l), "idx");
    let short = ints(&d, "short.npy", &ql[..3]);
    let cal = |index: &Path, emb: &Path, labels: &Path, extra: &[&str]| {
        let mut a: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"calibrate",
            &"--index",
            &index,
            &"--embeddings",
            &emb,
            &"--labels",
            &labels,
        ];
        for x in extra {
            a.push(x);
        }
        simlearn(&a)
    };
    fails_with(
        &cal(&idx, &q, &short, &[]),
        &["short.npy", "3 labels", "4 rows"],
    );
    fails_with(
        &cal(&idx, &q, &qlp, &["--rule", "recall=0.5"]),
        &["--rule", "recall=0.5", "expected f1 or precision=P"],
    );
    fails_with(
        &cal(&idx, &q, &qlp, &["--rule", "precision=2"]),
        &["--rule", "not in (0, 1]"],
    );
    fails_with(
        &cal(&idx, &q, &qlp, &["--precision", "0,0.9"]),
        &["--precision", "not in (0, 1]"],
    );
    fails_with(
        &cal(&d.join("nowhere"), &q, &qlp, &[]),
        &["nowhere", "manifest.json"],
    );
    let unlabelled = build_index(&d, &e, None, "nolabels");
    fails_with(&cal(&unlabelled, &q, &qlp, &[]), &["nolabels", "no labels"]);
    let text = d.join("ql.txt");
    std::fs::write(&text, "cat\ndog\ncat\ndog\n").unwrap();
    fails_with(
        &cal(&idx, &q, &text, &[]),
        &["ql.txt", "line 1", "not an integer"],
    );
    let q4 = npy(&d, "q4.npy", 4, &qv[..16]);
    let l4 = ints(&d, "l4.npy", &ql);
    fails_with(&cal(&idx, &q4, &l4, &[]), &["q4.npy", "dimension 4"]);
    // No query's top-1 is right: no threshold has a positive precision.
    let wrong = ints(&d, "wrong.npy", &[9, 9, 9, 9]);
    fails_with(
        &cal(&idx, &q, &wrong, &[]),
        &["q.npy", "none of the 4 queries"],
    );
    // An unreachable precision rule names the rule and writes nothing: only the query with
    // the lowest top-1 score is labelled like its top-1 neighbour, so precision ≤ 1/4.
    let before = std::fs::read(idx.join("manifest.json")).unwrap();
    let top = brute_top1(&gv, &gl, &qv, &ql);
    let low = (0..4)
        .min_by(|&a, &b| top[a].0.total_cmp(&top[b].0))
        .unwrap();
    let mut one_right = vec![9i64; 4];
    one_right[low] = if top[low].1 { ql[low] } else { 1 - ql[low] };
    let one_right = ints(&d, "one-right.npy", &one_right);
    fails_with(
        &cal(&idx, &q, &one_right, &["--rule", "precision=1"]),
        &["--rule", "precision>=1", "no threshold reaches precision 1"],
    );
    assert_eq!(std::fs::read(idx.join("manifest.json")).unwrap(), before);
    // A text file of integers is fine.
    let good = d.join("ql-good.txt");
    std::fs::write(
        &good,
        ql.iter().map(|x| format!("{x}\n")).collect::<String>(),
    )
    .unwrap();
    ok(&cal(&idx, &q, &good, &["--dry-run"]));
}
