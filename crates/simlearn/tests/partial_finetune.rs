//! Partial fine-tuning (`backbone.train_stages`), fixed views (`backbone.views`) and the
//! frozen-trunk cache (`backbone.cache`) on a tiny generated image folder with the narrow
//! ResNet-18 fixture (`tests/fixtures/backbones/resnet18_w8.pth`).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use simlearn::train::checkpoint::{load_safetensors, NamedTensor};
use simlearn::train::images::train_images;
use simlearn::train::{Silent, TrainConfig, TrainObserver};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-partial-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn write_image(path: &Path, c: usize, i: usize) {
    RgbImage::from_fn(40, 40, |x, y| {
        let stripe = ((x + y + i as u32 * 3) / (2 + c as u32 % 4)) % 2;
        Rgb([
            (c * 40 % 256) as u8,
            if stripe == 1 { 220 } else { 30 },
            ((c * 97 + i * 11) % 256) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

/// `classes` folders of `per_class` striped 40 × 40 PNGs (separable classes, distinct images).
fn write_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            write_image(&dir.join(format!("{i}.png")), c, i);
        }
    }
}

fn fixture_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones/resnet18_w8.pth")
}

fn config(root: &Path, epochs: usize, backbone_extra: &str) -> TrainConfig {
    let text = format!(
        r#"
[data]
source = "images"

[images]
layout = "folder"
root = "{root}"
size = 32
resize = 36
crop = 32
threads = 1

[backbone]
arch = "resnet18"
width = 8
weights = "{weights}"
{backbone_extra}

[model]
output_dim = 16

[loss]
name = "contrastive"

[sampler]
batch_size = 8
samples_per_class = 4

[optim]
lr = 1e-2

[train]
epochs = {epochs}
eval_every = 1
seed = 3
"#,
        root = root.display(),
        weights = fixture_weights().display()
    );
    TrainConfig::from_toml(&text).unwrap()
}

/// The fixture's tensors as the trainer saves them (burn names, BatchNorm statistics too).
fn fixture_tensors() -> HashMap<String, NamedTensor> {
    let b = simlearn::models::backbone::BackboneConfig {
        arch: simlearn::models::backbone::Architecture::Resnet18,
        width: 8,
        weights: Some(fixture_weights()),
        ..Default::default()
    }
    .init(None, &burn::prelude::Device::flex())
    .unwrap();
    let p = temp_dir("fixture").join("b.safetensors");
    b.save_safetensors(&p).unwrap();
    load_safetensors(&p).unwrap().0
}

fn stage_of(name: &str) -> usize {
    for (s, prefix) in ["layer1.", "layer2.", "layer3.", "layer4."]
        .iter()
        .enumerate()
    {
        if name.starts_with(prefix) {
            return s + 1;
        }
    }
    0 // conv1, bn1: the stem
}

#[test]
fn partial_fine_tuning_changes_no_frozen_weight_and_trains_the_rest() {
    let root = temp_dir("data-partial");
    write_folder(&root, 8, 4);
    let fixture = fixture_tensors();
    for train_stages in [0usize, 2] {
        let out = temp_dir(&format!("run-partial-{train_stages}"));
        let cfg = config(&root, 2, &format!("train_stages = {train_stages}"));
        let r = train_images(&cfg, Some(&out), false, &mut Silent).unwrap();
        assert!(r.history.iter().all(|e| e.loss.is_finite()));
        let (last, _) = load_safetensors(&out.join("backbone-last.safetensors")).unwrap();
        assert_eq!(last.len(), fixture.len());
        let frozen = 5 - train_stages;
        let mut changed_trained = 0;
        for (k, t) in &last {
            if stage_of(k) < frozen {
                assert_eq!(t.data, fixture[k].data, "frozen tensor {k} changed");
            } else if t.data != fixture[k].data {
                changed_trained += 1;
            }
        }
        if train_stages == 0 {
            assert_eq!(changed_trained, 0);
        } else {
            // Every trained conv weight moves (BatchNorm statistics are frozen by the default
            // policy, so only parameters can).
            for k in [
                "layer3.0.conv1.weight",
                "layer4.1.conv2.weight",
                "layer4.1.bn2.gamma",
            ] {
                assert!(last.contains_key(k), "{k} not saved: {:?}", last.keys());
                assert_ne!(
                    last[k].data, fixture[k].data,
                    "trained tensor {k} did not change"
                );
            }
        }
        // The head trains in both cases.
        let (head, _) = load_safetensors(&out.join("last.safetensors")).unwrap();
        assert!(head.keys().any(|k| k.starts_with("head.")));
        assert!(r.history[1].loss != r.history[0].loss);
    }
}

/// Records the notes the trainer sends (cache size, reuse, rebuild).
#[derive(Default)]
struct Notes(Vec<String>);
impl TrainObserver for Notes {
    fn note(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

fn losses(r: &simlearn::train::images::ImageTrainOutcome) -> Vec<f64> {
    r.history.iter().map(|e| e.loss).collect()
}

#[test]
fn trunk_cache_gives_the_uncached_loss_and_resumes_exactly() {
    let root = temp_dir("data-cache");
    write_folder(&root, 8, 4);
    let extra = "train_stages = 1\nviews = 3";
    // Without the cache: every step runs the frozen stages on the view the seed picks.
    let plain = train_images(&config(&root, 3, extra), None, false, &mut Silent).unwrap();
    // An f32 cache holds exactly the trunk's outputs: the same losses, epoch after epoch.
    let out32 = temp_dir("run-cache-f32");
    let cfg32 = config(
        &root,
        3,
        &format!("{extra}\ncache = true\ncache_dtype = \"f32\""),
    );
    let cached32 = train_images(&cfg32, Some(&out32), false, &mut Silent).unwrap();
    for (a, b) in losses(&plain).iter().zip(losses(&cached32)) {
        assert!((a - b).abs() <= 1e-6 * a.abs(), "f32 cache: {a} vs {b}");
    }
    assert!(out32.join("trunk-cache/trunk.f32").is_file());
    // The default f16 cache rounds the trunk outputs to 11 bits: the first epoch's loss agrees
    // to that precision (later epochs drift apart as the rounding compounds through training).
    let out = temp_dir("run-cache");
    let mut notes = Notes::default();
    let cached_cfg = config(&root, 3, &format!("{extra}\ncache = true"));
    let cached = train_images(&cached_cfg, Some(&out), false, &mut notes).unwrap();
    let (a, b) = (losses(&plain)[0], losses(&cached)[0]);
    assert!(
        (a - b).abs() <= 2e-3 * a.abs(),
        "f16 cache, epoch 0: {a} vs {b}"
    );
    // The size was reported before the cache was built, and matches the file.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("trunk-cache/manifest.json")).unwrap())
            .unwrap();
    let shape: Vec<u64> = manifest["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // 16 training images (class-disjoint half of 8 classes × 4), 3 views, layer4's input:
    // layer3 output of a 32-pixel crop with width 8: 32 channels at 2 × 2.
    assert_eq!(shape, vec![32, 2, 2]);
    let bytes = 16 * 3 * 32 * 2 * 2 * 2;
    assert_eq!(manifest["bytes"].as_u64().unwrap(), bytes);
    assert_eq!(
        fs::metadata(out.join("trunk-cache/trunk.f16"))
            .unwrap()
            .len(),
        bytes
    );
    assert!(
        notes
            .0
            .iter()
            .any(|n| n.contains("trunk cache:") && n.contains("GiB")),
        "{:?}",
        notes.0
    );

    // Resume: two epochs, then the third, reusing the cache: the same checkpoint as three
    // straight.
    let out_b = temp_dir("run-cache-resume");
    let two = config(&root, 2, &format!("{extra}\ncache = true"));
    train_images(&two, Some(&out_b), false, &mut Silent).unwrap();
    let mut notes_b = Notes::default();
    train_images(&cached_cfg, Some(&out_b), true, &mut notes_b).unwrap();
    assert!(
        notes_b.0.iter().any(|n| n.contains("reusing")),
        "{:?}",
        notes_b.0
    );
    for f in ["last.safetensors", "backbone-last.safetensors"] {
        let (a, _) = load_safetensors(&out.join(f)).unwrap();
        let (b, _) = load_safetensors(&out_b.join(f)).unwrap();
        assert_eq!(a.len(), b.len());
        for (k, t) in &a {
            assert_eq!(t.data, b[k].data, "{f}: {k} differs after resume");
        }
    }

    // Changing a training image invalidates the cache.
    let train_img = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .min()
        .unwrap()
        .join("0.png");
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_image(&train_img, 7, 9);
    let mut notes_c = Notes::default();
    let one = config(&root, 1, &format!("{extra}\ncache = true"));
    train_images(&one, Some(&out), false, &mut notes_c).unwrap();
    assert!(
        notes_c.0.iter().any(|n| n.contains("rebuilding")),
        "{:?}",
        notes_c.0
    );
}

fn validation(r: &simlearn::train::images::ImageTrainOutcome) -> Vec<(String, f64)> {
    r.history
        .iter()
        .flat_map(|e| e.validation.clone().expect("validated every epoch"))
        .collect()
}

#[test]
fn validation_through_the_cache_gives_the_uncached_metrics() {
    let root = temp_dir("data-valcache");
    write_folder(&root, 8, 4);
    let extra = "train_stages = 2\nviews = 2";
    let plain = train_images(&config(&root, 2, extra), None, false, &mut Silent).unwrap();
    let out = temp_dir("run-valcache");
    let cfg = config(
        &root,
        2,
        &format!("{extra}\ncache = true\ncache_dtype = \"f32\""),
    );
    let mut notes = Notes::default();
    let cached = train_images(&cfg, Some(&out), false, &mut notes).unwrap();
    // The validation half (4 classes × 4 images) went through the frozen stages once, in f32.
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("trunk-cache/val.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["images"].as_u64(), Some(16));
    assert_eq!(manifest["dtype"].as_str(), Some("f32"));
    assert!(out.join("trunk-cache/val.f32").is_file());
    assert!(
        notes.0.iter().any(|n| n.contains("trunk cache (val):")),
        "{:?}",
        notes.0
    );
    let (a, b) = (validation(&plain), validation(&cached));
    assert_eq!(a.len(), b.len());
    assert!(a.len() >= 2 * 5, "{a:?}");
    for ((ka, va), (kb, vb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert!(
            (va - vb).abs() <= 1e-6,
            "{ka}: uncached {va} vs cached {vb}"
        );
    }
    // A second run reuses both caches.
    let mut again = Notes::default();
    let out2 = temp_dir("run-valcache-2");
    let mut cfg2 = cfg.clone();
    cfg2.backbone.as_mut().unwrap().cache_dir = Some(out.join("trunk-cache"));
    let r2 = train_images(&cfg2, Some(&out2), false, &mut again).unwrap();
    assert_eq!(
        again.0.iter().filter(|n| n.contains("reusing")).count(),
        2,
        "{:?}",
        again.0
    );
    assert!(!out2.join("trunk-cache").exists());
    assert_eq!(validation(&r2), b);
}

#[test]
fn seeds_with_one_views_seed_share_one_cache_and_keep_their_own_runs() {
    let root = temp_dir("data-shared");
    write_folder(&root, 8, 4);
    let shared = temp_dir("shared-cache");
    let extra = format!(
        "train_stages = 1\nviews = 3\nviews_seed = 11\ncache = true\ncache_dtype = \"f32\"\ncache_dir = \"{}\"",
        shared.display()
    );
    let with_seed = |seed: u64, backbone: &str| {
        let mut c = config(&root, 2, backbone);
        c.train.seed = seed;
        c
    };
    let mut first = Notes::default();
    let a = train_images(
        &with_seed(3, &extra),
        Some(&temp_dir("run-shared-a")),
        false,
        &mut first,
    )
    .unwrap();
    assert!(
        !first.0.iter().any(|n| n.contains("reusing")),
        "{:?}",
        first.0
    );
    let mut second = Notes::default();
    let b = train_images(
        &with_seed(4, &extra),
        Some(&temp_dir("run-shared-b")),
        false,
        &mut second,
    )
    .unwrap();
    assert!(
        second
            .0
            .iter()
            .any(|n| n.starts_with("trunk cache: reusing")),
        "{:?}",
        second.0
    );
    // Seed 4 on the shared cache trains as seed 4 without any cache, on the same views.
    let plain_b = train_images(
        &with_seed(4, "train_stages = 1\nviews = 3\nviews_seed = 11"),
        None,
        false,
        &mut Silent,
    )
    .unwrap();
    for (x, y) in losses(&plain_b).iter().zip(losses(&b)) {
        assert!((x - y).abs() <= 1e-6 * x.abs(), "shared cache: {x} vs {y}");
    }
    // The seed still matters: another initialisation, other batches.
    assert_ne!(losses(&a), losses(&b));
    // Another views seed is another set of views: the shared cache is rebuilt.
    let mut third = Notes::default();
    let other = with_seed(4, &extra.replace("views_seed = 11", "views_seed = 12"));
    train_images(&other, Some(&temp_dir("run-shared-c")), false, &mut third).unwrap();
    assert!(
        third.0.iter().any(|n| n.contains("rebuilding")),
        "{:?}",
        third.0
    );
}

#[test]
fn partial_fine_tuning_config_errors_name_the_key() {
    let root = temp_dir("data-errors");
    write_folder(&root, 4, 4);
    let cases = [
        ("train_stages = 6", "backbone.train_stages"),
        ("cache = true", "backbone.cache"),
        ("train_stages = 1\ncache = true", "backbone.cache"),
        ("views = 2\ncache = true", "backbone.cache"),
    ];
    for (extra, key) in cases {
        let out = temp_dir("run-errors");
        let e = train_images(&config(&root, 1, extra), Some(&out), false, &mut Silent)
            .err()
            .unwrap_or_else(|| panic!("{extra} was accepted"))
            .to_string();
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn report_of_image_runs_equals_their_validation_and_pairs_them() {
    use simlearn::report::{render, ReportOptions, ReportRun};
    let root = temp_dir("data-report");
    write_folder(&root, 8, 4);
    let extra = "train_stages = 2\nviews = 2";
    let mut runs = Vec::new();
    let mut wanted = Vec::new();
    for (name, backbone) in [
        ("plain", extra.to_string()),
        (
            "cached",
            format!("{extra}\ncache = true\ncache_dtype = \"f32\""),
        ),
    ] {
        let out = temp_dir(&format!("run-report-{name}"));
        let r = train_images(&config(&root, 2, &backbone), Some(&out), false, &mut Silent).unwrap();
        let best = r.best_epoch.expect("validated every epoch");
        wanted.push(r.history[best].validation.clone().unwrap());
        let mut notes = Notes::default();
        let run = ReportRun::load_images(&out, &burn::prelude::Device::flex(), &mut notes).unwrap();
        if name == "cached" {
            // The report embeds from the run's validation cache, as its validation did.
            assert!(
                notes.0.iter().any(|n| n.contains("reusing")),
                "{:?}",
                notes.0
            );
        }
        assert_eq!(run.test_paths.as_ref().map(Vec::len), Some(16));
        assert_eq!(run.trained_embeddings.rows(), 16);
        assert_ne!(run.trained_embeddings, run.untrained_embeddings);
        runs.push(run);
    }
    let out = temp_dir("report-images");
    let opts = ReportOptions {
        queries: 2,
        top_k: 3,
        ..ReportOptions::default()
    };
    let files = render(&runs, &out, &opts).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&files.json).unwrap()).unwrap();
    for (i, want) in wanted.iter().enumerate() {
        let metrics = json["runs"][i]["metrics"].as_array().unwrap();
        let mut matched = 0;
        for m in metrics {
            let name = m["name"].as_str().unwrap();
            if let Some(v) = want.get(name) {
                let got = m["value"].as_f64().unwrap();
                assert!(
                    (got - v).abs() <= 1e-6,
                    "run {i} {name}: report {got} vs validation {v}"
                );
                matched += 1;
            }
        }
        assert!(
            matched >= 4,
            "run {i}: {matched} metrics matched: {metrics:?}"
        );
        assert!(m_ci(&metrics[0]), "run {i}: no interval: {:?}", metrics[0]);
    }
    // Same images and labels: one test set, one paired comparison.
    assert_eq!(json["runs"][1]["test_set"].as_u64(), Some(0));
    assert_eq!(json["comparisons"].as_array().unwrap().len(), 1);
    // Retrieval grids are drawn from the image files.
    let grids: Vec<PathBuf> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-retrieval-random.svg"))
        .collect();
    assert_eq!(grids.len(), 2, "{grids:?}");
    for g in grids {
        assert!(fs::read_to_string(&g)
            .unwrap()
            .contains("data:image/png;base64,"));
    }
}

fn m_ci(m: &serde_json::Value) -> bool {
    m["ci"].as_array().is_some_and(|c| c.len() == 2)
}

#[test]
fn a_list_of_the_same_images_reuses_the_folder_cache_and_a_new_label_does_not_matter() {
    let root = temp_dir("data-listcache");
    write_folder(&root, 8, 4);
    let extra = "train_stages = 1\nviews = 2\ncache = true";
    let out = temp_dir("run-listcache-folder");
    train_images(&config(&root, 1, extra), Some(&out), false, &mut Silent).unwrap();
    // The same images in the same order as a list file, one training label changed (a label
    // flip, as the robustness benchmark makes): the frozen stages' outputs are unchanged.
    let mut lines = Vec::new();
    for c in 0..8 {
        for i in 0..4 {
            let label = if c == 0 && i == 0 { 1 } else { c };
            lines.push(format!("class{c:02}/{i}.png {label}"));
        }
    }
    let list = root.join("all.txt");
    fs::write(&list, lines.join("\n")).unwrap();
    let mut cfg = config(&root, 1, extra);
    let images = cfg.images.as_mut().unwrap();
    images.layout = simlearn::train::images::ImageLayout::List;
    images.list = Some(list);
    cfg.backbone.as_mut().unwrap().cache_dir = Some(out.join("trunk-cache"));
    let mut notes = Notes::default();
    let out2 = temp_dir("run-listcache-list");
    train_images(&cfg, Some(&out2), false, &mut notes).unwrap();
    assert_eq!(
        notes.0.iter().filter(|n| n.contains("reusing")).count(),
        2,
        "{:?}",
        notes.0
    );
    assert!(
        !notes.0.iter().any(|n| n.contains("rebuilding")),
        "{:?}",
        notes.0
    );
}
