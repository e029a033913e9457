//! The TOML run configuration. Every field has a default; `simlearn train` writes the resolved
//! file (all defaults filled in) into the run folder, so a run can be repeated from it alone.
//!
//! ```toml
//! [data]
//! source = "features"            # or "digits" (embedded)
//! features = "train_features.npy"
//! labels = "train_labels.npy"
//! val_features = "test_features.npy"
//! val_labels = "test_labels.npy"
//!
//! [model]
//! output_dim = 512
//!
//! [loss]
//! name = "contextual"            # every field of the loss has its paper default
//!
//! [sampler]
//! batch_size = 128
//! samples_per_class = 4
//!
//! [optim]
//! lr = 8e-5
//! milestones = [15, 30, 45]
//! gamma = 0.3
//!
//! [train]
//! epochs = 80
//! eval_every = 5
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use simlearn_eval::{EvalConfig, LabelDistance};

use super::images::ImagesSection;
use super::optim::OptimConfig;
use super::TrainError;
use crate::losses::continuous::ContinuousLossConfig;
use crate::losses::registry::LossConfig;
use crate::models::{BackboneConfig, HeadConfig};
use crate::samplers::{
    BalancedOptions, BalancedSampler, BatchSampler, HierarchicalOptions, HierarchicalSampler,
    MPerClassOptions, MPerClassSampler, SamplerError,
};

/// The whole run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Where the data comes from.
    pub data: DataConfig,
    /// The embedding head.
    pub model: HeadConfig,
    /// The loss and its hyper-parameters.
    pub loss: LossConfig,
    /// How batches are drawn.
    pub sampler: SamplerConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Epochs, seed, evaluation cadence.
    pub train: LoopConfig,
    /// Validation metrics.
    pub eval: EvalSection,
    /// Continuous-label training (Kim et al. 2019); when present, `simlearn train` uses it
    /// instead of `[loss]` and `[sampler]`.
    pub continuous: Option<ContinuousSection>,
    /// Image backbone (with `data.source = "images"`): architecture, weights, pooling,
    /// BatchNorm policy.
    pub backbone: Option<BackboneConfig>,
    /// Image dataset layout and decoding (with `data.source = "images"`).
    pub images: Option<ImagesSection>,
}

/// Continuous-label training: the loss, the label distance and the dense-triplet-mining
/// sampler (`log-ratio-loss.md` §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContinuousSection {
    /// `log_ratio` (default), `dense_triplet` or `binary_triplet`, with their parameters.
    pub loss: ContinuousLossConfig,
    /// Distance between label vectors (`{ kind = "circular", period = 360.0 }` for angles).
    pub label_distance: LabelDistance,
    /// Batch size B (reference: 150).
    pub batch_size: usize,
    /// Nearest label neighbours per dense batch (reference: 5).
    pub k: usize,
    /// Label neighbours that count as positives for `binary_triplet` (reference: 30).
    pub positive_pool: usize,
    /// Cap on batches (anchors) per epoch; the reference uses one batch per training item.
    pub max_batches: Option<usize>,
}

impl Default for ContinuousSection {
    fn default() -> Self {
        Self {
            loss: ContinuousLossConfig::default(),
            label_distance: LabelDistance::Euclidean,
            batch_size: 150,
            k: 5,
            positive_pool: 30,
            max_batches: None,
        }
    }
}

/// Data source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `"features"` (files below), `"digits"` (the embedded scikit-learn digits, split
    /// class-disjointly 0–4 / 5–9) or `"rotated_digits"` (digits rotated by random angles,
    /// label = angle; alternate halves train and test).
    pub source: String,
    /// Training features (`.npy`, `.safetensors`, `.csv`), `n × d`.
    pub features: Option<PathBuf>,
    /// Training labels (`.npy` integers or one label per line).
    pub labels: Option<PathBuf>,
    /// Validation features; when absent with `split_train = true`, the training file is split
    /// class-disjointly (first half of the classes trains).
    pub val_features: Option<PathBuf>,
    /// Validation labels.
    pub val_labels: Option<PathBuf>,
    /// Split the training file when no validation files are given: class-disjointly for class
    /// labels, alternate items for continuous labels.
    pub split_train: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: "features".into(),
            features: None,
            labels: None,
            val_features: None,
            val_labels: None,
            split_train: true,
        }
    }
}

