//! Images end to end: embedding a dataset with a backbone (`simlearn embed`), and full
//! fine-tuning of backbone + head with a class-label loss (`simlearn train` with
//! `data.source = "images"`).
//!
//! Data flow: `ImageDataset → sampler → ImageLoader (decode + augment, rayon, prefetch) →
//! backbone → head → loss`. The backbone's learning rate is `optim.lr × optim.backbone_lr_mult`
//! (0.5 in the contextual-similarity P256 recipe), the head's `optim.lr`; both share the
//! schedule. Validation embeds the validation images with the evaluation pipeline and runs
//! leave-one-out retrieval (or query → gallery for In-Shop) through `simlearn-eval`.
//!
//! Run folder: `config.toml`, `metrics.jsonl`, `best.safetensors` / `last.safetensors` (head
//! `head.*`, optimiser state `optim.*`), `backbone-best.safetensors` /
//! `backbone-last.safetensors` (every backbone tensor, BatchNorm statistics included, burn
//! names) and `state.json` for exact resume. Every file is written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Gradients;
use serde::{Deserialize, Serialize};
use simlearn_eval::{ClassReport, EvalConfig, Matrix};

use super::checkpoint::{
    load_module, load_safetensors, module_tensors, save_safetensors, NamedTensor,
};
use super::optim::Adam;
use super::parallel::{all_reduce_module, Collective};
use super::trunk_cache::TrunkCache;
use super::{
    metric_map, run, run_metadata, BatchSource, ClassTask, EpochRecord, SourceBatch, TrainConfig,
    TrainError, TrainObserver, Trainee,
};
use crate::data::augment::{Geometry, ImageLoader, LoaderConfig, Normalize, Pipeline};
use crate::data::images::{ImageDataset, InShop};
use crate::data::DataError;
use crate::models::backbone::{BackboneConfig, BatchNormMode};
use crate::models::{Backbone, EmbeddingHead};

/// On-disk layout of an image dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImageLayout {
    /// `root/<class>/<image>` (class ids in sorted folder-name order).
    #[default]
    Folder,
    /// A list file of `path label` lines, paths relative to `root` (the seed repositories'
    /// CUB/Cars split files).
    List,
    /// CUB-200-2011 (`images.txt`, `image_class_labels.txt`, `images/`); classes 1–100 train,
    /// 101–200 test.
    Cub200,
    /// Cars-196 (`train.txt`/`test.txt` list files or a class folder); classes 1–98 / 99–196.
    Cars196,
    /// Stanford Online Products (`Ebay_train.txt`, `Ebay_test.txt`).
    Sop,
    /// In-Shop Clothes (`list_eval_partition.txt`): train, query → gallery validation.
    Inshop,
    /// iNaturalist list files (`list` trains, `val_list` validates).
    Inaturalist,
}

/// Input normalisation of an image pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormalizeName {
    /// ImageNet mean/std (torchvision weights).
    Imagenet,
    /// mean = std = 0.5 (EfficientNet-Lite weights).
    Half,
}

impl From<NormalizeName> for Normalize {
    fn from(n: NormalizeName) -> Self {
        match n {
            NormalizeName::Imagenet => Normalize::ImageNet,
            NormalizeName::Half => Normalize::Half,
        }
    }
}

/// `[images]`: where the images are and how they are decoded. Defaults: the P256 CUB/Cars
/// pipeline (RandomResizedCrop 256 with scale 0.16–1, flip; Resize 288 → CenterCrop 256 at test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesSection {
    /// Dataset layout.
    pub layout: ImageLayout,
    /// Dataset root folder.
    pub root: PathBuf,
    /// List file (layouts `list`, `inaturalist`).
    pub list: Option<PathBuf>,
    /// Validation root (`folder`; default: class-disjoint split of `root`).
    pub val_root: Option<PathBuf>,
    /// Validation list file (`list`, `inaturalist`).
    pub val_list: Option<PathBuf>,
    /// Training crop size (P256: 256; P224 and iNat: 224).
    pub size: u32,
    /// Evaluation resize of the shorter side (P256: 288).
    pub resize: u32,
    /// Evaluation centre crop (P256: 256).
    pub crop: u32,
    /// RandomResizedCrop lower scale bound (paper: 0.16).
    pub min_scale: f64,
    /// Horizontal flip probability (paper: 0.5).
    pub flip: f64,
    /// Normalisation; default: what the backbone's weights were trained with.
    pub normalize: Option<NormalizeName>,
    /// Decoding threads (0: one per core).
    pub threads: usize,
    /// Batches decoded ahead.
    pub prefetch: usize,
    /// Skip undecodable images with a warning count instead of stopping.
    pub skip_bad: bool,
}

