//! `simlearn demo` ends by indexing the trained head's embeddings of the unseen classes and
//! searching held-out queries: the index it leaves behind is a working artifact.

use serde_json::Value;
use std::process::Command;

#[test]
fn demo_indexes_the_unseen_classes_and_searches_held_out_queries() {
    let out = std::env::temp_dir().join(format!("simlearn-demo-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_simlearn"))
        .args(["demo", "--epochs", "1", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["methods"].as_array().unwrap().len(), 3);
    let s = &v["search"];
    // 896 unseen images, one query held out per class 5-9.
    assert_eq!(s["items"], 891);
    let queries = s["queries"].as_array().unwrap();
    let classes: Vec<i64> = queries
        .iter()
        .map(|q| q["label"].as_i64().unwrap())
        .collect();
    assert_eq!(classes, [5, 6, 7, 8, 9]);
    for q in queries {
        let hits = q["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 5);
        let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        // A held-out query is not in the index, so no hit is the query itself at score 1.
        assert!(scores[0] < 1.0 - 1e-6, "{scores:?}");
        for h in hits {
            let path = out.join("gallery").join(h["path"].as_str().unwrap());
            let img = image::open(&path).unwrap();
            assert_eq!((img.width(), img.height()), (32, 32), "{}", path.display());
        }
    }
    // The artifact answers `simlearn search`: the first hit of query 0, searched by id, gets
    // its neighbours (itself left out), ranked, with labels and payload paths.
    let first = &queries[0]["hits"][0];
    let id = first["id"].as_i64().unwrap().to_string();
    let found = Command::new(env!("CARGO_BIN_EXE_simlearn"))
        .args(["search", "--id", &id, "-k", "3", "--json", "--index"])
        .arg(out.join("index"))
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );
    let f: Value = serde_json::from_slice(&found.stdout).unwrap();
    let hits = f["queries"][0]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 3);
    for h in hits {
        assert_ne!(h["id"].as_i64(), first["id"].as_i64());
        assert!((5..=9).contains(&h["label"].as_i64().unwrap()));
        assert!(out
            .join("gallery")
            .join(h["path"].as_str().unwrap())
            .is_file());
    }
    let _ = std::fs::remove_dir_all(&out);
}
