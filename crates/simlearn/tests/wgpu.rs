//! The wgpu device path against flex, the CPU reference: every loss's value and gradient, the
//! contextual hybrid with both kernels, a short head training run, a backbone's forward and
//! backward, and data-parallel training on two wgpu devices.
//!
//! Built only with `--features wgpu`; `.ci/run` runs it on Mesa's lavapipe (software Vulkan):
//! `cargo test --release -p simlearn --features wgpu --test wgpu`. Without a Vulkan adapter the
//! tests fail (burn cannot create the device) rather than skip: CI installs one.
//!
//! Tolerances. The device reduces in a different order (tree reductions in workgroups, its own
//! GEMM tiling) and evaluates exp / log / sqrt to the Vulkan precision rules (a few ulp) instead
//! of the host libm, so values and gradients differ from flex by rounding only: for a sum of
//! `m` terms that is about `√m · 2⁻²⁴` relative in the typical case and `m · 2⁻²⁴` in the worst.
//! The largest reductions here are the `n² = 4096` pair terms of a 64-row batch (worst case
//! 2.4e-4 relative, typical 4e-6) and the 64 · 3 · 3-long convolution sums. We assert 1e-4 of
//! the largest magnitude for losses and gradients (measured: see the assertion messages; a
//! wrong op is off by 1e-2 or more), 1e-4 for features, and 1e-5 for parameters after a few
//! optimiser steps (Adam's normalised steps shrink gradient differences).
#![cfg(feature = "wgpu")]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::DeviceKind;
use simlearn::data::digits;
use simlearn::losses::continuous::ContinuousLossConfig;
use simlearn::losses::registry::LossConfig;
use simlearn::losses::{ClassLoss, ContinuousLoss};
use simlearn::models::backbone::Architecture;
use simlearn::models::BackboneConfig;
use simlearn::train::checkpoint::module_tensors;
use simlearn::train::{train_class, Silent, TrainConfig};
use simlearn_eval::io::{parse_npy, NpyData};

fn flex() -> Device {
    Device::flex().autodiff()
}

fn gpu() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice).autodiff()
}

/// Clustered embeddings: `classes` centres, `per` noisy members each (deterministic LCG), so
/// that neighbourhoods and mined pairs are well separated from ties.
fn batch(classes: usize, per: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let centres: Vec<f32> = (0..classes * d).map(|_| next()).collect();
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for c in 0..classes {
        for _ in 0..per {
            for j in 0..d {
                values.push(centres[c * d + j] + 0.6 * next());
            }
            labels.push(c as i64);
        }
    }
    (values, labels)
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// Largest difference relative to the larger operand's largest magnitude.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    d / max_abs(a).max(max_abs(b)).max(1e-20)
}

/// Value and embedding gradient of a class loss on `device`.
fn class_loss_on(
    loss: &dyn ClassLoss,
    values: &[f32],
    n: usize,
    d: usize,
    labels: &[i64],
    device: &Device,
) -> (f32, Vec<f32>) {
    let x = Tensor::<2>::from_data(TensorData::new(values.to_vec(), [n, d]), device).require_grad();
    let out = loss.forward(x.clone(), labels).unwrap().total;
    let value = out.clone().into_scalar::<f32>();
    let grads = out.backward();
    let g = x.grad(&grads).expect("the embeddings receive a gradient");
    (value, host(g))
}

const CLASS_LOSSES: [&str; 11] = [
    "contextual",
    "contrastive",
    "triplet",
    "multi_similarity",
    "ntxent",
    "supcon",
    "smooth_ap",
    "fastap",
    "proxy_nca",
    "proxy_anchor",
    "normalized_softmax",
];

