//! End-to-end tests of `simlearn report`: train a tiny run with the built binary, report on it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-report-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn simlearn(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simlearn"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const TINY: &str = r#"
[data]
source = "digits"
[model]
hidden = []
output_dim = 8
[loss]
name = "contrastive"
[sampler]
batch_size = 40
samples_per_class = 8
max_batches = 2
[optim]
lr = 1e-3
[train]
epochs = 1
eval_every = 1
"#;

#[test]
fn report_of_a_trained_run() {
    let d = dir("ok");
    let cfg = d.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = d.join("run");
    ok(&simlearn(&[
        &"train",
        &"--config",
        &cfg,
        &"--out",
        &run,
        &"--json",
    ]));
    let out = d.join("report");
    let res = simlearn(&[
        &"report",
        &run,
        &"--out",
        &out,
        &"--queries",
        &"2",
        &"--top-k",
        &"3",
    ]);
    ok(&res);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("index.html"), "{stdout}");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let mut refs = 0;
    for (i, _) in html.match_indices("src=\"") {
        let rest = &html[i + 5..];
        let file = &rest[..rest.find('"').unwrap()];
        let len = std::fs::metadata(out.join(file)).unwrap().len();
        assert!(len > 0, "{file} is empty");
        refs += 1;
    }
    // training curves, similarity histograms, ROC, DET, random and worst retrieval grids.
    assert_eq!(refs, 6);
    for id in [
        "results",
        "training-curves",
        "similarity-histograms",
        "verification",
        "retrieval",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
    }
    let grid = std::fs::read_to_string(out.join("run1-run-retrieval-random.svg")).unwrap();
    assert_eq!(grid.matches("class=\"query\"").count(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["runs"][0]["epochs"], 1);
    assert_eq!(json["runs"][0]["data_source"], "digits");
    // TAR@FAR / EER of the test pairs, counted over every pair i < j.
    let v = &json["runs"][0]["verification"]["trained"];
    let n = json["runs"][0]["test_items"].as_u64().unwrap();
    assert_eq!(
        v["genuine_pairs"].as_u64().unwrap() + v["impostor_pairs"].as_u64().unwrap(),
        n * (n - 1) / 2
    );
    assert_eq!(v["tar_at_far"].as_array().unwrap().len(), 4);
    assert!(html.contains("tar_at_far_1e-3") && html.contains(">eer<"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_run_folder_is_a_one_line_error() {
    let d = dir("missing");
    let res = simlearn(&[&"report", &d.join("nope"), &"--out", &d.join("out")]);
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("nope") && err.contains("config.toml"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn zero_queries_is_rejected() {
    let d = dir("zero");
    let cfg = d.join("tiny.toml");
    std::fs::write(&cfg, TINY).unwrap();
    let run = d.join("run");
    ok(&simlearn(&[
        &"train",
        &"--config",
        &cfg,
        &"--out",
        &run,
        &"--json",
    ]));
    let res = simlearn(&[
        &"report",
        &run,
        &"--out",
        &d.join("out"),
        &"--queries",
        &"0",
    ]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("queries"));
    let _ = std::fs::remove_dir_all(&d);
}