/// Batch sampler settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerConfig {
    /// `"m_per_class"`: the P256 `RandomSampler` of Liao et al. (2023) (spec §3.1, CUB, Cars,
    /// In-Shop); `"hierarchical"`: two super-classes per batch (§3.2, SOP and iNaturalist;
    /// needs super-labels, which the SOP layout provides); `"balanced"`: the P224 sampler
    /// (§3.3, 96 classes drawn at a time).
    pub kind: String,
    /// Samples per batch (paper: 128).
    pub batch_size: usize,
    /// Samples per class in a batch (paper: 4).
    pub samples_per_class: usize,
    /// Passes over the epoch's class grouping (paper: 5 CUB, 10 Cars/In-Shop).
    pub tries: usize,
    /// Cap on batches per epoch (paper: 42 CUB/Cars, 600 In-Shop).
    pub max_batches: Option<usize>,
    /// Every pass covers every class (not in the reference).
    pub cover_all_classes: bool,
    /// Drop single-sample classes instead of failing.
    pub skip_singletons: bool,
    /// `hierarchical`: half-batches multiplier (reference: 66 SOP, 70 iNaturalist).
    pub multiplier: usize,
    /// `hierarchical`: batches per super-class pair (reference: 10).
    pub batches_per_super_pair: usize,
    /// `balanced`: distinct classes per draw (reference: 96).
    pub classes_per_draw: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            kind: "m_per_class".into(),
            batch_size: 128,
            samples_per_class: 4,
            tries: 1,
            max_batches: None,
            cover_all_classes: false,
            skip_singletons: false,
            multiplier: 66,
            batches_per_super_pair: 10,
            classes_per_draw: 96,
        }
    }
}

impl SamplerConfig {
    /// Builds the sampler over (contiguous) class labels.
    pub fn build(&self, labels: &[i64], seed: u64) -> Result<Box<dyn BatchSampler>, TrainError> {
        self.build_with_supers(labels, None, seed)
    }

    /// Builds the sampler; `supers` are the super-class labels the hierarchical sampler needs.
    pub fn build_with_supers(
        &self,
        labels: &[i64],
        supers: Option<&[i64]>,
        seed: u64,
    ) -> Result<Box<dyn BatchSampler>, TrainError> {
        match self.kind.as_str() {
            "hierarchical" => {
                let supers = supers.ok_or_else(|| {
                    TrainError::Sampler(SamplerError {
                        param: "kind",
                        reason: "\"hierarchical\" needs super-class labels (the SOP image layout has them)".into(),
                    })
                })?;
                Ok(Box::new(HierarchicalSampler::new(
                    labels,
                    supers,
                    self.batch_size,
                    self.samples_per_class,
                    seed,
                    HierarchicalOptions {
                        batches_per_super_pair: self.batches_per_super_pair,
                        multiplier: self.multiplier,
                        max_batches: self.max_batches,
                        skip_singletons: self.skip_singletons,
                    },
                )?))
            }
            "balanced" => Ok(Box::new(BalancedSampler::new(
                labels,
                self.batch_size,
                self.samples_per_class,
                seed,
                BalancedOptions {
                    classes_per_draw: self.classes_per_draw,
                    skip_singletons: self.skip_singletons,
                },
            )?)),
            "m_per_class" => Ok(Box::new(MPerClassSampler::new(
                labels,
                self.batch_size,
                self.samples_per_class,
                seed,
                MPerClassOptions {
                    tries: self.tries,
                    max_batches: self.max_batches,
                    cover_all_classes: self.cover_all_classes,
                    skip_singletons: self.skip_singletons,
                },
            )?)),
            other => Err(TrainError::Sampler(SamplerError {
                param: "kind",
                reason: format!(
                    "unknown sampler \"{other}\"; expected \"m_per_class\", \"hierarchical\" or \"balanced\""
                ),
            })),
        }
    }
}

/// Loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoopConfig {
    /// Number of epochs (paper: 80).
    pub epochs: usize,
    /// Seed of the head initialisation and of the sampler.
    pub seed: u64,
    /// Validate every this many epochs (paper: 5) and at the last epoch; 0 = never.
    pub eval_every: usize,
    /// Metric that selects the best checkpoint (`map_at_r`, `precision_at_1`, `recall_at_1`, …).
    pub select_metric: String,
    /// Where to train: `"flex"` (burn's pure-Rust CPU backend, the default), `"default"`
    /// (burn's first enabled backend, GPUs before CPUs; the `BURN_DEVICE` environment variable
    /// overrides), or any name of [`Self::devices`] (`"wgpu"`, `"wgpu:cpu"`, `"cuda:0"`, …).
    pub device: String,
    /// Data-parallel training (`train::parallel`): two or more device names train one replica
    /// each on contiguous shards of the sampler's batch (the global batch), every device's
    /// loss seeing the whole global batch, gradients summed. Names: `"flex"` (it may repeat:
    /// replicas on the one CPU device), `"default"`, `"wgpu"` (burn's best wgpu adapter),
    /// `"wgpu:cpu"`, `"wgpu:discrete:N"`, `"wgpu:integrated:N"`, `"wgpu:virtual:N"` (the `wgpu`
    /// feature), `"cuda:N"` (the `cuda` feature). Empty (default) or one entry: one device
    /// (`device`, or the one entry).
    pub devices: Vec<String>,
    /// How a data-parallel run's devices exchange embeddings and gradients: `"host"` (default,
    /// every backend) or `"burn"` (burn's distributed context; CUDA devices only).
    pub collective: String,
    /// What each device's loss sees in a data-parallel run: `"exact"` (default: the whole
    /// gathered batch, every anchor; gradients equal one device's on the concatenated batch)
    /// or `"local"` (PML's efficient variant: the device's own anchors against the gathered
    /// batch, gradients averaged; contrastive and multi-similarity).
    pub gather: String,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            epochs: 80,
            seed: 0,
            eval_every: 5,
            select_metric: "map_at_r".into(),
            device: "flex".into(),
            devices: Vec::new(),
            collective: "host".into(),
            gather: "exact".into(),
        }
    }
}

/// Validation metric settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Recall@K cut-offs (paper CUB/Cars: 1, 2, 4, 8).
    pub ks: Vec<usize>,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            ks: vec![1, 2, 4, 8],
        }
    }
}

impl TrainConfig {
    /// Parses a TOML file; unknown keys are errors (a typo must not silently use a default).
    pub fn from_toml(text: &str) -> Result<Self, TrainError> {
        toml::from_str(text).map_err(|e| TrainError::Config(e.to_string().replace('\n', " ")))
    }

    /// Fills data-dependent defaults and checks consistency.
    pub fn resolved(&self, input_dim: usize) -> Result<Self, TrainError> {
        let mut c = self.clone();
        if c.model.input_dim == 0 {
            c.model.input_dim = input_dim;
        } else if c.model.input_dim != input_dim {
            return Err(TrainError::Config(format!(
                "model.input_dim is {} but the features have {input_dim} columns",
                c.model.input_dim
            )));
        }
        if c.train.epochs == 0 {
            return Err(TrainError::Config("train.epochs must be at least 1".into()));
        }
        if !(c.optim.lr > 0.0 && c.optim.lr.is_finite()) {
            return Err(TrainError::Config(format!(
                "optim.lr must be a positive number, got {}",
                c.optim.lr
            )));
        }
        if c.eval.ks.is_empty() || c.eval.ks.contains(&0) {
            return Err(TrainError::Config(
                "eval.ks must be a non-empty list of positive integers".into(),
            ));
        }
        Ok(c)
    }

