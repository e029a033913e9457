//! The trainer: `dataset → sampler → batch → model → embeddings → loss`, then
//! `embeddings → index → neighbours → metrics` through `simlearn-eval`.
//!
//! One run writes into its output folder:
//! - `config.toml`: the resolved configuration (every default filled in);
//! - `metrics.jsonl`: one JSON object per epoch (mean loss terms, learning rate, validation
//!   metrics when evaluated);
//! - `last.safetensors` + `state.json`: model, loss parameters and optimiser state after the
//!   latest epoch, for exact resume;
//! - `best.safetensors`: the model with the best validation metric so far.
//!
//! Every file is written atomically (temporary file + rename).

pub mod checkpoint;
pub mod config;
pub mod images;
pub mod optim;
pub mod parallel;
pub mod trunk_cache;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};
use simlearn_eval::{ClassReport, ContinuousConfig, ContinuousReport, EvalConfig, Matrix};

use crate::data::FeatureDataset;
use crate::losses::continuous::{AnyContinuousLoss, ContinuousLossConfig};
use crate::losses::registry::AnyClassLoss;
use crate::losses::{ClassLoss, ContinuousLoss, LossError, LossOutput};
use crate::models::EmbeddingHead;
use crate::samplers::{BatchSampler, BinaryTripletSampler, DenseBatch, DenseTripletSampler};
use checkpoint::{
    load_module, load_safetensors, module_tensors, save_safetensors, write_atomic, NamedTensor,
};
pub use config::TrainConfig;
use optim::Adam;
use parallel::{all_reduce_module, Collective, DataParallel, Gather};

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value that cannot work (names the TOML key).
    #[error("config: {0}")]
    Config(String),
    /// A data problem.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A sampler problem (names its parameter).
    #[error("sampler: {0}")]
    Sampler(#[from] crate::samplers::SamplerError),
    /// A loss problem.
    #[error("loss: {0}")]
    Loss(#[from] crate::losses::LossError),
    /// An evaluation problem.
    #[error("evaluation: {0}")]
    Eval(#[from] simlearn_eval::EvalError),
    /// The loss became NaN or infinite.
    #[error("non-finite loss at epoch {epoch}, step {step}: {terms}")]
    NonFinite {
        /// 0-based epoch.
        epoch: usize,
        /// Global step (0-based).
        step: usize,
        /// Every loss term, formatted `name=value`.
        terms: String,
    },
    /// The loss rejected the batch's embeddings (NaN/Inf: the model diverged).
    #[error("epoch {epoch}, step {step}: {cause} (the model diverged; lower optim.lr)")]
    Diverged {
        /// 0-based epoch.
        epoch: usize,
        /// Global step (0-based).
        step: usize,
        /// The loss's message.
        cause: String,
    },
    /// File input/output.
    #[error("{0}")]
    Io(String),
    /// A checkpoint that does not fit the model.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// What one epoch did: the line written to `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Optimiser steps done so far.
    pub steps: usize,
    /// Learning rate of the head during this epoch.
    pub lr: f64,
    /// Mean of the total loss over the epoch's batches.
    pub loss: f64,
    /// Mean of every loss term over the epoch's batches.
    pub terms: BTreeMap<String, f64>,
    /// Wall time of the epoch's training steps, seconds.
    pub seconds: f64,
    /// Validation metrics, when evaluated this epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation: Option<BTreeMap<String, f64>>,
}

/// Progress callbacks, so that a command-line front end can draw bars without the library
/// depending on a terminal.
pub trait TrainObserver {
    /// An epoch with `batches` steps starts.
    fn epoch_start(&mut self, _epoch: usize, _batches: usize) {}
    /// A step finished with these loss terms (`total` first).
    fn step(&mut self, _epoch: usize, _batch: usize, _terms: &[(&str, f64)]) {}
    /// An epoch finished.
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// A one-line message for the user (what is about to be built, its size).
    fn note(&mut self, _text: &str) {}
    /// Progress of preparatory work (`what`: e.g. "trunk cache"), `done` of `total` items.
    fn work(&mut self, _what: &str, _done: usize, _total: usize) {}
}

/// An observer that does nothing.
pub struct Silent;
impl TrainObserver for Silent {}

/// Result of a training run.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained head (the best-by-validation one when a validation set was given).
    pub head: EmbeddingHead,
    /// Every epoch's record.
    pub history: Vec<EpochRecord>,
    /// Epoch of the best validation metric, if validated.
    pub best_epoch: Option<usize>,
    /// That metric's value.
    pub best_value: Option<f64>,
}

/// Embeds `features` with `head` in inference mode (no autodiff), `block` rows at a time.
pub fn embed(head: &EmbeddingHead, features: &Matrix, device: &Device) -> Matrix {
    let head = head.valid();
    let d_in = features.cols();
    let mut out = Vec::with_capacity(features.rows() * head.output_dim());
    for chunk in features.data().chunks(1024 * d_in.max(1)) {
        let rows = chunk.len() / d_in.max(1);
        let x = Tensor::<2>::from_data(TensorData::new(chunk.to_vec(), [rows, d_in]), device);
        let y = head.forward(x).into_data().convert::<f32>();
        out.extend(y.try_into_vec::<f32>().expect("converted to f32"));
    }
    let dim = head.output_dim();
    Matrix::new(features.rows(), dim, out).expect("embedding shape")
}

/// Evaluates `head` on a class-labelled set, leave-one-out (every item queries the rest).
pub fn evaluate(
    head: &EmbeddingHead,
    data: &FeatureDataset,
    cfg: &EvalConfig,
    device: &Device,
) -> Result<ClassReport, TrainError> {
    let emb = embed(head, &data.features, device);
    Ok(simlearn_eval::evaluate_classes(
        &emb,
        data.class_labels()?,
        None,
        cfg,
        None,
    )?)
}

struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    fn append_metrics(&self, rec: &EpochRecord) -> Result<(), TrainError> {
        let path = self.dir.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        let line = serde_json::to_string(rec).expect("records serialise");
        // One write call per line, so a crash never leaves half a JSON object behind.
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))
    }
}

