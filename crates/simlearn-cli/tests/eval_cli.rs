//! End-to-end tests of `simlearn eval`: the built binary on small files in a temp dir.

use serde_json::Value;
use simlearn_eval::io::{write_npy_f32, write_npy_i64};
use simlearn_eval::Matrix;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-eval-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn npy(d: &Path, name: &str, rows: usize, cols: usize, data: &[f32]) -> PathBuf {
    let p = d.join(name);
    write_npy_f32(&p, &Matrix::new(rows, cols, data.to_vec()).unwrap()).unwrap();
    p
}

fn labels(d: &Path, name: &str, l: &[i64]) -> PathBuf {
    let p = d.join(name);
    write_npy_i64(&p, l).unwrap();
    p
}

fn eval(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simlearn"));
    c.arg("eval");
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn json_ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metric(v: &Value, name: &str) -> f64 {
    v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {v}"))["value"]
        .as_f64()
        .unwrap()
}

/// A one-line error on stderr and a non-zero exit.
fn fails_with(out: &Output, needles: &[&str]) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} lacks {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// 1-D points 0, 1 (class 0) and 1.1, 5 (class 1). Leave-one-out by squared distance:
/// 0→1 hit, 1→1.1 miss, 1.1→1 miss, 5→1.1 hit, so P@1 = 1/2; every class has R = 1, so
/// MAP@R = R-precision = P@1 = 1/2; Recall@2: 1 finds 0 second (hit), 1.1 finds 5? no —
/// 1.1's order is 1, 0, 5, so its only positive is third: recall@2 = 3/4.
#[test]
fn leave_one_out_hand_computed() {
    let d = dir("loo");
    let e = npy(&d, "e.npy", 4, 1, &[0.0, 1.0, 1.1, 5.0]);
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--similarity",
        &"sqeuclidean",
        &"--k",
        &"1,2",
        &"--json",
    ]));
    assert_eq!(metric(&v, "precision_at_1"), 0.5);
    assert_eq!(metric(&v, "recall_at_1"), 0.5);
    assert_eq!(metric(&v, "recall_at_2"), 0.75);
    assert_eq!(metric(&v, "map_at_r"), 0.5);
    assert_eq!(v["leave_one_out"], true);

    // The table names the metrics and the values.
    let out = eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--similarity",
        &"sqeuclidean",
    ]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("precision_at_1") && table.contains("0.5000"),
        "{table}"
    );
}

/// Query/gallery mode with string labels: queries near their class's gallery item.
#[test]
fn query_gallery_with_string_labels_and_csv() {
    let d = dir("qg");
    let g = d.join("g.csv");
    std::fs::write(&g, "x,y\n1,0\n0,1\n-1,0\n").unwrap();
    let gl = d.join("gl.txt");
    std::fs::write(&gl, "cat\ndog\nbird\n").unwrap();
    let q = npy(&d, "q.npy", 3, 2, &[0.2, 0.8, 0.9, 0.1, 0.1, 0.9]);
    let ql = d.join("ql.txt");
    // The query file lists the classes in another order: ids must be shared with the
    // gallery's file. The "bird" query's nearest gallery item is the dog: P@1 = 2/3.
    std::fs::write(&ql, "dog\ncat\nbird\n").unwrap();
    let v = json_ok(&eval(&[
        &"--embeddings",
        &g,
        &"--labels",
        &gl,
        &"--query-embeddings",
        &q,
        &"--query-labels",
        &ql,
        &"--k",
        &"1",
        &"--json",
    ]));
    assert!((metric(&v, "precision_at_1") - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(v["leave_one_out"], false);
    assert_eq!(v["n_gallery"], 3);
}

#[test]
fn metric_selection_ci_and_per_class() {
    let d = dir("sel");
    let e = npy(&d, "e.npy", 4, 1, &[0.0, 1.0, 1.1, 5.0]);
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--similarity",
        &"sqeuclidean",
        &"--metrics",
        &"map_at_r,recall_at_k",
        &"--k",
        &"1,2",
        &"--ci",
        &"--per-class",
        &"--seed",
        &"3",
        &"--json",
    ]));
    let names: Vec<&str> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["recall_at_1", "recall_at_2", "map_at_r"]);
    for m in v["metrics"].as_array().unwrap() {
        let ci = m["ci"].as_array().expect("interval requested");
        assert!(ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap());
    }
    assert_eq!(v["per_class"].as_array().unwrap().len(), 2);
    let out = eval(&[&"--embeddings", &e, &"--labels", &l, &"--metrics", &"bogus"]);
    fails_with(&out, &["--metrics", "bogus"]);
}