impl Default for ImagesSection {
    fn default() -> Self {
        Self {
            layout: ImageLayout::Folder,
            root: PathBuf::new(),
            list: None,
            val_root: None,
            val_list: None,
            size: 256,
            resize: 288,
            crop: 256,
            min_scale: 0.16,
            flip: 0.5,
            normalize: None,
            threads: 0,
            prefetch: 2,
            skip_bad: false,
        }
    }
}

/// Training images and what validates them.
pub struct ImageSplits {
    /// Training images.
    pub train: ImageDataset,
    /// Validation: leave-one-out on one set, or query → gallery.
    pub val: Option<ImageValidation>,
}

/// Validation images.
pub enum ImageValidation {
    /// Every image queries the rest.
    LeaveOneOut(ImageDataset),
    /// Queries against a separate gallery (In-Shop).
    QueryGallery {
        /// Query images.
        query: ImageDataset,
        /// Gallery images.
        gallery: ImageDataset,
    },
}

fn need<'a>(p: &'a Option<PathBuf>, key: &str, layout: &str) -> Result<&'a Path, TrainError> {
    p.as_deref().ok_or_else(|| {
        TrainError::Config(format!("images.{key} is required for layout \"{layout}\""))
    })
}

impl ImagesSection {
    /// Reads the dataset in its layout and splits it as the benchmarks do.
    pub fn load(&self) -> Result<ImageSplits, TrainError> {
        if self.root.as_os_str().is_empty() {
            return Err(TrainError::Config("images.root is required".into()));
        }
        let loo = |d: ImageDataset| Some(ImageValidation::LeaveOneOut(d));
        let split = |d: ImageDataset| -> Result<ImageSplits, TrainError> {
            let (train, val) = d.class_disjoint_split()?;
            Ok(ImageSplits {
                train,
                val: loo(val),
            })
        };
        match self.layout {
            ImageLayout::Folder => {
                let train = ImageDataset::from_folder(&self.root)?;
                match &self.val_root {
                    Some(v) => Ok(ImageSplits {
                        train,
                        val: loo(ImageDataset::from_folder(v)?),
                    }),
                    None => split(train),
                }
            }
            ImageLayout::List | ImageLayout::Inaturalist => {
                let list = need(&self.list, "list", "list")?;
                let read = |l: &Path| {
                    if self.layout == ImageLayout::List {
                        ImageDataset::from_list_file(l, &self.root)
                    } else {
                        ImageDataset::inaturalist(l, &self.root)
                    }
                };
                let train = read(list)?;
                match &self.val_list {
                    Some(v) => Ok(ImageSplits {
                        train,
                        val: loo(read(v)?),
                    }),
                    None => split(train),
                }
            }
            ImageLayout::Cub200 => split(ImageDataset::cub200(&self.root)?),
            ImageLayout::Cars196 => split(ImageDataset::cars196(&self.root)?),
            ImageLayout::Sop => Ok(ImageSplits {
                train: ImageDataset::sop(&self.root, false)?,
                val: loo(ImageDataset::sop(&self.root, true)?),
            }),
            ImageLayout::Inshop => {
                let s = InShop::load(&self.root)?;
                Ok(ImageSplits {
                    train: s.train,
                    val: Some(ImageValidation::QueryGallery {
                        query: s.query,
                        gallery: s.gallery,
                    }),
                })
            }
        }
    }