/// Saved between epochs for exact resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    next_epoch: usize,
    steps: usize,
    best_epoch: Option<usize>,
    best_value: Option<f64>,
    optimizer_steps: HashMap<String, u64>,
    history: Vec<EpochRecord>,
}

/// One batch: dataset rows and what the loss needs to know about them.
pub struct Batch {
    /// Dataset indices of the batch members.
    pub indices: Vec<usize>,
    /// Class labels (contiguous ids) or the `B × B` label-distance matrix.
    pub target: BatchTarget,
}

/// What a loss is given besides the embeddings.
pub enum BatchTarget {
    /// Class ids of the members.
    Class(Vec<i64>),
    /// Row-major `B × B` label distances between members (row 0 is the anchor).
    Distances(Vec<f32>),
}

/// The objective of a run, what depends on the kind of labels: the epoch's batches, the loss
/// and its parameters.
pub(crate) trait Objective {
    /// The batches of `epoch` (dataset indices and targets).
    fn batches(&mut self, epoch: u64) -> Vec<Batch>;
    /// The loss of `embeddings`, the rows `kept` of `batch` (all of them unless the batch
    /// source dropped undecodable images).
    fn forward(
        &self,
        embeddings: Tensor<2>,
        batch: &Batch,
        kept: &[usize],
    ) -> Result<LossOutput, LossError>;
    /// The loss of the anchor rows `rows` against the whole batch (`train.gather = "local"`,
    /// see [`ClassLoss::forward_anchors`]).
    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        batch: &Batch,
        kept: &[usize],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError>;
    /// The loss's trainable parameters (proxies), if any.
    fn loss_module(&mut self) -> Option<&mut AnyClassLoss>;
}

pub(crate) struct ClassTask {
    pub(crate) sampler: Box<dyn BatchSampler>,
    pub(crate) labels: Vec<i64>,
    pub(crate) loss: AnyClassLoss,
}

impl Objective for ClassTask {
    fn batches(&mut self, epoch: u64) -> Vec<Batch> {
        self.sampler
            .epoch(epoch)
            .into_iter()
            .map(|indices| {
                let y = indices.iter().map(|&i| self.labels[i]).collect();
                Batch {
                    indices,
                    target: BatchTarget::Class(y),
                }
            })
            .collect()
    }

    fn forward(
        &self,
        embeddings: Tensor<2>,
        batch: &Batch,
        kept: &[usize],
    ) -> Result<LossOutput, LossError> {
        if kept == batch.indices {
            if let BatchTarget::Class(y) = &batch.target {
                return self.loss.forward(embeddings, y);
            }
        }
        let y: Vec<i64> = kept.iter().map(|&i| self.labels[i]).collect();
        self.loss.forward(embeddings, &y)
    }

