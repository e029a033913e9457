//! Trainer behaviour on the embedded digits: learning helps on unseen classes, resume is exact,
//! a diverging run stops with the step and the loss terms, run folders are complete.

use std::path::PathBuf;

use burn::prelude::*;
use simlearn::data::digits;
use simlearn::train::checkpoint::{load_module, load_safetensors, module_tensors};
use simlearn::train::{embed, evaluate, train_class, Silent, TrainConfig, TrainError};

fn config(loss: &str, epochs: usize) -> TrainConfig {
    TrainConfig::from_toml(&format!(
        r#"
[data]
source = "digits"
[model]
hidden = [128]
output_dim = 32
[loss]
name = "{loss}"
[sampler]
batch_size = 80
samples_per_class = 16
tries = 6
[optim]
lr = 1e-3
[train]
epochs = {epochs}
eval_every = 1
"#
    ))
    .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("simlearn-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn contextual_and_contrastive_heads_beat_the_untrained_head_on_unseen_images() {
    // Held-out images of the training classes. (On the unseen classes 5-9 of digits, training
    // on five classes does not transfer: see the README's demo section.)
    let (seen, _) = digits().class_disjoint_split().unwrap();
    let (train, test) = seen.alternate_split().unwrap();
    let device = Device::flex();
    for loss in ["contextual", "contrastive"] {
        let cfg = config(loss, 4);
        let resolved = cfg.resolved(train.dim()).unwrap();
        let untrained = resolved.model.init(resolved.train.seed, &device).unwrap();
        let before = evaluate(&untrained, &test, &resolved.eval_config(), &device).unwrap();
        let out = train_class(&cfg, &train, Some(&test), None, false, &mut Silent).unwrap();
        let after = evaluate(&out.head, &test, &resolved.eval_config(), &device).unwrap();
        let (b, a) = (
            before.get("map_at_r").unwrap(),
            after.get("map_at_r").unwrap(),
        );
        assert!(a > b + 0.1, "{loss}: MAP@R {b:.4} before, {a:.4} after");
        assert_eq!(out.history.len(), 4);
        assert!(out.history.iter().all(|r| r.loss.is_finite()));
    }
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let (train, test) = digits().class_disjoint_split().unwrap();
    let straight = tmp("straight");
    let split = tmp("split");
    train_class(
        &config("contextual", 3),
        &train,
        Some(&test),
        Some(&straight),
        false,
        &mut Silent,
    )
    .unwrap();
    train_class(
        &config("contextual", 1),
        &train,
        Some(&test),
        Some(&split),
        false,
        &mut Silent,
    )
    .unwrap();
    let resumed = train_class(
        &config("contextual", 3),
        &train,
        Some(&test),
        Some(&split),
        true,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(resumed.history.len(), 3);

    let (a, _) = load_safetensors(&straight.join("last.safetensors")).unwrap();
    let (b, _) = load_safetensors(&split.join("last.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        assert_eq!(t, &b[name], "tensor {name} differs after resume");
    }
    let log_a = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let log_b = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(log_a.lines().count(), 3);
    assert_eq!(log_b.lines().count(), 3);
    for f in [
        "config.toml",
        "state.json",
        "best.safetensors",
        "last.safetensors",
    ] {
        assert!(straight.join(f).exists(), "{f} missing");
    }
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn checkpoint_round_trip_restores_the_same_embeddings() {
    let (train, test) = digits().class_disjoint_split().unwrap();
    let device = Device::flex();
    let dir = tmp("roundtrip");
    let out = train_class(
        &config("contrastive", 1),
        &train,
        Some(&test),
        Some(&dir),
        false,
        &mut Silent,
    )
    .unwrap();
    let fresh = config("contrastive", 1)
        .resolved(64)
        .unwrap()
        .model
        .init(99, &device)
        .unwrap();
    let (tensors, meta) = load_safetensors(&dir.join("best.safetensors")).unwrap();
    assert_eq!(
        meta.get("format").map(String::as_str),
        Some("simlearn-checkpoint")
    );
    let loaded = load_module(fresh, &tensors, "head.").unwrap();
    assert_eq!(module_tensors(&loaded, ""), module_tensors(&out.head, ""));
    let e1 = embed(&out.head, &test.features, &device);
    let e2 = embed(&loaded, &test.features, &device);
    assert_eq!(e1, e2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_run_stops_with_the_step_and_every_loss_term() {
    let (train, _) = digits().class_disjoint_split().unwrap();
    let mut cfg = config("contrastive", 3);
    cfg.optim.lr = 1e38;
    let err = train_class(&cfg, &train, None, None, false, &mut Silent).unwrap_err();
    let msg = err.to_string();
    // Either the loss value went non-finite (every term is printed) or the embeddings did and
    // the loss refused them; both name the step.
    match &err {
        TrainError::NonFinite { terms, .. } => assert!(terms.contains("total="), "{msg}"),
        TrainError::Diverged { cause, .. } => assert!(cause.contains("NaN"), "{msg}"),
        other => panic!("unexpected error {other}"),
    }
    assert!(msg.contains("step"), "{msg}");
}

#[test]
fn config_errors_name_the_key() {
    let err = TrainConfig::from_toml("[optim]\nlearning_rate = 1.0\n").unwrap_err();
    assert!(err.to_string().contains("learning_rate"), "{err}");
    let (train, _) = digits().class_disjoint_split().unwrap();
    let mut cfg = config("contextual", 1);
    cfg.sampler.batch_size = 81;
    let err = train_class(&cfg, &train, None, None, false, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let mut cfg = config("contextual", 1);
    cfg.loss = TrainConfig::from_toml("[loss]\nname = \"contextual\"\nk = 500\n")
        .unwrap()
        .loss;
    let err = train_class(&cfg, &train, None, None, false, &mut Silent).unwrap_err();
    assert!(
        err.to_string()
            .contains("fewer than the contextual loss's k = 500"),
        "{err}"
    );
    let mut cfg = config("contextual", 1);
    cfg.train.device = "tpu".into();
    let err = train_class(&cfg, &train, None, None, false, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("train.device"), "{err}");
    let mut cfg = config("contextual", 1);
    cfg.model.input_dim = 10;
    let err = train_class(&cfg, &train, None, None, false, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("model.input_dim"), "{err}");
}
