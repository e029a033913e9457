//! Image fine-tuning and embedding on a tiny generated image folder with the narrow ResNet-18
//! fixture (`tests/fixtures/backbones/resnet18_w8.pth`), and the paper recipe configs.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use image::{Rgb, RgbImage};
use simlearn::data::augment::{LoaderConfig, Normalize, Pipeline};
use simlearn::data::images::ImageDataset;
use simlearn::models::backbone::{Architecture, BackboneConfig};
use simlearn::train::checkpoint::load_safetensors;
use simlearn::train::images::{embed_images, train_images};
use simlearn::train::{Silent, TrainConfig, TrainError};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-imgtrain-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// `classes` folders of `per_class` 40 × 40 PNGs; each class has its own colour and stripe
/// period, each image its own phase, so classes are separable but images differ.
fn write_folder(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = RgbImage::from_fn(40, 40, |x, y| {
                let stripe = ((x + y + i as u32 * 3) / (2 + c as u32 % 4)) % 2;
                Rgb([
                    (c * 40 % 256) as u8,
                    if stripe == 1 { 220 } else { 30 },
                    ((c * 97 + i * 11) % 256) as u8,
                ])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

fn fixture_weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones/resnet18_w8.pth")
}

fn config(root: &Path, epochs: usize) -> TrainConfig {
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
pooling = "avg"

[model]
output_dim = 16

[loss]
name = "contrastive"

[sampler]
batch_size = 8
samples_per_class = 4

[optim]
lr = 1e-3

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

#[test]
fn fine_tuning_writes_the_run_folder_and_resumes_exactly() {
    let root = temp_dir("data");
    write_folder(&root, 8, 4);
    let out_a = temp_dir("run-a");
    let straight = train_images(&config(&root, 3), Some(&out_a), false, &mut Silent).unwrap();
    assert_eq!(straight.history.len(), 3);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "best.safetensors",
        "last.safetensors",
        "backbone-best.safetensors",
        "backbone-last.safetensors",
        "state.json",
    ] {
        assert!(out_a.join(f).is_file(), "{f} missing");
    }
    let lines = fs::read_to_string(out_a.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    // Validation is the class-disjoint half (4 classes), with R@k and MAP@R.
    let v = straight.history[2].validation.as_ref().unwrap();
    assert!(v.contains_key("map_at_r") && v.contains_key("recall_at_1"));
    assert!(straight.history.iter().all(|r| r.loss.is_finite()));
    // The backbone trains too: its last weights differ from the fixture's.
    let (last, _) = load_safetensors(&out_a.join("backbone-last.safetensors")).unwrap();
    let (first, _) = {
        let b = BackboneConfig {
            arch: Architecture::Resnet18,
            width: 8,
            weights: Some(fixture_weights()),
            ..BackboneConfig::default()
        }
        .init(None, &Device::flex())
        .unwrap();
        let p = temp_dir("fixture-copy").join("b.safetensors");
        b.save_safetensors(&p).unwrap();
        load_safetensors(&p).unwrap()
    };
    let w = "conv1.weight";
    assert_ne!(
        last[w].data, first[w].data,
        "backbone weights did not change"
    );

    // Two epochs, then resume for the third: the same final checkpoint as three straight.
    let out_b = temp_dir("run-b");
    train_images(&config(&root, 2), Some(&out_b), false, &mut Silent).unwrap();
    let resumed = train_images(&config(&root, 3), Some(&out_b), true, &mut Silent).unwrap();
    assert_eq!(resumed.history.len(), 3);
    let (a, _) = load_safetensors(&out_a.join("last.safetensors")).unwrap();
    let (b, _) = load_safetensors(&out_b.join("last.safetensors")).unwrap();
    assert_eq!(a.keys().len(), b.keys().len());
    for (k, t) in &a {
        assert_eq!(t.data, b[k].data, "{k} differs after resume");
    }
    let (ba, _) = load_safetensors(&out_a.join("backbone-last.safetensors")).unwrap();
    let (bb, _) = load_safetensors(&out_b.join("backbone-last.safetensors")).unwrap();
    for (k, t) in &ba {
        assert_eq!(t.data, bb[k].data, "backbone {k} differs after resume");
    }
}

#[test]
fn embed_images_gives_one_finite_row_per_image() {
    let root = temp_dir("embed");
    write_folder(&root, 3, 5);
    let ds = ImageDataset::from_folder(&root).unwrap();
    let device = Device::flex();
    let backbone = BackboneConfig {
        arch: Architecture::Resnet18,
        width: 8,
        weights: Some(fixture_weights()),
        ..BackboneConfig::default()
    }
    .init(None, &device)
    .unwrap();
    let pipeline = Pipeline {
        normalize: Normalize::ImageNet,
        ..Pipeline::eval(36, 32)
    };
    let mut calls = Vec::new();
    let (m, rows) = embed_images(
        &backbone,
        None,
        Arc::new(ds.clone()),
        pipeline,
        LoaderConfig::default(),
        4,
        &device,
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    assert_eq!((m.rows(), m.cols()), (15, 64));
    assert_eq!(rows, (0..15).collect::<Vec<_>>());
    assert!(m.data().iter().all(|v| v.is_finite()));
    assert_eq!(calls.last(), Some(&(15, 15)));
    assert_eq!(calls.len(), 4); // batches of 4, 4, 4, 3
                                // The batch size does not change the features.
    let (m1, _) = embed_images(
        &backbone,
        None,
        Arc::new(ds),
        pipeline,
        LoaderConfig::default(),
        15,
        &device,
        &mut |_, _| {},
    )
    .unwrap();
    for (a, b) in m.data().iter().zip(m1.data()) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn a_corrupt_image_stops_fine_tuning_with_its_file_name() {
    let root = temp_dir("corrupt");
    write_folder(&root, 8, 4);
    fs::write(root.join("class03/2.png"), b"this is not a png").unwrap();
    let out = temp_dir("corrupt-run");
    let err = train_images(&config(&root, 1), Some(&out), false, &mut Silent).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err}");
    assert!(err.to_string().contains("class03/2.png"), "{err}");
}

#[test]
fn image_config_errors_name_the_key() {
    let root = temp_dir("cfgerr");
    write_folder(&root, 8, 4);
    let mut cfg = config(&root, 1);
    cfg.images = None;
    let e = train_images(&cfg, None, false, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("[images]"), "{e}");
    let mut cfg = config(&root, 1);
    cfg.sampler.batch_size = 10; // not a multiple of samples_per_class = 4
    let e = train_images(&cfg, None, false, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch_size"), "{e}");
    let mut cfg = config(&root, 1);
    cfg.backbone.as_mut().unwrap().weights = Some(root.join("missing.pth"));
    let e = train_images(&cfg, None, false, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pth"), "{e}");
}

/// Every shipped config parses (unknown keys are errors), including the paper recipes.
#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut seen = 0;
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "toml") {
                let text = fs::read_to_string(&p).unwrap();
                TrainConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                seen += 1;
            }
        }
    }
    assert!(seen >= 10, "only {seen} configs found");
    let cub = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/paper/cub200-contextual.toml"),
    )
    .unwrap();
    let cub = TrainConfig::from_toml(&cub).unwrap();
    assert_eq!(cub.optim.lr, 8e-5);
    assert_eq!(cub.optim.backbone_lr_mult, 0.5);
    assert_eq!(cub.optim.milestones, vec![15, 30, 45]);
    assert_eq!(cub.train.epochs, 80);
    assert_eq!(cub.model.output_dim, 512);
}

/// Every tensor of a fine-tuned model (backbone and head), by name.
fn model_tensors(
    model: &simlearn::train::images::ImageModel,
    dir: &Path,
) -> Vec<(String, Vec<f32>)> {
    let p = dir.join("backbone.safetensors");
    model.backbone.save_safetensors(&p).unwrap();
    let (backbone, _) = load_safetensors(&p).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = backbone.into_iter().map(|(k, t)| (k, t.data)).collect();
    out.extend(
        simlearn::train::checkpoint::module_tensors(&model.head, "head.")
            .into_iter()
            .map(|t| (t.name, t.data)),
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn assert_close(what: &str, a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, x), (_, y)) in a.iter().zip(b) {
        let scale = x.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale;
        assert!(d < tol, "{what}: {name} differs by {d:e} (relative)");
    }
}

#[test]
fn two_devices_fine_tune_backbone_and_head_like_one_and_resume_exactly() {
    // Backbone (every stage trained) and head on two replicas, the global batch of 8 split 4 + 4:
    // after two epochs every weight equals one device's on the same batches; a two-device run
    // stopped after one epoch and resumed (optimiser state forked to both replicas from the
    // checkpoint) ends where the straight two-device run does.
    let root = temp_dir("dp-data");
    write_folder(&root, 8, 4);
    let with_devices = |epochs: usize, devices: &str| {
        let mut cfg = config(&root, epochs);
        cfg.train.devices = devices.split(',').map(String::from).collect();
        cfg.train.eval_every = 0;
        cfg
    };
    let scratch = temp_dir("dp-scratch");
    let one = train_images(&with_devices(2, "flex"), None, false, &mut Silent).unwrap();
    let two = train_images(&with_devices(2, "flex,flex"), None, false, &mut Silent).unwrap();
    assert_eq!(one.history[1].steps, two.history[1].steps);
    let (a, b) = (
        model_tensors(&one.model, &scratch),
        model_tensors(&two.model, &scratch),
    );
    // One device sums each weight's gradient over 8 images in one convolution GEMM, two devices
    // over 4 + 4: f32 rounding apart. Adam's step m̂/(√v̂ + ε) passes a weight whose gradient
    // nearly cancels over the batch at up to lr whatever its size, so such a weight carries the
    // rounding difference at up to lr × its relative error: measured 1.7e-5 of the largest weight
    // of a stage after 4 steps (a wrong reduction — a missing device, a mean for a sum — is
    // off by 1e-2 or more).
    assert_close("two devices vs one", &a, &b, 1e-4);
    let first = BackboneConfig {
        arch: Architecture::Resnet18,
        width: 8,
        weights: Some(fixture_weights()),
        ..BackboneConfig::default()
    }
    .init(None, &Device::flex())
    .unwrap();
    let p = scratch.join("fixture.safetensors");
    first.save_safetensors(&p).unwrap();
    let (fixture, _) = load_safetensors(&p).unwrap();
    let conv1 = &a.iter().find(|(k, _)| k == "conv1.weight").unwrap().1;
    assert_ne!(
        conv1, &fixture["conv1.weight"].data,
        "the backbone did not train"
    );

    let run = temp_dir("dp-resume");
    train_images(
        &with_devices(1, "flex,flex"),
        Some(&run),
        false,
        &mut Silent,
    )
    .unwrap();
    let resumed =
        train_images(&with_devices(2, "flex,flex"), Some(&run), true, &mut Silent).unwrap();
    assert_close(
        "resumed two-device run",
        &b,
        &model_tensors(&resumed.model, &scratch),
        1e-6,
    );
}