    fn forward_anchors(
        &self,
        embeddings: Tensor<2>,
        _batch: &Batch,
        kept: &[usize],
        rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        let y: Vec<i64> = kept.iter().map(|&i| self.labels[i]).collect();
        self.loss.forward_anchors(embeddings, &y, rows)
    }

    fn loss_module(&mut self) -> Option<&mut AnyClassLoss> {
        self.loss.has_parameters().then_some(&mut self.loss)
    }
}

struct ContinuousTask {
    sampler: ContinuousSampler,
    loss: AnyContinuousLoss,
}

enum ContinuousSampler {
    Dense(DenseTripletSampler),
    Binary(BinaryTripletSampler),
}

impl Objective for ContinuousTask {
    fn batches(&mut self, epoch: u64) -> Vec<Batch> {
        let to_batch = |b: DenseBatch| Batch {
            indices: b.indices,
            target: BatchTarget::Distances(b.label_dist),
        };
        match &mut self.sampler {
            ContinuousSampler::Dense(s) => s.dense_epoch_iter(epoch).map(to_batch).collect(),
            ContinuousSampler::Binary(s) => s
                .binary_epoch_iter(epoch)
                .map(|b| to_batch(b.batch))
                .collect(),
        }
    }

    fn forward(
        &self,
        embeddings: Tensor<2>,
        batch: &Batch,
        kept: &[usize],
    ) -> Result<LossOutput, LossError> {
        match &batch.target {
            // The label-distance matrix is the batch's; feature sources never drop rows.
            BatchTarget::Distances(d) if kept == batch.indices => self.loss.forward(embeddings, d),
            _ => Err(LossError::Invalid(
                "continuous-label batches must reach the loss whole".into(),
            )),
        }
    }

    fn forward_anchors(
        &self,
        _embeddings: Tensor<2>,
        _batch: &Batch,
        _kept: &[usize],
        _rows: std::ops::Range<usize>,
    ) -> Result<LossOutput, LossError> {
        Err(LossError::Unsupported(format!(
            "{}: train.gather = \"local\" is for class-label losses; continuous-label losses \
             train on several devices with train.gather = \"exact\"",
            self.loss.name()
        )))
    }

    fn loss_module(&mut self) -> Option<&mut AnyClassLoss> {
        None
    }
}

fn metric_map(metrics: &[simlearn_eval::MetricValue]) -> BTreeMap<String, f64> {
    metrics.iter().map(|m| (m.name.clone(), m.value)).collect()
}

/// Evaluates `head` on a continuous-label set, leave-one-out: nDCG@K and mean label distance@K.
pub fn evaluate_continuous_labels(
    head: &EmbeddingHead,
    data: &FeatureDataset,
    cfg: &ContinuousConfig,
    device: &Device,
) -> Result<ContinuousReport, TrainError> {
    let crate::data::Labels::Continuous(labels) = &data.labels else {
        return Err(TrainError::Config(
            "validation data needs continuous labels".into(),
        ));
    };
    let emb = embed(head, &data.features, device);
    Ok(simlearn_eval::evaluate_continuous(
        &emb, labels, None, cfg, None,
    )?)
}