    /// The training pipeline.
    pub fn train_pipeline(&self, normalize: Normalize, seed: u64) -> Pipeline {
        Pipeline {
            geometry: Geometry::RandomResizedCrop {
                size: self.size,
                scale: (self.min_scale, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                flip_p: self.flip,
            },
            normalize,
            seed,
        }
    }

    /// The evaluation pipeline.
    pub fn eval_pipeline(&self, normalize: Normalize) -> Pipeline {
        Pipeline {
            normalize,
            ..Pipeline::eval(self.resize, self.crop)
        }
    }

    /// Loader settings.
    pub fn loader(&self) -> LoaderConfig {
        LoaderConfig {
            threads: self.threads,
            prefetch: self.prefetch.max(1),
            skip_bad: self.skip_bad,
        }
    }
}

/// Embeds every image of `dataset` (evaluation pipeline, inference mode): backbone features,
/// or head embeddings when `head` is given. Returns the matrix and the dataset indices of its
/// rows (all of them, unless `skip_bad` left bad images out). `progress(done, total)` is
/// called after every batch.
// The model, the data and how to feed it are separate choices of the caller (CLI, trainer,
// tests); a struct bundling them would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
pub fn embed_images(
    backbone: &Backbone,
    head: Option<&EmbeddingHead>,
    dataset: Arc<ImageDataset>,
    pipeline: Pipeline,
    loader: LoaderConfig,
    batch_size: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Matrix, Vec<usize>), TrainError> {
    if batch_size == 0 {
        return Err(TrainError::Config("batch size must be at least 1".into()));
    }
    let n = dataset.len();
    let loader = ImageLoader::new(dataset, pipeline, loader)?;
    let batches: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(batch_size)
        .map(<[usize]>::to_vec)
        .collect();
    let dim = head.map_or(backbone.feature_dim(), EmbeddingHead::output_dim);
    let mut out = Vec::with_capacity(n * dim);
    let mut rows = Vec::with_capacity(n);
    for batch in loader.epoch(0, batches) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.data, batch.shape), device);
        let mut y = backbone.forward(x);
        if let Some(h) = head {
            y = h.forward(y);
        }
        out.extend(embedding_values(
            y,
            dim,
            |row| batch_path(&loader, &batch.indices, row),
            "the backbone produced a non-finite value (check the weights file)",
        )?);
        rows.extend(&batch.indices);
        progress(rows.len(), n);
    }
    let m = Matrix::new(rows.len(), dim, out).map_err(|e| TrainError::Io(e.to_string()))?;
    Ok((m, rows))
}

/// The rows of `y` (`dim` wide) read back, or an error naming the first row with a non-finite
/// value (`name(row)`: its image) and `problem`.
fn embedding_values(
    y: Tensor<2>,
    dim: usize,
    name: impl Fn(usize) -> String,
    problem: &str,
) -> Result<Vec<f32>, TrainError> {
    let values = y
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Io(format!("embedding readback: {e:?}")))?;
    if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
        return Err(TrainError::Data(DataError::Invalid(format!(
            "{}: {problem}",
            name(bad / dim.max(1))
        ))));
    }
    Ok(values)
}

fn batch_path(_loader: &ImageLoader, indices: &[usize], row: usize) -> String {
    format!("image #{}", indices.get(row).copied().unwrap_or(0))
}

/// Backbone and head trained together.
#[derive(Module, Debug)]
pub struct ImageModel {
    /// The convolutional trunk.
    pub backbone: Backbone,
    /// The embedding head on its pooled features.
    pub head: EmbeddingHead,
}

/// Result of an image fine-tuning run.
#[derive(Debug)]
pub struct ImageTrainOutcome {
    /// The trained model (best by validation when validated).
    pub model: ImageModel,
    /// Every epoch's record.
    pub history: Vec<EpochRecord>,
    /// Epoch of the best validation metric.
    pub best_epoch: Option<usize>,
    /// Its value.
    pub best_value: Option<f64>,
}

/// Backbone (trained stages) and head with their optimisers, for the one training loop.
#[derive(Clone)]
pub(crate) struct ImageTrainee {
    pub(crate) model: ImageModel,
    /// Leading trunk stages that stay frozen (run without autodiff).
    frozen: usize,
    batch_norm: BatchNormMode,
    backbone_opt: Adam,
    head_opt: Adam,
    backbone_lr_mult: f64,
}

