//! The run report: hand-computed figure numbers, the SVG retrieval grid, and end-to-end reports
//! of tiny trained runs whose HTML must reference only existing, non-empty files.

use std::path::{Path, PathBuf};

use burn::prelude::Device;
use serde_json::Value;
use simlearn::data::{digits, rotated_digits, FeatureDataset};
use simlearn::report::grid::{retrieval_grid_svg, GridCell, GridRow};
use simlearn::report::stats::{
    ideal_label_distance_by_rank, label_distance_by_rank, pair_cosines, seeded_queries,
    worst_queries, Histogram,
};
use simlearn::report::{read_metrics, render, ReportOptions, ReportRun};
use simlearn::train::{train_class, train_continuous, Silent, TrainConfig};
use simlearn_eval::{BootstrapConfig, LabelDistance, Matrix, Neighbours};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Reads a run's per-query CSV (named in `report.json`) and checks it against the run's table:
/// one line per evaluated query, distinct rows below `test_items`, and every column's mean equal
/// to the metric's value (micro averaging). Returns the number of metric columns.
fn check_per_query_csv(out: &Path, run: &Value, evaluated: usize) -> usize {
    let file = out.join(run["per_query"].as_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "row");
    let body: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(body.len(), evaluated, "{}", file.display());
    let mut rows: Vec<usize> = body.iter().map(|r| r[0] as usize).collect();
    rows.sort_unstable();
    rows.dedup();
    assert_eq!(rows.len(), evaluated, "distinct rows");
    assert!(rows
        .iter()
        .all(|&r| r < run["test_items"].as_u64().unwrap() as usize));
    for (c, name) in header.iter().enumerate().skip(1) {
        let mean = body.iter().map(|r| r[c]).sum::<f64>() / evaluated as f64;
        let value = run["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == *name)
            .unwrap_or_else(|| panic!("{name} is not in the run's metrics"))["value"]
            .as_f64()
            .unwrap();
        assert!((mean - value).abs() < 1e-12, "{name}: {mean} vs {value}");
    }
    header.len() - 1
}

#[test]
fn histogram_counts_match_hand_binning() {
    // Bins of width 0.5 over [-1, 1]: [-1,-.5) [-.5,0) [0,.5) [.5,1]; 1.2 spills into the last
    // bin, NaN is skipped.
    let v = [-1.0, -0.5, 0.0, 0.49, 0.5, 1.0, 1.2, f64::NAN];
    let h = Histogram::new(&v, -1.0, 1.0, 4);
    assert_eq!(h.counts, vec![1, 1, 2, 3]);
    assert_eq!(h.total, 7);
    assert!(close(h.mean, 1.69 / 7.0));
    let f = h.fractions();
    assert!(close(f[3], 3.0 / 7.0));
    assert!(close(f.iter().sum::<f64>(), 1.0));
    assert_eq!(h.edges(1), (-0.5, 0.0));
}

#[test]
fn pair_cosines_split_positive_and_negative_pairs() {
    let emb = Matrix::new(4, 2, vec![1.0, 0.0, 0.0, 2.0, 3.0, 3.0, 0.0, 0.0]).unwrap();
    let (pos, neg) = pair_cosines(&emb, &[0, 0, 1, 1]);
    // (0,1) orthogonal; (2,3) involves the zero row, whose cosine is 0 by definition.
    assert_eq!(pos, vec![0.0, 0.0]);
    let s = std::f64::consts::FRAC_1_SQRT_2;
    assert_eq!(neg.len(), 4);
    for (got, want) in neg.iter().zip([s, 0.0, s, 0.0]) {
        assert!(close(*got, want), "{neg:?}");
    }
}

#[test]
fn label_distance_by_rank_matches_hand_values() {
    // Angles on a 360° circle.
    let labels = Matrix::new(4, 1, vec![0.0, 10.0, 350.0, 180.0]).unwrap();
    let d = LabelDistance::Circular { period: 360.0 };
    let neigh = Neighbours {
        k: 2,
        indices: vec![3, 1, 0, 2, 0, 1, 1, 2],
        scores: vec![0.0; 8],
    };
    let by_rank = label_distance_by_rank(&neigh, &labels, &d);
    // Rank 1: 180, 10, 10, 170; rank 2: 10, 20, 20, 170.
    assert!(close(by_rank[0], 92.5), "{by_rank:?}");
    assert!(close(by_rank[1], 55.0), "{by_rank:?}");
    let ideal = ideal_label_distance_by_rank(&labels, &d, 2);
    // Sorted distances to the others: [10, 10], [10, 20], [10, 20], [170, 170].
    assert!(close(ideal[0], 50.0), "{ideal:?}");
    assert!(close(ideal[1], 55.0), "{ideal:?}");
}

#[test]
fn worst_and_seeded_queries() {
    let worst = worst_queries(&[5, 6, 7, 8], &[0.5, 0.1, f64::NAN, 0.1], 3);
    assert_eq!(worst, vec![6, 8, 5], "ties by row, NaN last");
    let rows: Vec<usize> = (100..200).collect();
    let a = seeded_queries(&rows, 8, 3);
    assert_eq!(a, seeded_queries(&rows, 8, 3), "same seed, same queries");
    let mut dedup = a.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), 8);
    assert!(a.iter().all(|r| rows.contains(r)));
    let mut all = seeded_queries(&rows[..5], 10, 0);
    all.sort_unstable();
    assert_eq!(all, rows[..5].to_vec());
}