/// Trains an embedding head with a class-label loss on `train`, validating on `val` every
/// `eval_every` epochs. With `out_dir`, writes the run folder described in the module docs and
/// resumes from it when `resume` is set and a `state.json` exists.
pub fn train_class(
    cfg: &TrainConfig,
    train: &FeatureDataset,
    val: Option<&FeatureDataset>,
    out_dir: Option<&Path>,
    resume: bool,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome, TrainError> {
    let cfg = cfg.resolved(train.dim())?;
    let device = cfg.device()?;
    let labels = train.class_labels()?;
    // Proxy losses index proxies by class: map labels to 0..C−1 in sorted order.
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let class_id: HashMap<i64, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as i64))
        .collect();
    let dense_labels: Vec<i64> = labels.iter().map(|l| class_id[l]).collect();
    if let crate::losses::registry::LossConfig::Contextual(c) = &cfg.loss {
        // The contextual neighbourhood counts k points of the batch, the point itself
        // included; a class with fewer images can never fill it with true neighbours.
        let mut counts = vec![0usize; classes.len()];
        dense_labels.iter().for_each(|&l| counts[l as usize] += 1);
        if let Some((i, &n)) = counts.iter().enumerate().find(|(_, &n)| n < c.k) {
            return Err(TrainError::Config(format!(
                "class {} has {n} training samples, fewer than the contextual loss's k = {} (loss.k); \
                 lower loss.k or drop the class",
                classes[i], c.k
            )));
        }
    }
    device.seed(cfg.train.seed);
    let mut task = ClassTask {
        sampler: cfg.sampler.build(&dense_labels, cfg.train.seed)?,
        loss: cfg
            .loss
            .init(classes.len(), cfg.model.output_dim, &device)?,
        labels: dense_labels,
    };
    let lr_mult = cfg.loss.proxy_lr_multiplier().unwrap_or(1.0);
    let eval = cfg.eval_config();
    let validate = |t: &HeadTrainee| -> Result<Option<BTreeMap<String, f64>>, TrainError> {
        let Some(val) = val else { return Ok(None) };
        Ok(Some(metric_map(
            &evaluate(&t.head, val, &eval, &device)?.metrics,
        )))
    };
    let trainee = HeadTrainee::new(&cfg, &device)?;
    let out = run(
        &cfg,
        trainee,
        &FeatureSource(train),
        &mut task,
        &validate,
        lr_mult,
        &device,
        out_dir,
        resume,
        observer,
    )?;
    Ok(out.into_head_outcome())
}

/// Trains an embedding head with a continuous-label loss (`[continuous]` section: log-ratio,
/// dense triplet or binary triplet) on dense-triplet-mining batches, validating with nDCG@K and
/// mean label distance@K (leave-one-out on `val`).
pub fn train_continuous(
    cfg: &TrainConfig,
    train: &FeatureDataset,
    val: Option<&FeatureDataset>,
    out_dir: Option<&Path>,
    resume: bool,
    observer: &mut dyn TrainObserver,
) -> Result<TrainOutcome, TrainError> {
    let cfg = cfg.resolved(train.dim())?;
    let c = cfg.continuous.clone().unwrap_or_default();
    let crate::data::Labels::Continuous(labels) = &train.labels else {
        return Err(TrainError::Config(
            "[continuous] training needs continuous labels".into(),
        ));
    };
    let device = cfg.device()?;
    device.seed(cfg.train.seed);
    let seed = cfg.train.seed;
    let sampler = match &c.loss {
        ContinuousLossConfig::BinaryTriplet(b) => {
            let s = BinaryTripletSampler::new(
                labels,
                c.label_distance,
                c.batch_size,
                b.positives,
                c.positive_pool,
                seed,
            )?;
            ContinuousSampler::Binary(match c.max_batches {
                Some(m) => s.with_max_batches(m)?,
                None => s,
            })
        }
        _ => {
            let s = DenseTripletSampler::new(labels, c.label_distance, c.batch_size, c.k, seed)?;
            ContinuousSampler::Dense(match c.max_batches {
                Some(m) => s.with_max_batches(m)?,
                None => s,
            })
        }
    };
    let mut task = ContinuousTask {
        sampler,
        loss: c.loss.init()?,
    };
    let eval = ContinuousConfig {
        label_distance: c.label_distance,
        ..ContinuousConfig::default()
    };
    let validate = |t: &HeadTrainee| -> Result<Option<BTreeMap<String, f64>>, TrainError> {
        let Some(val) = val else { return Ok(None) };
        Ok(Some(metric_map(
            &evaluate_continuous_labels(&t.head, val, &eval, &device)?.metrics,
        )))
    };
    let trainee = HeadTrainee::new(&cfg, &device)?;
    let out = run(
        &cfg,
        trainee,
        &FeatureSource(train),
        &mut task,
        &validate,
        1.0,
        &device,
        out_dir,
        resume,
        observer,
    )?;
    Ok(out.into_head_outcome())
}

/// One batch as its source delivers it: host values, and which dataset rows they are.
pub struct SourceBatch {
    /// Dataset indices of the rows: the sampled batch, less any image its loader skipped.
    pub indices: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
    /// Their shape: `[n, d]` features, `[n, 3, h, w]` images, `[n, c, h, w]` cached outputs
    /// of a frozen trunk.
    pub shape: Vec<usize>,
    /// Trunk stages already applied to the values (0: raw features or images; the number of
    /// frozen stages for cached trunk outputs).
    pub stages: usize,
}

