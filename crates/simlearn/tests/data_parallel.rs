//! Data-parallel training (`train::parallel`): two replicas whose losses see the gathered global
//! batch, gradients summed, equal one device training on the concatenated batch.
//!
//! burn's flex backend has one device (`FlexDevice` is a unit struct), so the two devices here
//! are two replicas on it: each has its own autodiff leaves and its own optimiser, and they meet
//! only through the collectives, exactly as on two GPUs. The wgpu suite (`tests/wgpu.rs`) runs
//! the same check on two lavapipe devices.

use simlearn::data::digits;
use simlearn::train::checkpoint::module_tensors;
use simlearn::train::{evaluate, train_class, Silent, TrainConfig, TrainError};

fn config(loss: &str, devices: &[&str], epochs: usize, max_batches: usize) -> TrainConfig {
    let devices = devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    TrainConfig::from_toml(&format!(
        r#"
[data]
source = "digits"
[model]
hidden = [64]
output_dim = 32
[loss]
name = "{loss}"
[sampler]
batch_size = 40
samples_per_class = 8
tries = {max_batches}
max_batches = {max_batches}
[optim]
lr = 1e-3
[train]
epochs = {epochs}
eval_every = 1
devices = [{devices}]
"#
    ))
    .unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn two_devices_equal_one_device_on_the_concatenated_batch_after_three_steps() {
    let (train, _) = digits().class_disjoint_split().unwrap();
    for loss in ["contextual", "contrastive", "multi_similarity"] {
        let one = train_class(
            &config(loss, &["flex"], 1, 3),
            &train,
            None,
            None,
            false,
            &mut Silent,
        )
        .unwrap();
        let two = train_class(
            &config(loss, &["flex", "flex"], 1, 3),
            &train,
            None,
            None,
            false,
            &mut Silent,
        )
        .unwrap();
        assert_eq!(one.history[0].steps, 3, "{loss}");
        assert_eq!(two.history[0].steps, 3, "{loss}");
        let (a, b) = (
            module_tensors(&one.head, "head."),
            module_tensors(&two.head, "head."),
        );
        assert_eq!(a.len(), b.len());
        let mut moved = 0f32;
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.name, y.name);
            let d = max_rel_diff(&x.data, &y.data);
            assert!(d < 1e-5, "{loss}: {} differs by {d:e} (relative)", x.name);
            moved = moved.max(max_rel_diff(&x.data, &vec![0.0; x.data.len()]));
        }
        assert!(moved > 0.0, "{loss}: no parameter is non-zero");
        let (la, lb) = (one.history[0].loss, two.history[0].loss);
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs(),
            "{loss}: mean loss {la} on one device, {lb} on two"
        );
    }
}