impl Trainee for ImageTrainee {
    fn forward(&self, batch: SourceBatch, device: &Device) -> Result<Tensor<2>, TrainError> {
        let [n, c, h, w] = batch.shape[..] else {
            return Err(TrainError::Config(format!(
                "a backbone takes n × c × h × w inputs, got a batch of shape {:?}",
                batch.shape
            )));
        };
        let data = TensorData::new(batch.data, [n, c, h, w]);
        let backbone = &self.model.backbone;
        let features = match batch.stages {
            0 => backbone.forward_partial(Tensor::<4>::from_data(data, device), self.frozen),
            // Cached trunk outputs: frozen stages never see the autodiff device.
            s if s == self.frozen => {
                let inner = device.clone().without_autodiff();
                backbone.forward_trained(Tensor::<4>::from_data(data, &inner), s)
            }
            s => {
                return Err(TrainError::Config(format!(
                    "cached trunk outputs after {s} stages, but the model freezes {}",
                    self.frozen
                )))
            }
        };
        Ok(self.model.head.forward(features))
    }

    fn param_grads(&self, grads: &mut Gradients) -> Vec<GradientsParams> {
        let mut groups = vec![GradientsParams::from_module(grads, &self.model.head)];
        if self.frozen < self.model.backbone.num_stages() {
            groups.push(GradientsParams::from_module(grads, &self.model.backbone));
        }
        groups
    }

    fn apply(mut self, grads: Vec<GradientsParams>, lr: f64) -> Self {
        let mut groups = grads.into_iter();
        let mut head_grads = groups.next().expect("the head's gradients");
        self.model.head = self.head_opt.step(self.model.head, &mut head_grads, lr);
        if let Some(mut backbone_grads) = groups.next() {
            self.model.backbone = self.backbone_opt.step(
                self.model.backbone,
                &mut backbone_grads,
                lr * self.backbone_lr_mult,
            );
        }
        self
    }

    fn all_reduce(&self, grads: &mut [Vec<GradientsParams>], collective: &Collective, scale: f64) {
        all_reduce_module(&self.model.head, &mut grads[0], collective, scale);
        if let Some(backbone) = grads.get_mut(1) {
            all_reduce_module(&self.model.backbone, backbone, collective, scale);
        }
    }

    fn fork(&self, device: &Device) -> Self {
        ImageTrainee {
            model: self.model.clone().fork(device),
            frozen: self.frozen,
            batch_norm: self.batch_norm,
            backbone_opt: self.backbone_opt.to_device(device),
            head_opt: self.head_opt.to_device(device),
            backbone_lr_mult: self.backbone_lr_mult,
        }
    }

    fn state_tensors(&self) -> (Vec<NamedTensor>, HashMap<String, u64>) {
        let mut tensors = module_tensors(&self.model.head, "head.");
        let mut steps = HashMap::new();
        for (opt, prefix) in [
            (&self.backbone_opt, "optim.backbone."),
            (&self.head_opt, "optim.head."),
        ] {
            let (t, s) = opt.state_tensors(prefix);
            tensors.extend(t);
            steps.extend(s);
        }
        (tensors, steps)
    }

    fn save_files(&self, dir: &Path, which: &str, epoch: usize) -> Result<(), TrainError> {
        self.model
            .backbone
            .save_safetensors(&dir.join(format!("backbone-{which}.safetensors")))
            .map_err(|e| TrainError::Io(e.to_string()))?;
        if which == "last" {
            // The head of `last` is in last.safetensors with the optimiser state.
            return Ok(());
        }
        save_safetensors(
            &dir.join(format!("{which}.safetensors")),
            &module_tensors(&self.model.head, "head."),
            run_metadata(epoch),
        )
    }

    fn load_last(
        &mut self,
        dir: &Path,
        tensors: &HashMap<String, NamedTensor>,
        steps: &HashMap<String, u64>,
        device: &Device,
    ) -> Result<(), TrainError> {
        self.model.backbone = self
            .model
            .backbone
            .clone()
            .load_weights(&dir.join("backbone-last.safetensors"))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?
            .with_batch_norm(self.batch_norm);
        self.model.head = load_module(self.model.head.clone(), tensors, "head.")?;
        self.backbone_opt
            .load_state(tensors, steps, "optim.backbone.", device)?;
        self.head_opt
            .load_state(tensors, steps, "optim.head.", device)
    }