/// x = labels = [0, 1, 3]: nearest neighbours 0→1, 1→0, 3→1, label distances 1, 1, 2.
#[test]
fn continuous_labels_hand_computed() {
    let d = dir("cont");
    let e = npy(&d, "e.npy", 3, 1, &[0.0, 1.0, 3.0]);
    let y = npy(&d, "y.npy", 3, 1, &[0.0, 1.0, 3.0]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &y,
        &"--continuous-labels",
        &"--k",
        &"1",
        &"--json",
    ]));
    assert!((metric(&v, "mean_label_distance_at_1") - 4.0 / 3.0).abs() < 1e-12);
    // Retrieval order equals the label order, so nDCG is perfect.
    assert!((metric(&v, "ndcg_at_1") - 1.0).abs() < 1e-12);
    let out = eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &y,
        &"--continuous-labels",
        &"--label-distance",
        &"circular:-1",
    ]);
    fails_with(&out, &["circular period"]);
}

#[test]
fn paired_comparison_with_continuous_labels() {
    let d = dir("cmp-cont");
    // A orders items as their labels do; B reverses the middle pair.
    let y = npy(&d, "y.npy", 4, 1, &[0.0, 1.0, 2.0, 3.0]);
    let a = npy(&d, "a.npy", 4, 1, &[0.0, 1.0, 2.0, 3.0]);
    let b = npy(&d, "b.npy", 4, 1, &[0.0, 2.0, 1.0, 3.0]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &a,
        &"--labels",
        &y,
        &"--continuous-labels",
        &"--compare",
        &b,
        &"--k",
        &"1",
        &"--json",
    ]));
    let md = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mean_label_distance_at_1")
        .unwrap();
    // A: every nearest neighbour is 1 label unit away (ties go to the lower index).
    // B (positions 0, 2, 1, 3): query 0 → item 2 (label distance 2); query 1 → items 2 and 3
    // tie, item 2 (1); query 2 → items 0 and 1 tie, item 0 (2); query 3 → item 1 (2).
    assert_eq!(md["a"].as_f64().unwrap(), 1.0);
    assert_eq!(md["b"].as_f64().unwrap(), 7.0 / 4.0);
    assert_eq!(md["diff"].as_f64().unwrap(), 1.0 - 7.0 / 4.0);
}

#[test]
fn paired_comparison() {
    let d = dir("cmp");
    let good = npy(&d, "a.npy", 4, 1, &[0.0, 0.1, 5.0, 5.1]);
    let bad = npy(&d, "b.npy", 4, 1, &[0.0, 5.0, 0.1, 5.1]);
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &good,
        &"--labels",
        &l,
        &"--compare",
        &bad,
        &"--similarity",
        &"sqeuclidean",
        &"--json",
    ]));
    let p1 = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "precision_at_1")
        .unwrap();
    assert_eq!(p1["a"].as_f64().unwrap(), 1.0);
    assert_eq!(p1["b"].as_f64().unwrap(), 0.0);
    assert_eq!(p1["diff"].as_f64().unwrap(), 1.0);
}