#[test]
fn every_class_loss_matches_flex_on_the_device() {
    let (classes, per, d) = (8, 8, 16);
    let n = classes * per;
    let (values, labels) = batch(classes, per, d, 7);
    let mut configs: Vec<(String, LossConfig)> = CLASS_LOSSES
        .iter()
        .map(|name| {
            let cfg: LossConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
            (name.to_string(), cfg)
        })
        .collect();
    // Both contextual kernels: `fused` reads S back to the host, `graph` stays on the device.
    configs.push((
        "contextual (graph kernel)".into(),
        toml::from_str("name = \"contextual\"\nkernel = \"graph\"").unwrap(),
    ));
    for (name, cfg) in configs {
        // Proxies are drawn once (on flex) and the same values moved to the device; the other
        // losses are built twice, so that a miner's seeded generator (shared by clones) starts
        // from the same state on both devices.
        let on_flex = cfg.init(classes, d, &flex()).unwrap();
        let on_gpu = if cfg.has_parameters() {
            on_flex.clone().fork(&gpu())
        } else {
            cfg.init(classes, d, &gpu()).unwrap()
        };
        let (v_cpu, g_cpu) = class_loss_on(&on_flex, &values, n, d, &labels, &flex());
        let (v_gpu, g_gpu) = class_loss_on(&on_gpu, &values, n, d, &labels, &gpu());
        let dv = (v_cpu - v_gpu).abs() / v_cpu.abs().max(1e-20);
        let dg = rel_diff(&g_cpu, &g_gpu);
        assert!(
            v_cpu.is_finite() && max_abs(&g_cpu) > 0.0,
            "{name}: degenerate fixture"
        );
        assert!(
            dv < 1e-4,
            "{name}: value {v_cpu} on flex, {v_gpu} on wgpu ({dv:e})"
        );
        assert!(
            dg < 1e-4,
            "{name}: gradient differs by {dg:e} of its largest entry"
        );
        eprintln!("{name}: value {dv:.1e}, gradient {dg:.1e} (relative)");
    }
}

#[test]
fn every_continuous_loss_matches_flex_on_the_device() {
    let (n, d) = (24, 16);
    let (values, _) = batch(1, n, d, 11);
    // Label distances of scalar labels on a line: distinct, so the dense triplet ordering has
    // no ties.
    let y: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.37).sin() * 3.0 + i as f32 * 0.01)
        .collect();
    let dist: Vec<f32> = (0..n * n).map(|k| (y[k / n] - y[k % n]).abs()).collect();
    for name in ["log_ratio", "dense_triplet", "binary_triplet"] {
        let cfg: ContinuousLossConfig = toml::from_str(&format!("name = \"{name}\"")).unwrap();
        let loss = cfg.init().unwrap();
        let run = |device: &Device| {
            let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [n, d]), device)
                .require_grad();
            let out = loss.forward(x.clone(), &dist).unwrap().total;
            let value = out.clone().into_scalar::<f32>();
            let g = x.grad(&out.backward()).expect("gradient");
            (value, host(g))
        };
        let ((v_cpu, g_cpu), (v_gpu, g_gpu)) = (run(&flex()), run(&gpu()));
        let dv = (v_cpu - v_gpu).abs() / v_cpu.abs().max(1e-20);
        let dg = rel_diff(&g_cpu, &g_gpu);
        assert!(
            v_cpu.is_finite() && max_abs(&g_cpu) > 0.0,
            "{name}: degenerate fixture"
        );
        assert!(
            dv < 1e-4,
            "{name}: value {v_cpu} on flex, {v_gpu} on wgpu ({dv:e})"
        );
        assert!(
            dg < 1e-4,
            "{name}: gradient differs by {dg:e} of its largest entry"
        );
        eprintln!("{name}: value {dv:.1e}, gradient {dg:.1e} (relative)");
    }
}

fn head_config(loss: &str, devices: &[&str]) -> TrainConfig {
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
tries = 3
max_batches = 3
[optim]
lr = 1e-3
[train]
epochs = 1
eval_every = 0
devices = [{devices}]
"#
    ))
    .unwrap()
}

fn trained_head(
    loss: &str,
    devices: &[&str],
) -> (Vec<simlearn::train::checkpoint::NamedTensor>, f64) {
    let (train, _) = digits().class_disjoint_split().unwrap();
    let out = train_class(
        &head_config(loss, devices),
        &train,
        None,
        None,
        false,
        &mut Silent,
    )
    .unwrap();
    assert_eq!(out.history[0].steps, 3);
    (module_tensors(&out.head, "head."), out.history[0].loss)
}