#[test]
fn retrieval_grid_draws_pixels_and_frames() {
    // Four 2×2 images; image 0 has two ink pixels.
    let px = Matrix::new(
        4,
        4,
        vec![
            0.0, 1.0, 0.0, 1.0, //
            0.0, 0.0, 0.0, 0.0, //
            1.0, 1.0, 1.0, 1.0, //
            0.0, 0.5, 0.0, 0.0,
        ],
    )
    .unwrap();
    let rows = vec![GridRow {
        query: 0,
        caption: "#0 <q&>".into(),
        note: "map_at_r 0.500".into(),
        neighbours: vec![
            GridCell {
                item: 1,
                caption: "a".into(),
                correct: true,
            },
            GridCell {
                item: 3,
                caption: "b".into(),
                correct: false,
            },
            GridCell {
                item: 2,
                caption: "c".into(),
                correct: false,
            },
        ],
    }];
    let svg = retrieval_grid_svg("t", &px, (2, 2), &rows);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("class=\"query\"").count(), 1);
    assert_eq!(svg.matches("class=\"correct\"").count(), 1);
    assert_eq!(svg.matches("class=\"incorrect\"").count(), 2);
    assert!(svg.contains("#0 &lt;q&amp;&gt;"));
    // Ink: image 0's two pixels and image 3's one pixel (min-max scaled to full black); image 1
    // is blank and image 2 is flat, so both draw as background only.
    assert_eq!(svg.matches("fill=\"#000000\"").count(), 3);
}

const CLASS_RUN: &str = r#"
[data]
source = "digits"
[model]
hidden = []
output_dim = 16
[loss]
name = "LOSS"
[sampler]
batch_size = 40
samples_per_class = 8
max_batches = 3
[optim]
kind = "adam"
lr = 1e-3
[train]
epochs = 2
seed = 0
eval_every = 1
"#;

/// Every `src="…"`/`href="…"` value of `html`.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(key) {
            let rest = &html[i + key.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    out
}

fn check_references(out: &Path, html: &str) -> usize {
    let refs = references(html);
    for r in &refs {
        assert!(
            !r.contains("://") && !r.starts_with('/'),
            "non-local reference {r}"
        );
        let meta = std::fs::metadata(out.join(r)).unwrap_or_else(|e| panic!("{r}: {e}"));
        assert!(meta.len() > 0, "{r} is empty");
    }
    refs.len()
}

fn small_options() -> ReportOptions {
    ReportOptions {
        queries: 3,
        top_k: 4,
        bootstrap: BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        },
        ..ReportOptions::default()
    }
}