    fn load_best(&self, dir: &Path) -> Result<Self, TrainError> {
        let mut best = self.clone();
        best.model.backbone = best
            .model
            .backbone
            .load_weights(&dir.join("backbone-best.safetensors"))
            .map_err(|e| TrainError::Checkpoint(e.to_string()))?
            .with_batch_norm(self.batch_norm);
        let (tensors, _) = load_safetensors(&dir.join("best.safetensors"))?;
        best.model.head = load_module(best.model.head, &tensors, "head.")?;
        Ok(best)
    }
}

/// Decoded, augmented images.
struct ImageSource(ImageLoader);

impl BatchSource for ImageSource {
    fn epoch<'a>(
        &'a self,
        epoch: u64,
        batches: Vec<Vec<usize>>,
    ) -> Box<dyn Iterator<Item = Result<SourceBatch, TrainError>> + 'a> {
        Box::new(self.0.epoch(epoch, batches).map(|b| {
            let b = b?;
            Ok(SourceBatch {
                indices: b.indices,
                data: b.data,
                shape: b.shape.to_vec(),
                stages: 0,
            })
        }))
    }

    fn warnings(&self) -> Vec<String> {
        self.0.warnings()
    }
}

fn validate_images(
    model: &ImageModel,
    val: &ImageValidation,
    pipeline: Pipeline,
    loader: LoaderConfig,
    batch_size: usize,
    eval: &EvalConfig,
    device: &Device,
) -> Result<ClassReport, TrainError> {
    let inner_device = device.clone().without_autodiff();
    let model = model.valid();
    let embed = |d: &ImageDataset| -> Result<(Matrix, Vec<i64>), TrainError> {
        let (m, rows) = embed_images(
            &model.backbone,
            Some(&model.head),
            Arc::new(d.clone()),
            pipeline,
            loader,
            batch_size,
            &inner_device,
            &mut |_, _| {},
        )?;
        let labels = d.class_labels()?;
        Ok((m, rows.iter().map(|&i| labels[i]).collect()))
    };
    Ok(match val {
        ImageValidation::LeaveOneOut(d) => {
            let (m, y) = embed(d)?;
            simlearn_eval::evaluate_classes(&m, &y, None, eval, None)?
        }
        ImageValidation::QueryGallery { query, gallery } => {
            let (qm, qy) = embed(query)?;
            let (gm, gy) = embed(gallery)?;
            simlearn_eval::evaluate_classes(&qm, &qy, Some((&gm, &gy[..])), eval, None)?
        }
    })
}

/// Validation sets as frozen-trunk outputs ([`TrunkCache::open_or_build_eval`]).
enum CachedValidation {
    LeaveOneOut(TrunkCache),
    QueryGallery {
        query: TrunkCache,
        gallery: TrunkCache,
    },
}

/// [`validate_images`] from the cached frozen-stage outputs: only the trained stages and the
/// head run.
fn validate_cached(
    model: &ImageModel,
    cached: &CachedValidation,
    val: &ImageValidation,
    batch_size: usize,
    eval: &EvalConfig,
    device: &Device,
) -> Result<ClassReport, TrainError> {
    let inner_device = device.clone().without_autodiff();
    let model = model.valid();
    let embed = |cache: &TrunkCache, d: &ImageDataset| -> Result<(Matrix, Vec<i64>), TrainError> {
        let m = embed_cached(&model, cache, d, batch_size, &inner_device)?;
        Ok((m, d.class_labels()?.to_vec()))
    };
    Ok(match (cached, val) {
        (CachedValidation::LeaveOneOut(c), ImageValidation::LeaveOneOut(d)) => {
            let (m, y) = embed(c, d)?;
            simlearn_eval::evaluate_classes(&m, &y, None, eval, None)?
        }
        (
            CachedValidation::QueryGallery { query, gallery },
            ImageValidation::QueryGallery {
                query: qd,
                gallery: gd,
            },
        ) => {
            let (qm, qy) = embed(query, qd)?;
            let (gm, gy) = embed(gallery, gd)?;
            simlearn_eval::evaluate_classes(&qm, &qy, Some((&gm, &gy[..])), eval, None)?
        }
        _ => {
            return Err(TrainError::Config(
                "the validation cache does not match the validation sets (one of them is query → gallery, the other is not)".into(),
            ))
        }
    })
}