#[test]
fn two_device_run_gives_the_one_device_metrics() {
    // A whole run (3 epochs, validation each epoch) on the digits head config: the validation
    // metrics of two devices equal one device's with the same global batch, to f32 sums.
    let (train, test) = digits().class_disjoint_split().unwrap();
    let one = train_class(
        &config("contextual", &["flex"], 3, 4),
        &train,
        Some(&test),
        None,
        false,
        &mut Silent,
    )
    .unwrap();
    let two = train_class(
        &config("contextual", &["flex", "flex"], 3, 4),
        &train,
        Some(&test),
        None,
        false,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(one.best_epoch, two.best_epoch);
    for (r1, r2) in one.history.iter().zip(&two.history) {
        let (v1, v2) = (
            r1.validation.as_ref().unwrap(),
            r2.validation.as_ref().unwrap(),
        );
        for (k, a) in v1 {
            let b = v2[k];
            assert!((a - b).abs() <= 1e-5, "epoch {}: {k} {a} vs {b}", r1.epoch);
        }
    }
    // The trained head is not the untrained one (the comparison above is not vacuous).
    let cfg = config("contextual", &["flex"], 3, 4)
        .resolved(train.dim())
        .unwrap();
    let device = cfg.device().unwrap();
    let untrained = cfg.model.init(cfg.train.seed, &device).unwrap();
    let before = evaluate(&untrained, &test, &cfg.eval_config(), &device).unwrap();
    let after = &two.history.last().unwrap().validation.as_ref().unwrap()["map_at_r"];
    assert!(
        (before.get("map_at_r").unwrap() - after).abs() > 1e-3,
        "training changed nothing"
    );
}

#[test]
fn bad_device_settings_fail_with_the_setting_named() {
    let (train, _) = digits().class_disjoint_split().unwrap();
    let run = |cfg: TrainConfig| train_class(&cfg, &train, None, None, false, &mut Silent);
    let err = |e: Result<_, TrainError>| e.map(drop).expect_err("an error").to_string();

    let e = err(run(config("contrastive", &["flex", "tpu:0"], 1, 1)));
    assert!(e.contains("train.devices[1]") && e.contains("tpu:0"), "{e}");

    let mut cfg = config("contrastive", &["flex", "flex"], 1, 1);
    cfg.train.collective = "nccl".into();
    let e = err(run(cfg));
    assert!(e.contains("train.collective"), "{e}");

    // burn 0.22's collectives exist only on CUDA: refused by name, not a panic inside burn.
    let mut cfg = config("contrastive", &["flex", "flex"], 1, 1);
    cfg.train.collective = "burn".into();
    let e = err(run(cfg));
    assert!(e.contains("train.collective") && e.contains("CUDA"), "{e}");

    let e = err(run(config("proxy_anchor", &["flex", "flex"], 1, 1)));
    assert!(e.contains("train.devices") && e.contains("proxies"), "{e}");

    #[cfg(not(feature = "wgpu"))]
    {
        let e = err(run(config("contrastive", &["flex", "wgpu:cpu"], 1, 1)));
        assert!(e.contains("train.devices[1]") && e.contains("wgpu"), "{e}");
    }
}

#[test]
fn anchor_rows_losses_restrict_the_batch_loss_to_their_rows() {
    use burn::prelude::*;
    use simlearn::losses::registry::LossConfig;
    use simlearn::losses::ClassLoss;
    let data = digits();
    let labels: Vec<i64> = data.class_labels().unwrap()[..40].to_vec();
    let values: Vec<f32> = (0..40)
        .flat_map(|i| data.features.row(i).to_vec())
        .collect();
    let d = data.dim();
    let device = Device::flex();
    let x = || Tensor::<2>::from_data(TensorData::new(values.clone(), [40, d]), &device);
    let value = |o: simlearn::losses::LossOutput| o.total.into_scalar::<f64>();
    for name in ["contrastive", "multi_similarity"] {
        let cfg: LossConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
        let loss = cfg.init(10, d, &device).unwrap();
        let whole = value(loss.forward(x(), &labels).unwrap());
        let all_rows = value(loss.forward_anchors(x(), &labels, 0..40).unwrap());
        assert!(
            (whole - all_rows).abs() <= 1e-6 * whole.abs(),
            "{name}: {whole} vs {all_rows}"
        );
        let halves = [0..20, 20..40].map(|r| value(loss.forward_anchors(x(), &labels, r).unwrap()));
        if name == "multi_similarity" {
            // A mean over anchors: equal shards average to the batch's loss.
            let mean = (halves[0] + halves[1]) / 2.0;
            assert!(
                (whole - mean).abs() <= 1e-6 * whole.abs(),
                "{whole} vs {mean}"
            );
        }
        assert!(
            halves[0] != halves[1],
            "{name}: the rows are not taken into account"
        );
        let e = loss
            .forward_anchors(x(), &labels, 30..50)
            .map(drop)
            .expect_err("rows outside the batch")
            .to_string();
        assert!(e.contains("30..50"), "{e}");
    }
    let cfg: LossConfig = toml::from_str("name = \"contextual\"").unwrap();
    let e = cfg
        .init(10, d, &device)
        .unwrap()
        .forward_anchors(x(), &labels, 0..20)
        .map(drop)
        .expect_err("contextual has no anchor-rows form")
        .to_string();
    assert!(e.contains("contextual") && e.contains("exact"), "{e}");
}

#[test]
fn local_gather_trains_on_the_anchors_of_each_device() {
    let (train, _) = digits().class_disjoint_split().unwrap();
    let run = |devices: &[&str], gather: &str, batches: usize| {
        let mut cfg = config("multi_similarity", devices, 1, batches);
        cfg.train.gather = gather.into();
        train_class(&cfg, &train, None, None, false, &mut Silent).unwrap()
    };
    // First step: the devices' anchor losses average to the global batch's loss.
    let (one, local) = (
        run(&["flex"], "exact", 1),
        run(&["flex", "flex"], "local", 1),
    );
    let (a, b) = (one.history[0].loss, local.history[0].loss);
    assert!(
        (a - b).abs() <= 1e-5 * a.abs(),
        "first-step loss {a} vs {b}"
    );
    // …but the efficient gradient is not the exact one: the heads part after a step.
    let exact = run(&["flex", "flex"], "exact", 1);
    let (x, y, z) = (
        module_tensors(&one.head, "head."),
        module_tensors(&local.head, "head."),
        module_tensors(&exact.head, "head."),
    );
    let differs = x
        .iter()
        .zip(&y)
        .any(|(p, q)| max_rel_diff(&p.data, &q.data) > 1e-6);
    assert!(differs, "local gather gave the exact gradient");
    assert!(x
        .iter()
        .zip(&z)
        .all(|(p, q)| max_rel_diff(&p.data, &q.data) < 1e-5));
    // The contextual hybrid has no anchor-rows form: refused with the setting named.
    let mut cfg = config("contextual", &["flex", "flex"], 1, 1);
    cfg.train.gather = "local".into();
    let e = train_class(&cfg, &train, None, None, false, &mut Silent)
        .map(drop)
        .expect_err("contextual with local gather")
        .to_string();
    assert!(e.contains("train.gather"), "{e}");
    let mut cfg = config("contextual", &["flex", "flex"], 1, 1);
    cfg.train.gather = "all".into();
    let e = train_class(&cfg, &train, None, None, false, &mut Silent)
        .map(drop)
        .expect_err("unknown gather")
        .to_string();
    assert!(e.contains("train.gather"), "{e}");
}