#[test]
fn safetensors_tensor_selection() {
    let d = dir("st");
    let header = r#"{"emb":{"dtype":"F32","shape":[4,1],"data_offsets":[0,16]},"other":{"dtype":"F32","shape":[1,1],"data_offsets":[16,20]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for v in [0.0f32, 1.0, 1.1, 5.0, 9.0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let e = d.join("e.safetensors");
    std::fs::write(&e, bytes).unwrap();
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let v = json_ok(&eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--tensor",
        &"emb",
        &"--similarity",
        &"sqeuclidean",
        &"--json",
    ]));
    assert_eq!(metric(&v, "precision_at_1"), 0.5);
    let out = eval(&[&"--embeddings", &e, &"--labels", &l]);
    fails_with(&out, &["e.safetensors", "--tensor"]);
}

#[test]
fn k_above_gallery_is_clamped_with_a_warning() {
    let d = dir("clamp");
    let e = npy(&d, "e.npy", 4, 1, &[0.0, 1.0, 1.1, 5.0]);
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let out = eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--k",
        &"1,50",
        &"--json",
    ]);
    let v = json_ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains("50"), "{err}");
    assert_eq!(v["ks"], serde_json::json!([1, 3]));
}

#[test]
fn bad_input_gives_one_line_errors() {
    let d = dir("bad");
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let nan = npy(&d, "nan.npy", 4, 1, &[0.0, 1.0, f32::NAN, 2.0]);
    fails_with(
        &eval(&[&"--embeddings", &nan, &"--labels", &l]),
        &["nan.npy", "row 2", "NaN"],
    );
    let e = npy(&d, "e.npy", 4, 1, &[0.0, 1.0, 1.1, 5.0]);
    let l3 = labels(&d, "l3.npy", &[0, 0, 1]);
    fails_with(
        &eval(&[&"--embeddings", &e, &"--labels", &l3]),
        &["l3.npy", "3 labels", "e.npy", "4 rows"],
    );
    let q2 = npy(&d, "q2.npy", 2, 2, &[0.0, 1.0, 1.0, 0.0]);
    let ql = labels(&d, "ql.npy", &[0, 1]);
    fails_with(
        &eval(&[
            &"--embeddings",
            &e,
            &"--labels",
            &l,
            &"--query-embeddings",
            &q2,
            &"--query-labels",
            &ql,
        ]),
        &["dimension", "q2.npy", "e.npy"],
    );
    let empty = d.join("empty.npy");
    std::fs::write(&empty, b"").unwrap();
    fails_with(
        &eval(&[&"--embeddings", &empty, &"--labels", &l]),
        &["empty.npy", "empty"],
    );
    let one = labels(&d, "one.npy", &[7, 7, 7, 7]);
    fails_with(
        &eval(&[&"--embeddings", &e, &"--labels", &one]),
        &["single class"],
    );
    fails_with(
        &eval(&[
            &"--embeddings",
            &e,
            &"--labels",
            &l,
            &"--similarity",
            &"manhattan",
        ]),
        &["manhattan"],
    );
    let fortran = d.join("f.npy");
    let mut b = std::fs::read(&e).unwrap();
    let pos = b.windows(5).position(|w| w == b"False").unwrap();
    b[pos..pos + 5].copy_from_slice(b"True ");
    std::fs::write(&fortran, b).unwrap();
    fails_with(
        &eval(&[&"--embeddings", &fortran, &"--labels", &l]),
        &["f.npy", "Fortran"],
    );
    fails_with(
        &eval(&[&"--embeddings", &d.join("missing.npy"), &"--labels", &l]),
        &["missing.npy"],
    );
}