/// The embeddings of `dataset` by `model` from its cached frozen-stage outputs `cache` (one
/// row per image, in dataset order): only the trained stages and the head run.
fn embed_cached(
    model: &ImageModel,
    cache: &TrunkCache,
    dataset: &ImageDataset,
    batch_size: usize,
    device: &Device,
) -> Result<Matrix, TrainError> {
    let frozen = cache.stages();
    let n = cache.len();
    let dim = model.head.output_dim();
    let mut out = Vec::with_capacity(n * dim);
    let all: Vec<usize> = (0..n).collect();
    for batch in all.chunks(batch_size.max(1)) {
        let (data, shape) = cache.batch(batch);
        let x = Tensor::<4>::from_data(TensorData::new(data, shape), device);
        let features = model.backbone.pool(
            model
                .backbone
                .forward_stages(x, frozen..model.backbone.num_stages()),
        );
        out.extend(embedding_values(
            model.head.forward(features),
            dim,
            |row| dataset.paths[batch[row]].display().to_string(),
            "the model produced a non-finite embedding",
        )?);
    }
    Matrix::new(n, dim, out).map_err(|e| TrainError::Io(e.to_string()))
}

/// Loads the trained model of an image run folder `dir` whose resolved config is `cfg`:
/// `backbone-best.safetensors` + `best.safetensors` when the run kept a best epoch, else the
/// `last` pair.
pub fn load_image_run(
    dir: &Path,
    cfg: &TrainConfig,
    device: &Device,
) -> Result<ImageModel, TrainError> {
    if cfg.data.source != "images" {
        return Err(TrainError::Config(format!(
            "{}: not an image fine-tuning run (data.source = \"{}\")",
            dir.display(),
            cfg.data.source
        )));
    }
    let which = if dir.join("backbone-best.safetensors").exists() {
        "best"
    } else {
        "last"
    };
    let backbone = BackboneConfig {
        weights: Some(dir.join(format!("backbone-{which}.safetensors"))),
        ..cfg.backbone.clone().unwrap_or_default()
    }
    .init(None, device)
    .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", dir.display())))?;
    let head = cfg
        .model
        .init(cfg.train.seed, device)
        .map_err(TrainError::Config)?;
    let (tensors, _) = load_safetensors(&dir.join(format!("{which}.safetensors")))?;
    let head = load_module(head, &tensors, "head.")?;
    Ok(ImageModel { backbone, head })
}

/// The validation set of an image run, embedded by the model before training (the backbone's
/// initial weights and the head initialised with the run's seed) and by the trained one, with
/// the evaluation pipeline: what `simlearn report` evaluates.
#[derive(Debug, Clone)]
pub struct ValidationEmbeddings {
    /// Embeddings of the untrained model (`n × output_dim`).
    pub untrained: Matrix,
    /// Embeddings of the trained model.
    pub trained: Matrix,
    /// Class label of every row.
    pub labels: Vec<i64>,
    /// Image file of every row.
    pub paths: Vec<PathBuf>,
}