fn assert_same_heads(
    what: &str,
    a: &[simlearn::train::checkpoint::NamedTensor],
    b: &[simlearn::train::checkpoint::NamedTensor],
    tol: f32,
) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let d = rel_diff(&x.data, &y.data);
        assert!(d < tol, "{what}: {} differs by {d:e}", x.name);
        eprintln!("{what}: {} {d:.1e}", x.name);
    }
}

#[test]
fn head_training_on_the_device_matches_flex() {
    // Three steps of the digits head (init, forward, loss, backward, Adam) on each device.
    let (cpu, l_cpu) = trained_head("contextual", &["flex"]);
    let (gpu, l_gpu) = trained_head("contextual", &["wgpu"]);
    assert!(
        (l_cpu - l_gpu).abs() <= 1e-4 * l_cpu.abs(),
        "mean loss {l_cpu} vs {l_gpu}"
    );
    assert_same_heads("head on wgpu", &cpu, &gpu, 1e-5);
}

#[test]
fn two_wgpu_devices_equal_one_device_on_the_concatenated_batch() {
    // Two wgpu devices on the one adapter (lavapipe in CI): each is its own burn runtime with its
    // own buffers and queue, and the replicas meet only through the collectives.
    for loss in ["contextual", "contrastive", "multi_similarity"] {
        let (one, _) = trained_head(loss, &["wgpu"]);
        let (two, _) = trained_head(loss, &["wgpu:cpu", "wgpu:default"]);
        assert_same_heads(&format!("{loss}, 2 wgpu devices"), &one, &two, 1e-5);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/backbones")
}

#[test]
fn backbone_forward_and_backward_match_flex() {
    // The narrow ResNet-18 fixture (width 8, torchvision weights written by
    // scripts/make_backbone_fixtures.py) on its 2 × 3 × 64 × 64 input: pooled features and the
    // gradient of a contrastive loss with respect to the input, which passes through every
    // convolution, BatchNorm and pooling backward of the network.
    let bytes = std::fs::read(fixtures().join("resnet18_w8_input.npy")).unwrap();
    let arr = parse_npy(&bytes).unwrap();
    let NpyData::Float(data) = arr.data else {
        panic!("float input expected")
    };
    let shape: [usize; 4] = arr.shape.clone().try_into().unwrap();
    // Four images (the fixture's two and their mirror images) make two positive pairs.
    let n = shape[0] * 2;
    let mut four = data.clone();
    four.extend(data.iter().map(|v| -v * 0.5));
    let cfg = BackboneConfig {
        arch: Architecture::Resnet18,
        weights: Some(fixtures().join("resnet18_w8.pth")),
        width: 8,
        ..BackboneConfig::default()
    };
    let loss: LossConfig = toml::from_str("name = \"contrastive\"").unwrap();
    let run = |device: &Device| {
        let model = cfg.init(None, device).unwrap();
        let x = Tensor::<4>::from_data(
            TensorData::new(four.clone(), [n, shape[1], shape[2], shape[3]]),
            device,
        )
        .require_grad();
        let feats = model.forward(x.clone());
        let out = loss
            .init(2, 0, device)
            .unwrap()
            .forward(feats.clone(), &[0, 1, 0, 1])
            .unwrap()
            .total;
        let g = x.grad(&out.backward()).expect("input gradient");
        let g = g
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        (host(feats.detach()), g)
    };
    let ((f_cpu, g_cpu), (f_gpu, g_gpu)) = (run(&flex()), run(&gpu()));
    assert!(
        max_abs(&g_cpu) > 0.0,
        "degenerate fixture: zero input gradient"
    );
    let (df, dg) = (rel_diff(&f_cpu, &f_gpu), rel_diff(&g_cpu, &g_gpu));
    assert!(df < 1e-4, "pooled features differ by {df:e}");
    assert!(dg < 1e-4, "input gradient differs by {dg:e}");
    eprintln!("backbone: features {df:.1e}, input gradient {dg:.1e} (relative)");
}