/// 1-D embeddings 0, 1, 3, 6 with labels A A B B, squared Euclidean (score −(a − b)²):
/// genuine −1 (0,1) and −9 (3,6); impostors −9 (0,3), −36, −4 (1,3), −25. Thresholds
/// −36 −25 −9 −4 −1: FAR 1 ¾ ½ ¼ 0, TAR 1 1 1 ½ ½. Every FAR target ≤ 0.1 allows no impostor
/// (4 impostors): v = −4, TAR = #{g > −4}/2 = ½ at t = −1. EER between −9 (FAR ½, FRR 0) and
/// −4 (FAR ¼, FRR ½): λ = ½ / ¾ = ⅔, EER = ½ − ⅔·¼ = ⅓, threshold −9 + ⅔·5. AUC: −1 beats
/// all 4 impostors, −9 beats 2 and ties 1: 6.5 / 8.
#[test]
fn verification_hand_computed_with_roc_csv() {
    let d = dir("verification");
    let e = npy(&d, "e.npy", 4, 1, &[0.0, 1.0, 3.0, 6.0]);
    let l = labels(&d, "l.npy", &[0, 0, 1, 1]);
    let roc = d.join("roc.csv");
    let v = json_ok(&eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--similarity",
        &"sqeuclidean",
        &"--roc-out",
        &roc,
        &"--json",
    ]));
    let ver = &v["verification"];
    assert_eq!(ver["genuine_pairs"], 2);
    assert_eq!(ver["impostor_pairs"], 4);
    assert_eq!(ver["pairs"], "all_pairs");
    let rows = ver["tar_at_far"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["tar"], 0.5);
        assert_eq!(r["threshold"], -1.0);
        assert_eq!(r["far"], 0.0);
    }
    assert_eq!(rows[0]["far_target"], 0.1);
    let close = |x: &Value, want: f64| assert!((x.as_f64().unwrap() - want).abs() < 1e-12, "{x}");
    close(&ver["eer"], 1.0 / 3.0);
    close(&ver["eer_threshold"], -9.0 + 2.0 / 3.0 * 5.0);
    close(&ver["roc_auc"], 6.5 / 8.0);
    // The retrieval metrics are still there: 3's nearest item is 1 (A), the others' are right.
    assert_eq!(metric(&v, "precision_at_1"), 0.75);
    let csv = std::fs::read_to_string(&roc).unwrap();
    assert_eq!(
        csv,
        "threshold,far,tar,frr\n-36,1,1,0\n-25,0.75,1,0\n-9,0.5,1,0\n-4,0.25,0.5,0.5\n-1,0,0.5,0.5\n"
    );

    // Without --verification the JSON has no verification; the table shows the rows.
    let v = json_ok(&eval(&[&"--embeddings", &e, &"--labels", &l, &"--json"]));
    assert!(v.get("verification").is_none());
    let out = eval(&[
        &"--embeddings",
        &e,
        &"--labels",
        &l,
        &"--similarity",
        &"sqeuclidean",
        &"--verification",
    ]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    for needle in ["tar_at_far_1e-4", "eer", "0.3333", "roc_auc", "0.8125"] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
}

#[test]
fn verification_bad_input_gives_one_line_errors() {
    let d = dir("verification-bad");
    let e = npy(&d, "e.npy", 3, 1, &[0.0, 1.0, 3.0]);
    let one = labels(&d, "one.npy", &[7, 7, 7]);
    let two = labels(&d, "two.npy", &[1, 1, 2]);
    fails_with(
        &eval(&[
            &"--embeddings",
            &e,
            &"--labels",
            &one,
            &"--k",
            &"1",
            &"--verification",
        ]),
        &["class"],
    );
    fails_with(
        &eval(&[
            &"--embeddings",
            &e,
            &"--labels",
            &two,
            &"--k",
            &"1",
            &"--roc-out",
            &d.join("missing-dir").join("roc.csv"),
        ]),
        &["--roc-out", "roc.csv"],
    );
    let cont = npy(&d, "c.npy", 3, 1, &[0.0, 1.0, 2.0]);
    fails_with(
        &eval(&[
            &"--embeddings",
            &e,
            &"--labels",
            &cont,
            &"--continuous-labels",
            &"--verification",
        ]),
        &["--verification", "class labels"],
    );
}