/// Where a run's inputs come from: precomputed features, images through a loader, or the
/// cached outputs of a frozen trunk.
pub(crate) trait BatchSource {
    /// The inputs of an epoch's batches (dataset indices), in order.
    fn epoch<'a>(
        &'a self,
        epoch: u64,
        batches: Vec<Vec<usize>>,
    ) -> Box<dyn Iterator<Item = Result<SourceBatch, TrainError>> + 'a>;
    /// Warnings gathered so far (images skipped under `images.skip_bad`).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Rows of a feature matrix.
pub(crate) struct FeatureSource<'a>(pub(crate) &'a FeatureDataset);

impl BatchSource for FeatureSource<'_> {
    fn epoch<'a>(
        &'a self,
        _epoch: u64,
        batches: Vec<Vec<usize>>,
    ) -> Box<dyn Iterator<Item = Result<SourceBatch, TrainError>> + 'a> {
        let f = &self.0.features;
        let d = f.cols();
        Box::new(batches.into_iter().map(move |indices| {
            let mut data = Vec::with_capacity(indices.len() * d);
            for &i in &indices {
                data.extend_from_slice(f.row(i));
            }
            Ok(SourceBatch {
                shape: vec![indices.len(), d],
                indices,
                data,
                stages: 0,
            })
        }))
    }
}

/// What a run trains besides the loss's own parameters: the model with its optimisers, how it
/// embeds a batch, and its checkpoint files.
pub(crate) trait Trainee: Clone {
    /// Embeddings of a batch, with the autodiff graph of the trained parameters.
    fn forward(&self, batch: SourceBatch, device: &Device) -> Result<Tensor<2>, TrainError>;
    /// The gradients of each parameter group (head, trained backbone stages, …) in `grads`.
    fn param_grads(&self, grads: &mut Gradients) -> Vec<GradientsParams>;
    /// One optimiser step of every parameter group with its gradients, in
    /// [`Self::param_grads`]' order (`lr`: the head's learning rate). Takes the model by value
    /// so that its tensors are updated in place where burn can.
    fn apply(self, grads: Vec<GradientsParams>, lr: f64) -> Self;
    /// One optimiser step from the gradients of a backward pass.
    fn step(self, grads: &mut Gradients, lr: f64) -> Self {
        let g = self.param_grads(grads);
        self.apply(g, lr)
    }
    /// Sums every group's gradients over the devices of a data-parallel step (`grads[g][k]`:
    /// group `g` on device `k`), times `scale`, with this replica's modules as the map of
    /// parameters.
    fn all_reduce(&self, grads: &mut [Vec<GradientsParams>], collective: &Collective, scale: f64);
    /// A replica on `device`: the same weights and optimiser state, its own autodiff leaves.
    fn fork(&self, device: &Device) -> Self;
    /// Weights and optimiser state for `last.safetensors`, with the optimisers' step counts.
    fn state_tensors(&self) -> (Vec<NamedTensor>, HashMap<String, u64>);
    /// Writes the model files of checkpoint `which` (`"last"` / `"best"`) other than the
    /// ones `last.safetensors` holds; `best` also writes `best.safetensors`.
    fn save_files(&self, dir: &Path, which: &str, epoch: usize) -> Result<(), TrainError>;
    /// Restores weights and optimiser state from `last` (the tensors of `last.safetensors`).
    fn load_last(
        &mut self,
        dir: &Path,
        tensors: &HashMap<String, NamedTensor>,
        steps: &HashMap<String, u64>,
        device: &Device,
    ) -> Result<(), TrainError>;
    /// The model of the `best` checkpoint files.
    fn load_best(&self, dir: &Path) -> Result<Self, TrainError>;
}

/// An embedding head on precomputed features.
#[derive(Clone)]
pub(crate) struct HeadTrainee {
    pub(crate) head: EmbeddingHead,
    opt: Adam,
}

impl HeadTrainee {
    fn new(cfg: &TrainConfig, device: &Device) -> Result<Self, TrainError> {
        Ok(HeadTrainee {
            head: cfg
                .model
                .init(cfg.train.seed, device)
                .map_err(TrainError::Config)?,
            opt: Adam::new(cfg.optim.clone()),
        })
    }
}

impl Trainee for HeadTrainee {
    fn forward(&self, batch: SourceBatch, device: &Device) -> Result<Tensor<2>, TrainError> {
        let [n, d] = batch.shape[..] else {
            return Err(TrainError::Config(format!(
                "a head takes n × d features, got a batch of shape {:?}",
                batch.shape
            )));
        };
        let x = Tensor::<2>::from_data(TensorData::new(batch.data, [n, d]), device);
        Ok(self.head.forward(x))
    }