    /// The training device (with autodiff) named by `train.device`, or the first of
    /// `train.devices` when that is set.
    pub fn device(&self) -> Result<burn::prelude::Device, TrainError> {
        match self.train.devices.first() {
            Some(first) => parse_device(first, "train.devices[0]"),
            None => parse_device(&self.train.device, "train.device"),
        }
    }

    /// The devices (with autodiff) of a data-parallel run: `train.devices` when it has two
    /// or more entries, else `None`.
    pub fn parallel_devices(&self) -> Result<Option<Vec<burn::prelude::Device>>, TrainError> {
        if self.train.devices.len() < 2 {
            return Ok(None);
        }
        let devices = self
            .train
            .devices
            .iter()
            .enumerate()
            .map(|(i, name)| parse_device(name, &format!("train.devices[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(devices))
    }

    /// The evaluation settings used for validation.
    pub fn eval_config(&self) -> EvalConfig {
        EvalConfig {
            ks: self.eval.ks.clone(),
            seed: self.train.seed,
            ..EvalConfig::default()
        }
    }
}

/// The autodiff device named `name` (see [`LoopConfig::devices`]); `what` names the setting in
/// errors.
pub fn parse_device(name: &str, what: &str) -> Result<burn::prelude::Device, TrainError> {
    use burn::prelude::Device;
    let unknown = || {
        TrainError::Config(format!(
            "{what}: \"{name}\" is not a device name (flex, default, wgpu, wgpu:cpu, \
             wgpu:discrete:N, wgpu:integrated:N, wgpu:virtual:N, cuda:N)"
        ))
    };
    let parts: Vec<&str> = name.split(':').collect();
    let index = |s: &str| s.parse::<usize>().map_err(|_| unknown());
    let device = match parts[..] {
        ["flex"] => Device::flex(),
        ["default"] => Device::default(),
        ["wgpu", ..] => wgpu_device(&parts[1..], what, name).ok_or_else(unknown)??,
        ["cuda", i] => {
            let i = index(i)?;
            cuda_device(i, what, name)?
        }
        _ => return Err(unknown()),
    };
    Ok(device.autodiff())
}

#[cfg(feature = "wgpu")]
fn wgpu_device(
    kind: &[&str],
    _what: &str,
    _name: &str,
) -> Option<Result<burn::prelude::Device, TrainError>> {
    use burn::tensor::DeviceKind;
    let kind = match kind {
        [] | ["default"] => DeviceKind::DefaultDevice,
        ["cpu"] => DeviceKind::Cpu,
        ["discrete", i] => DeviceKind::DiscreteGpu(i.parse().ok()?),
        ["integrated", i] => DeviceKind::IntegratedGpu(i.parse().ok()?),
        ["virtual", i] => DeviceKind::VirtualGpu(i.parse().ok()?),
        _ => return None,
    };
    Some(Ok(burn::prelude::Device::wgpu(kind)))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device(
    _kind: &[&str],
    what: &str,
    name: &str,
) -> Option<Result<burn::prelude::Device, TrainError>> {
    Some(Err(TrainError::Config(format!(
        "{what}: \"{name}\" needs simlearn built with the `wgpu` feature \
         (cargo build --release --features wgpu)"
    ))))
}

#[cfg(feature = "cuda")]
fn cuda_device(i: usize, _what: &str, _name: &str) -> Result<burn::prelude::Device, TrainError> {
    Ok(burn::prelude::Device::cuda(i))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_i: usize, what: &str, name: &str) -> Result<burn::prelude::Device, TrainError> {
    Err(TrainError::Config(format!(
        "{what}: \"{name}\" needs simlearn built with the `cuda` feature"
    )))
}