#[test]
fn class_report_of_two_trained_runs() {
    let root = temp("class");
    let (train, test) = digits().class_disjoint_split().unwrap();
    let device = Device::flex();
    let mut runs = Vec::new();
    for loss in ["contrastive", "contextual"] {
        let cfg = TrainConfig::from_toml(&CLASS_RUN.replace("LOSS", loss)).unwrap();
        let dir = root.join(loss);
        train_class(&cfg, &train, Some(&test), Some(&dir), false, &mut Silent).unwrap();
        runs.push(ReportRun::load(&dir, test.clone(), &device).unwrap());
    }
    assert_eq!(runs[0].history.len(), 2);
    let out = root.join("report");
    let files = render(&runs, &out, &small_options()).unwrap();
    let html = std::fs::read_to_string(&files.index).unwrap();
    for id in [
        "runs",
        "results",
        "training-curves",
        "similarity-histograms",
        "retrieval",
        "verification",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
    assert!(!html.contains("id=\"label-distance-by-rank\""));
    // 2 runs × (training, similarity, ROC, DET, 2 grids) figures, each as img src and link
    // href, plus the JSON link.
    assert_eq!(files.figures.len(), 12);
    assert_eq!(check_references(&out, &html), 2 * 12 + 1);
    for f in &files.figures {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{}",
            f.display()
        );
        assert!(html.contains(f.file_name().unwrap().to_str().unwrap()));
    }
    let grid = std::fs::read_to_string(out.join("run1-contrastive-retrieval-random.svg")).unwrap();
    let frames =
        grid.matches("class=\"correct\"").count() + grid.matches("class=\"incorrect\"").count();
    assert_eq!(frames, 3 * 4, "3 queries × top 4");
    assert!(
        std::fs::read_to_string(out.join("run1-contrastive-training.svg"))
            .unwrap()
            .contains("learning rate")
    );

    let roc = std::fs::read_to_string(out.join("run1-contrastive-roc.svg")).unwrap();
    assert!(roc.contains("true accept rate") && roc.contains("false accept rate"));
    let det = std::fs::read_to_string(out.join("run1-contrastive-det.svg")).unwrap();
    assert!(det.contains("false reject rate") && det.contains("(log)"));
    for row in ["tar_at_far_1e-1", "tar_at_far_1e-4", "eer", "roc_auc"] {
        assert!(
            html.contains(&format!("<td class=\"name\">{row}</td>")),
            "results row {row} missing"
        );
    }

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    let jruns = json["runs"].as_array().unwrap();
    assert_eq!(jruns.len(), 2);
    for r in jruns {
        // The verification pairs are the histogram's pairs: positive = genuine.
        for (head, k) in [("untrained", 0), ("trained", 1)] {
            let v = &r["verification"][head];
            let hist = &r["pair_similarity"][k];
            assert_eq!(v["genuine_pairs"], hist["positive_pairs"], "{head}");
            assert_eq!(v["impostor_pairs"], hist["negative_pairs"], "{head}");
            assert_eq!(v["pairs"], "all_pairs");
            let rows = v["tar_at_far"].as_array().unwrap();
            assert_eq!(rows.len(), 4);
            // TAR@FAR grows with the FAR allowed; every FAR reached is within its target.
            for w in rows.windows(2) {
                assert!(w[0]["tar"].as_f64().unwrap() >= w[1]["tar"].as_f64().unwrap());
            }
            for t in rows {
                assert!(t["far"].as_f64().unwrap() <= t["far_target"].as_f64().unwrap());
            }
            let eer = v["eer"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&eer));
            // Higher mean positive than negative cosine ⇒ AUC above chance here.
            if hist["mean_positive"].as_f64().unwrap() > hist["mean_negative"].as_f64().unwrap() {
                assert!(v["roc_auc"].as_f64().unwrap() > 0.5, "{head}: {v}");
            }
        }
        let eer = r["verification"]["trained"]["eer"].as_f64().unwrap();
        let shown = if eer.abs() >= 10.0 {
            format!("{eer:.2}")
        } else {
            format!("{eer:.4}")
        };
        assert!(
            html.contains(&format!("<td>{shown}<br>")),
            "EER {shown} not in the table"
        );
    }
    for r in jruns {
        assert_eq!(r["labels"], "class");
        assert_eq!(r["test_items"].as_u64().unwrap() as usize, test.len());
        for m in r["metrics"].as_array().unwrap() {
            let v = m["value"].as_f64().unwrap();
            let ci = m["ci"].as_array().unwrap();
            let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            assert!(lo <= v + 1e-12 && v <= hi + 1e-12, "{m}");
        }
        let (before, after) = (&r["pair_similarity"][0], &r["pair_similarity"][1]);
        // Pairs of 5 test classes: counts depend on labels only.
        assert_eq!(before["positive_pairs"], after["positive_pairs"]);
        let n = test.len() as u64;
        assert_eq!(
            before["positive_pairs"].as_u64().unwrap() + before["negative_pairs"].as_u64().unwrap(),
            n * (n - 1) / 2
        );
    }
    let metric = |r: &Value, name: &str| {
        r["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap()["value"]
            .as_f64()
            .unwrap()
    };
    let cmp = json["comparisons"].as_array().unwrap();
    assert_eq!(cmp.len(), 1, "both runs share the test set");
    let row = cmp[0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "map_at_r")
        .unwrap();
    let (a, b, diff) = (
        row["a"].as_f64().unwrap(),
        row["b"].as_f64().unwrap(),
        row["diff"].as_f64().unwrap(),
    );
    assert!(close(a, metric(&jruns[0], "map_at_r")));
    assert!(close(b, metric(&jruns[1], "map_at_r")));
    assert!(close(diff, a - b));
    // Per-query values: every query of the 5 test classes has a class mate, so all are evaluated,
    // and the per-query columns are exactly the compared metrics.
    for r in jruns {
        let columns =
            check_per_query_csv(&out, r, cmp[0]["n_evaluated"].as_u64().unwrap() as usize);
        assert_eq!(columns, cmp[0]["metrics"].as_array().unwrap().len());
        assert!(columns >= 6, "R@k, precision@1, R-precision, MAP@R, ...");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn continuous_report_has_rank_curve_and_no_histograms() {
    let root = temp("continuous");
    let (train, test): (FeatureDataset, FeatureDataset) =
        rotated_digits(0).alternate_split().unwrap();
    let cfg = TrainConfig::from_toml(
        r#"
[data]
source = "rotated_digits"
[model]
hidden = []
output_dim = 8
normalize = false
[continuous]
loss = { name = "log_ratio" }
label_distance = { kind = "circular", period = 360.0 }
batch_size = 30
k = 5
max_batches = 3
[optim]
kind = "adam"
lr = 1e-3
[train]
epochs = 1
eval_every = 1
select_metric = "ndcg_at_10"
"#,
    )
    .unwrap();
    let dir = root.join("log_ratio");
    train_continuous(&cfg, &train, Some(&test), Some(&dir), false, &mut Silent).unwrap();
    let device = Device::flex();
    let runs = vec![ReportRun::load(&dir, test.clone(), &device).unwrap()];
    let out = root.join("report");
    let files = render(&runs, &out, &small_options()).unwrap();
    let html = std::fs::read_to_string(&files.index).unwrap();
    for id in [
        "results",
        "training-curves",
        "retrieval",
        "label-distance-by-rank",
    ] {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
    assert!(!html.contains("id=\"similarity-histograms\""));
    // training, rank curve, 2 grids.
    assert_eq!(check_references(&out, &html), 2 * 4 + 1);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    let r = &json["runs"][0];
    assert_eq!(r["labels"], "continuous");
    assert!(json["comparisons"].as_array().unwrap().is_empty());
    let series = |k: &str| -> Vec<f64> {
        r["label_distance_by_rank"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (trained, untrained, ideal) = (series("trained"), series("untrained"), series("ideal"));
    assert_eq!(trained.len(), 10);
    assert_eq!(untrained.len(), 10);
    assert!(
        ideal.windows(2).all(|w| w[0] <= w[1] + 1e-12),
        "ideal is sorted"
    );
    // The r items any ranking retrieves are at least as far (in sum) as the r nearest labels.
    let prefix = |v: &[f64], r: usize| v[..r].iter().sum::<f64>();
    for rank in 1..=10 {
        assert!(prefix(&trained, rank) >= prefix(&ideal, rank) - 1e-9);
        assert!(prefix(&untrained, rank) >= prefix(&ideal, rank) - 1e-9);
    }
    // The trainer's own validation (same head, same protocol) agrees with the report's table.
    let history = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let val = history.last().unwrap().validation.as_ref().unwrap();
    let table = r["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ndcg_at_10")
        .unwrap()["value"]
        .as_f64()
        .unwrap();
    assert!(
        (val["ndcg_at_10"] - table).abs() < 1e-6,
        "{} vs {table}",
        val["ndcg_at_10"]
    );
    assert!(
        check_per_query_csv(&out, r, test.len()) >= 2,
        "nDCG and label distance columns"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let root = temp("errors");
    let device = Device::flex();
    let test = digits();
    let e = ReportRun::load(&root.join("missing"), test, &device)
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(msg.contains("config.toml") && !msg.contains('\n'), "{msg}");

    let bad = root.join("metrics.jsonl");
    std::fs::write(&bad, "{\"epoch\":0,\"steps\":1,\"lr\":0.1,\"loss\":1.0,\"terms\":{},\"seconds\":0.1}\nnot json\n").unwrap();
    let msg = read_metrics(&bad).err().unwrap().to_string();
    assert!(
        msg.contains("metrics.jsonl") && msg.contains("line 2"),
        "{msg}"
    );

    let e = render(&[], &root.join("out"), &ReportOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("no run folder"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn image_feature_runs_draw_thumbnails_of_their_images() {
    // 4 classes × 4 images: 24 × 16 PNGs of one colour per class; the features are the colour
    // plus noise, written as CSV with the `<stem>_paths.txt` list `simlearn embed` writes.
    let root = temp("thumbnails");
    let (classes, per_class) = (4usize, 4usize);
    let colours = [[220u8, 40, 40], [40, 160, 40], [40, 40, 220], [200, 160, 0]];
    let mut feats = String::new();
    let mut labels = String::new();
    let mut paths = String::new();
    for (c, colour) in colours.iter().enumerate().take(classes) {
        for j in 0..per_class {
            let file = root.join(format!("img/c{c}/{j}.png"));
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            let img = image::RgbImage::from_fn(24, 16, |x, _| {
                if x < 2 * j as u32 + 2 {
                    image::Rgb([255, 255, 255])
                } else {
                    image::Rgb(*colour)
                }
            });
            img.save(&file).unwrap();
            let row: Vec<String> = (0..6)
                .map(|d| {
                    let v =
                        (if d == c { 1.0 } else { 0.0 }) + 0.05 * ((c * 7 + j * 3 + d) % 5) as f64;
                    format!("{v}")
                })
                .collect();
            feats.push_str(&(row.join(",") + "\n"));
            labels.push_str(&format!("{c}\n"));
            paths.push_str(&format!("{}\n", file.display()));
        }
    }
    std::fs::write(root.join("feats.csv"), &feats).unwrap();
    std::fs::write(root.join("labels.txt"), &labels).unwrap();
    std::fs::write(root.join("feats_paths.txt"), &paths).unwrap();
    assert_eq!(
        simlearn::report::paths_file(&root.join("feats.csv")),
        root.join("feats_paths.txt")
    );
    let data = FeatureDataset::from_class_files(&root.join("feats.csv"), &root.join("labels.txt"))
        .unwrap();
    let toml = format!(
        r#"
[data]
source = "features"
features = "{f}"
labels = "{l}"
val_features = "{f}"
val_labels = "{l}"
[model]
output_dim = 8
[loss]
name = "contrastive"
[sampler]
batch_size = 8
samples_per_class = 2
[train]
epochs = 2
eval_every = 2
"#,
        f = root.join("feats.csv").display(),
        l = root.join("labels.txt").display()
    );
    let cfg = TrainConfig::from_toml(&toml).unwrap();
    let dir = root.join("run");
    train_class(&cfg, &data, Some(&data), Some(&dir), false, &mut Silent).unwrap();
    let device = Device::flex();
    let run = ReportRun::load(&dir, data.clone(), &device).unwrap();
    let out = root.join("report");
    let files = render(&[run], &out, &small_options()).unwrap();
    let html = std::fs::read_to_string(&files.index).unwrap();
    assert!(
        html.contains("id=\"retrieval\""),
        "retrieval section missing"
    );
    // training, similarity, ROC, DET and the two grids, each as img src and link href, plus
    // the JSON.
    assert_eq!(files.figures.len(), 6);
    assert_eq!(check_references(&out, &html), 2 * 6 + 1);
    let grid = std::fs::read_to_string(out.join("run1-run-retrieval-random.svg")).unwrap();
    // 3 queries × (query + top 4), every one an embedded PNG, no external reference.
    let uri = "href=\"data:image/png;base64,";
    assert_eq!(grid.matches(uri).count(), 3 * 5);
    assert!(!grid.contains("class=\"missing\""));
    assert!(!grid.contains("file:") && !grid.contains(".png\""));
    assert_eq!(grid.matches("class=\"query\"").count(), 3);
    let frames =
        grid.matches("class=\"correct\"").count() + grid.matches("class=\"incorrect\"").count();
    assert_eq!(frames, 3 * 4);
    // The embedded image decodes back to a thumbnail of a PNG of the data set (24 × 16 fits
    // in the cell, so it keeps its size) whose colour is one of the class colours.
    let start = grid.find(uri).unwrap() + uri.len();
    let b64 = &grid[start..start + grid[start..].find('"').unwrap()];
    let png = decode_base64(b64);
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (24, 16));
    assert!(colours.contains(&img.get_pixel(23, 8).0));
    // A paths file that does not fit the features is a warning, and the grids are left out.
    std::fs::write(root.join("feats_paths.txt"), "one.png\n").unwrap();
    let run = ReportRun::load(&dir, data, &device).unwrap();
    let out2 = root.join("report2");
    let files = render(&[run], &out2, &small_options()).unwrap();
    assert_eq!(files.figures.len(), 4);
    let html = std::fs::read_to_string(&files.index).unwrap();
    assert!(
        html.contains("1 image paths for 16 feature rows"),
        "warning missing"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn base64_matches_rfc4648_vectors() {
    use simlearn::report::grid::base64;
    for (plain, coded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), coded);
        assert_eq!(decode_base64(coded), plain.as_bytes());
    }
}

/// Standard base64 decoding (padding allowed), for checking embedded images.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