    fn param_grads(&self, grads: &mut Gradients) -> Vec<GradientsParams> {
        vec![GradientsParams::from_module(grads, &self.head)]
    }

    fn apply(mut self, grads: Vec<GradientsParams>, lr: f64) -> Self {
        let mut g = grads.into_iter().next().expect("the head's gradients");
        self.head = self.opt.step(self.head, &mut g, lr);
        self
    }

    fn all_reduce(&self, grads: &mut [Vec<GradientsParams>], collective: &Collective, scale: f64) {
        all_reduce_module(&self.head, &mut grads[0], collective, scale);
    }

    fn fork(&self, device: &Device) -> Self {
        HeadTrainee {
            head: self.head.clone().fork(device),
            opt: self.opt.to_device(device),
        }
    }

    fn state_tensors(&self) -> (Vec<NamedTensor>, HashMap<String, u64>) {
        let mut tensors = module_tensors(&self.head, "head.");
        let (t, s) = self.opt.state_tensors("optim.head.");
        tensors.extend(t);
        (tensors, s)
    }

    fn save_files(&self, dir: &Path, which: &str, epoch: usize) -> Result<(), TrainError> {
        if which == "last" {
            return Ok(());
        }
        save_safetensors(
            &dir.join(format!("{which}.safetensors")),
            &module_tensors(&self.head, "head."),
            run_metadata(epoch),
        )
    }

    fn load_last(
        &mut self,
        _dir: &Path,
        tensors: &HashMap<String, NamedTensor>,
        steps: &HashMap<String, u64>,
        device: &Device,
    ) -> Result<(), TrainError> {
        self.head = load_module(self.head.clone(), tensors, "head.")?;
        self.opt.load_state(tensors, steps, "optim.head.", device)
    }

    fn load_best(&self, dir: &Path) -> Result<Self, TrainError> {
        let (tensors, _) = load_safetensors(&dir.join("best.safetensors"))?;
        Ok(HeadTrainee {
            head: load_module(self.head.clone(), &tensors, "head.")?,
            opt: self.opt.clone(),
        })
    }
}

/// What a run of the one training loop gives back.
pub(crate) struct RunOutcome<T> {
    pub(crate) trainee: T,
    pub(crate) history: Vec<EpochRecord>,
    pub(crate) best_epoch: Option<usize>,
    pub(crate) best_value: Option<f64>,
}

impl RunOutcome<HeadTrainee> {
    fn into_head_outcome(self) -> TrainOutcome {
        TrainOutcome {
            head: self.trainee.head,
            history: self.history,
            best_epoch: self.best_epoch,
            best_value: self.best_value,
        }
    }
}

/// Validation of a trainee: metric name → value, `None` without a validation set.
pub(crate) type Validate<'a, T> =
    dyn Fn(&T) -> Result<Option<BTreeMap<String, f64>>, TrainError> + 'a;