/// Embeds the leave-one-out validation set of the image run folder `dir` (resolved config
/// `cfg`) with the untrained and the trained model ([`ValidationEmbeddings`]). A run that
/// cached its frozen stages reuses (or rebuilds) the validation cache exactly as training
/// did, so its trained embeddings are the ones its last validation measured; otherwise every
/// image runs through the whole backbone. Query → gallery validation (In-Shop) is refused.
pub fn embed_validation(
    dir: &Path,
    cfg: &TrainConfig,
    device: &Device,
    observer: &mut dyn TrainObserver,
) -> Result<ValidationEmbeddings, TrainError> {
    let images = cfg.images.clone().ok_or_else(|| {
        TrainError::Config(format!(
            "{}: data.source = \"images\" needs an [images] section",
            dir.display()
        ))
    })?;
    let dataset = match images.load()?.val {
        Some(ImageValidation::LeaveOneOut(d)) => Arc::new(d),
        Some(ImageValidation::QueryGallery { .. }) => {
            return Err(TrainError::Config(format!(
                "{}: query → gallery validation (layout \"inshop\") is not supported here; only leave-one-out test sets",
                dir.display()
            )))
        }
        None => {
            return Err(TrainError::Config(format!(
                "{}: the run has no validation images",
                dir.display()
            )))
        }
    };
    let bcfg: BackboneConfig = cfg.backbone.clone().unwrap_or_default();
    let frozen = bcfg
        .frozen_stages()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let normalize: Normalize = images
        .normalize
        .map(Normalize::from)
        .unwrap_or_else(|| bcfg.arch.normalize());
    let pipeline = images.eval_pipeline(normalize);
    pipeline.validate()?;
    let inner = device.clone().without_autodiff();
    let trained = load_image_run(dir, cfg, &inner)?;
    let untrained = ImageModel {
        backbone: bcfg
            .init(None, &inner)
            .map_err(|e| TrainError::Config(e.to_string()))?,
        head: cfg
            .model
            .init(cfg.train.seed, &inner)
            .map_err(TrainError::Config)?,
    };
    let batch = cfg.sampler.batch_size.max(1);
    let labels = dataset.class_labels()?.to_vec();
    if bcfg.cache && frozen > 0 {
        let cache_dir = bcfg
            .cache_dir
            .clone()
            .unwrap_or_else(|| dir.join("trunk-cache"));
        let cache = TrunkCache::open_or_build_eval(
            &cache_dir,
            "val",
            &untrained.backbone,
            frozen,
            &dataset,
            pipeline,
            images.loader(),
            cfg,
            &inner,
            observer,
        )?;
        return Ok(ValidationEmbeddings {
            untrained: embed_cached(&untrained, &cache, &dataset, batch, &inner)?,
            trained: embed_cached(&trained, &cache, &dataset, batch, &inner)?,
            labels,
            paths: dataset.paths.clone(),
        });
    }
    let mut embed = |model: &ImageModel, what: &str| {
        embed_images(
            &model.backbone,
            Some(&model.head),
            dataset.clone(),
            pipeline,
            images.loader(),
            batch,
            &inner,
            &mut |done, total| observer.work(what, done, total),
        )
    };
    let (untrained, rows) = embed(&untrained, "untrained model")?;
    let (trained, trained_rows) = embed(&trained, "trained model")?;
    if rows != trained_rows {
        return Err(TrainError::Data(DataError::Invalid(format!(
            "{}: images.skip_bad left different images out of the two embeddings",
            dir.display()
        ))));
    }
    Ok(ValidationEmbeddings {
        untrained,
        trained,
        labels: rows.iter().map(|&i| labels[i]).collect(),
        paths: rows.iter().map(|&i| dataset.paths[i].clone()).collect(),
    })
}