/// The training loop, for every batch source, model and objective: epochs of sampled batches
/// through `source → trainee → objective`, optimiser steps, the non-finite stop, validation
/// and best-model selection, the run folder (metrics, checkpoints, exact resume) and progress.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<T: Trainee>(
    cfg: &TrainConfig,
    mut trainee: T,
    source: &dyn BatchSource,
    objective: &mut dyn Objective,
    validate: &Validate<'_, T>,
    loss_lr_mult: f64,
    device: &Device,
    out_dir: Option<&Path>,
    resume: bool,
    observer: &mut dyn TrainObserver,
) -> Result<RunOutcome<T>, TrainError> {
    let mut loss_opt = Adam::new(cfg.optim.clone());
    let files = out_dir.map(|d| RunFiles {
        dir: d.to_path_buf(),
    });
    let mut state = ResumeState {
        next_epoch: 0,
        steps: 0,
        best_epoch: None,
        best_value: None,
        optimizer_steps: HashMap::new(),
        history: Vec::new(),
    };
    if let Some(f) = &files {
        std::fs::create_dir_all(&f.dir)
            .map_err(|e| TrainError::Io(format!("{}: {e}", f.dir.display())))?;
        let state_path = f.dir.join("state.json");
        if resume && state_path.exists() {
            let text = std::fs::read_to_string(&state_path)
                .map_err(|e| TrainError::Io(format!("{}: {e}", state_path.display())))?;
            state = serde_json::from_str(&text)
                .map_err(|e| TrainError::Io(format!("{}: {e}", state_path.display())))?;
            let (tensors, _) = load_safetensors(&f.dir.join("last.safetensors"))?;
            trainee.load_last(&f.dir, &tensors, &state.optimizer_steps, device)?;
            if let Some(loss) = objective.loss_module() {
                *loss = load_module(loss.clone(), &tensors, "loss.")?;
            }
            loss_opt.load_state(&tensors, &state.optimizer_steps, "optim.loss.", device)?;
        } else {
            // A fresh run starts a fresh log.
            let _ = std::fs::remove_file(f.dir.join("metrics.jsonl"));
        }
        let text = toml::to_string_pretty(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        write_atomic(&f.dir.join("config.toml"), text.as_bytes())?;
    }

    // Data-parallel replicas start from the (possibly resumed) model and optimiser state.
    let mut parallel = match cfg.parallel_devices()? {
        None => None,
        Some(devices) => {
            if objective.loss_module().is_some() {
                return Err(TrainError::Config(
                    "train.devices: losses with trainable proxies cannot train on several \
                     devices yet; use one device"
                        .into(),
                ));
            }
            let collective = Collective::new(&cfg.train.collective, &devices, &cfg.train.devices)?;
            let gather = Gather::parse(&cfg.train.gather)?;
            Some(DataParallel::new(&trainee, devices, collective, gather))
        }
    };
    let mut best: Option<T> = None;
    for epoch in state.next_epoch..cfg.train.epochs {
        let lr = cfg.optim.lr_at_epoch(epoch);
        let batches = objective.batches(epoch as u64);
        observer.epoch_start(epoch, batches.len());
        let started = Instant::now();
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut total_sum = 0.0;
        let mut done = 0usize;
        let indices: Vec<Vec<usize>> = batches.iter().map(|b| b.indices.clone()).collect();
        // A source that skips a wholly undecodable batch delivers fewer batches than sampled:
        // each delivered batch is matched to the sampled one whose rows it holds.
        let mut sampled = batches.iter().enumerate();
        for input in source.epoch(epoch as u64, indices) {
            let input = input?;
            let (b, batch) = sampled
                .by_ref()
                .find(|(_, b)| input.indices.iter().all(|i| b.indices.contains(i)))
                .ok_or_else(|| {
                    TrainError::Io("batch source out of step with the sampler".into())
                })?;
            let kept = input.indices.clone();
            let step = state.steps;
            let loss_error = |e: LossError| TrainError::Diverged {
                epoch,
                step,
                cause: e.to_string(),
            };
            let terms = if let Some(dp) = parallel.as_mut() {
                let outs = dp.losses(&trainee, input, batch, &kept, &*objective, &loss_error)?;
                let logged = dp.logged(&outs);
                let terms = record_terms(&logged, epoch, step, &mut total_sum, &mut sums)?;
                trainee = dp.step(trainee, outs, lr);
                terms
            } else {
                let emb = trainee.forward(input, device)?;
                let out = objective.forward(emb, batch, &kept).map_err(loss_error)?;
                let terms = record_terms(&out, epoch, step, &mut total_sum, &mut sums)?;
                let mut grads = out.total.backward();
                trainee = trainee.step(&mut grads, lr);
                if let Some(loss) = objective.loss_module() {
                    let mut loss_grads = GradientsParams::from_module(&mut grads, &*loss);
                    *loss = loss_opt.step(loss.clone(), &mut loss_grads, lr * loss_lr_mult);
                }
                terms
            };
            state.steps += 1;
            done += 1;
            observer.step(epoch, b, &terms);
        }
        let warnings = source.warnings();
        if !warnings.is_empty() {
            observer.note(&format!(
                "warning: {} image(s) skipped so far; first: {}",
                warnings.len(),
                warnings[0]
            ));
        }
        let n = done.max(1) as f64;
        let mut record = EpochRecord {
            epoch,
            steps: state.steps,
            lr,
            loss: total_sum / n,
            terms: sums.into_iter().map(|(k, v)| (k, v / n)).collect(),
            seconds: started.elapsed().as_secs_f64(),
            validation: None,
        };
        let last_epoch = epoch + 1 == cfg.train.epochs;
        if cfg.train.eval_every > 0 && ((epoch + 1) % cfg.train.eval_every == 0 || last_epoch) {
            if let Some(metrics) = validate(&trainee)? {
                let value = *metrics.get(&cfg.train.select_metric).ok_or_else(|| {
                    TrainError::Config(format!(
                        "train.select_metric: \"{}\" is not among the evaluated metrics ({})",
                        cfg.train.select_metric,
                        metrics.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                if select_better(&cfg.train.select_metric, value, state.best_value) {
                    state.best_value = Some(value);
                    state.best_epoch = Some(epoch);
                    best = Some(trainee.clone());
                    if let Some(f) = &files {
                        trainee.save_files(&f.dir, "best", epoch)?;
                    }
                }
                record.validation = Some(metrics);
            }
        }
        if let Some(f) = &files {
            f.append_metrics(&record)?;
        }
        state.history.push(record.clone());
        state.next_epoch = epoch + 1;
        if let Some(f) = &files {
            let (mut tensors, mut steps) = trainee.state_tensors();
            if let Some(loss) = objective.loss_module() {
                tensors.extend(module_tensors(&*loss, "loss."));
            }
            let (lt, ls) = loss_opt.state_tensors("optim.loss.");
            tensors.extend(lt);
            steps.extend(ls);
            state.optimizer_steps = steps;
            trainee.save_files(&f.dir, "last", epoch)?;
            save_safetensors(
                &f.dir.join("last.safetensors"),
                &tensors,
                run_metadata(epoch),
            )?;
            let text = serde_json::to_string_pretty(&state).expect("state serialises");
            write_atomic(&f.dir.join("state.json"), text.as_bytes())?;
        }
        observer.epoch_end(&record);
    }
    // A resumed run that had already finished its epochs still reports its best model.
    if best.is_none() && state.best_epoch.is_some() {
        if let Some(f) = &files {
            best = Some(trainee.load_best(&f.dir)?);
        }
    }
    Ok(RunOutcome {
        trainee: best.unwrap_or(trainee),
        history: state.history,
        best_epoch: state.best_epoch,
        best_value: state.best_value,
    })
}

/// Metrics where smaller is better (mean label distance) select the minimum.
fn select_better(metric: &str, value: f64, best: Option<f64>) -> bool {
    let lower_is_better = metric.starts_with("mean_label_distance");
    match best {
        None => true,
        Some(b) if lower_is_better => value < b,
        Some(b) => value > b,
    }
}

/// The loss terms of one step (`total` first) as host numbers, added to the epoch's running
/// sums; a NaN or infinite term stops training with the epoch, step and every term.
fn record_terms(
    out: &LossOutput,
    epoch: usize,
    step: usize,
    total_sum: &mut f64,
    sums: &mut BTreeMap<String, f64>,
) -> Result<Vec<(&'static str, f64)>, TrainError> {
    let mut terms: Vec<(&str, f64)> = vec![("total", scalar(&out.total))];
    terms.extend(out.terms.iter().map(|(n, t)| (*n, scalar(t))));
    if terms.iter().any(|(_, v)| !v.is_finite()) {
        return Err(TrainError::NonFinite {
            epoch,
            step,
            terms: terms
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        });
    }
    *total_sum += terms[0].1;
    for (n, v) in &terms[1..] {
        *sums.entry((*n).to_string()).or_default() += v;
    }
    Ok(terms)
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

fn run_metadata(epoch: usize) -> HashMap<String, String> {
    HashMap::from([
        ("format".to_string(), "simlearn-checkpoint".to_string()),
        ("epoch".to_string(), epoch.to_string()),
        (
            "simlearn_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ])
}

/// Loads the head of a run folder's `best.safetensors` (or `last.safetensors` when no best
/// exists) using the run's `config.toml`.
pub fn load_run_head(run_dir: &Path, device: &Device) -> Result<EmbeddingHead, TrainError> {
    let cfg_path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| TrainError::Io(format!("{}: {e}", cfg_path.display())))?;
    let cfg: TrainConfig = toml::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", cfg_path.display())))?;
    let head = cfg
        .model
        .init(cfg.train.seed, device)
        .map_err(TrainError::Config)?;
    let best = run_dir.join("best.safetensors");
    let path = if best.exists() {
        best
    } else {
        run_dir.join("last.safetensors")
    };
    let (tensors, _) = load_safetensors(&path)?;
    load_module(head, &tensors, "head.")
}