/// Fine-tunes `[backbone]` + `[model]` on the images of `[images]` with the class loss of
/// `[loss]` and the batches of `[sampler]`: all stages, or the last `backbone.train_stages`
/// (the others frozen, optionally with their outputs cached: see [`super::trunk_cache`]).
/// See the module docs for the run folder.
pub fn train_images(
    cfg: &TrainConfig,
    out_dir: Option<&Path>,
    resume: bool,
    observer: &mut dyn TrainObserver,
) -> Result<ImageTrainOutcome, TrainError> {
    let images = cfg.images.clone().ok_or_else(|| {
        TrainError::Config("data.source = \"images\" needs an [images] section".into())
    })?;
    let bcfg: BackboneConfig = cfg.backbone.clone().unwrap_or_default();
    let frozen = bcfg
        .frozen_stages()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    if bcfg.cache && (bcfg.views == 0 || frozen == 0) {
        return Err(TrainError::Config(
            "backbone.cache needs backbone.views > 0 and backbone.train_stages below the number of stages"
                .into(),
        ));
    }
    let normalize: Normalize = images
        .normalize
        .map(Normalize::from)
        .unwrap_or_else(|| bcfg.arch.normalize());
    let splits = images.load()?;
    let device = cfg.device()?;
    device.seed(cfg.train.seed);
    let backbone = bcfg
        .init(None, &device)
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let cfg = cfg.resolved(backbone.feature_dim())?;

    let labels = splits.train.class_labels()?.to_vec();
    let mut classes = labels.clone();
    classes.sort_unstable();
    classes.dedup();
    let class_id: HashMap<i64, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as i64))
        .collect();
    let dense: Vec<i64> = labels.iter().map(|l| class_id[l]).collect();
    let sampler = cfg.sampler.build_with_supers(
        &dense,
        splits.train.super_labels.as_deref(),
        cfg.train.seed,
    )?;
    let loss = cfg
        .loss
        .init(classes.len(), cfg.model.output_dim, &device)?;
    let head = cfg
        .model
        .init(cfg.train.seed, &device)
        .map_err(TrainError::Config)?;
    let trainee = ImageTrainee {
        model: ImageModel { backbone, head },
        frozen,
        batch_norm: bcfg.batch_norm,
        backbone_opt: Adam::new(cfg.optim.clone()),
        head_opt: Adam::new(cfg.optim.clone()),
        backbone_lr_mult: cfg.optim.backbone_lr_mult,
    };

    let train_set = Arc::new(splits.train);
    // Fixed views are drawn from the views seed; fresh augmentations from the run's seed.
    let views_seed = match bcfg.views {
        0 => cfg.train.seed,
        _ => bcfg.views_seed.unwrap_or(cfg.train.seed),
    };
    let loader = ImageLoader::new(
        train_set.clone(),
        images.train_pipeline(normalize, views_seed),
        images.loader(),
    )?
    .with_views(bcfg.views as u64, cfg.train.seed);
    let eval_pipeline = images.eval_pipeline(normalize);
    eval_pipeline.validate()?;
    let cache_dir = match (&bcfg.cache_dir, out_dir) {
        _ if !bcfg.cache => None,
        (Some(d), _) => Some(d.clone()),
        (None, Some(d)) => Some(d.join("trunk-cache")),
        (None, None) => {
            return Err(TrainError::Config(
                "backbone.cache needs a run folder (--out) or backbone.cache_dir".into(),
            ))
        }
    };
    let source: Box<dyn BatchSource> = match &cache_dir {
        Some(dir) => Box::new(TrunkCache::open_or_build(
            dir,
            &trainee.model.backbone,
            frozen,
            &loader,
            &train_set,
            &cfg,
            &device,
            observer,
        )?),
        None => Box::new(ImageSource(loader)),
    };
    // With the cache, validation also starts from the frozen stages' stored outputs.
    let val_cache = match (&cache_dir, &splits.val) {
        (Some(dir), Some(val)) => {
            let mut open = |name: &str, d: &ImageDataset| {
                TrunkCache::open_or_build_eval(
                    dir,
                    name,
                    &trainee.model.backbone,
                    frozen,
                    &Arc::new(d.clone()),
                    eval_pipeline,
                    images.loader(),
                    &cfg,
                    &device,
                    observer,
                )
            };
            Some(match val {
                ImageValidation::LeaveOneOut(d) => CachedValidation::LeaveOneOut(open("val", d)?),
                ImageValidation::QueryGallery { query, gallery } => {
                    CachedValidation::QueryGallery {
                        query: open("query", query)?,
                        gallery: open("gallery", gallery)?,
                    }
                }
            })
        }
        _ => None,
    };

    let mut task = ClassTask {
        sampler,
        labels: dense,
        loss,
    };
    let eval_cfg = cfg.eval_config();
    let eval_batch = cfg.sampler.batch_size.max(1);
    let validate = |t: &ImageTrainee| -> Result<Option<BTreeMap<String, f64>>, TrainError> {
        let Some(val) = &splits.val else {
            return Ok(None);
        };
        if let Some(cached) = &val_cache {
            let report = validate_cached(&t.model, cached, val, eval_batch, &eval_cfg, &device)?;
            return Ok(Some(metric_map(&report.metrics)));
        }
        let report = validate_images(
            &t.model,
            val,
            eval_pipeline,
            images.loader(),
            eval_batch,
            &eval_cfg,
            &device,
        )?;
        Ok(Some(metric_map(&report.metrics)))
    };
    let loss_lr_mult = cfg.loss.proxy_lr_multiplier().unwrap_or(1.0);
    let out = run(
        &cfg,
        trainee,
        source.as_ref(),
        &mut task,
        &validate,
        loss_lr_mult,
        &device,
        out_dir,
        resume,
        observer,
    )?;
    Ok(ImageTrainOutcome {
        model: out.trainee.model,
        history: out.history,
        best_epoch: out.best_epoch,
        best_value: out.best_value,
    })
}
