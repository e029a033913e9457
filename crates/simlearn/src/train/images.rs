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
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use simlearn_eval::{ClassReport, EvalConfig, Matrix};

use super::checkpoint::{
    load_module, load_safetensors, module_tensors, save_safetensors, write_atomic,
};
use super::optim::Adam;
use super::{
    metric_map, record_terms, run_metadata, select_better, EpochRecord, RunFiles, TrainConfig,
    TrainError, TrainObserver,
};
use crate::data::augment::{Geometry, ImageLoader, LoaderConfig, Normalize, Pipeline};
use crate::data::images::{ImageDataset, InShop};
use crate::data::DataError;
use crate::losses::ClassLoss;
use crate::models::backbone::BackboneConfig;
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
        let values = y
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::Io(format!("embedding readback: {e:?}")))?;
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(TrainError::Data(DataError::Invalid(format!(
                "{}: the backbone produced a non-finite value (check the weights file)",
                batch_path(&loader, &batch.indices, bad / dim.max(1))
            ))));
        }
        out.extend(values);
        rows.extend(&batch.indices);
        progress(rows.len(), n);
    }
    let m = Matrix::new(rows.len(), dim, out).map_err(|e| TrainError::Io(e.to_string()))?;
    Ok((m, rows))
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

/// Saved between epochs for exact resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageResumeState {
    next_epoch: usize,
    steps: usize,
    best_epoch: Option<usize>,
    best_value: Option<f64>,
    optimizer_steps: HashMap<String, u64>,
    history: Vec<EpochRecord>,
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

/// Fine-tunes `[backbone]` + `[model]` on the images of `[images]` with the class loss of
/// `[loss]` and the batches of `[sampler]`. See the module docs for the run folder.
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
    let mut sampler = cfg.sampler.build_with_supers(
        &dense,
        splits.train.super_labels.as_deref(),
        cfg.train.seed,
    )?;
    let mut loss = cfg
        .loss
        .init(classes.len(), cfg.model.output_dim, &device)?;
    let head = cfg
        .model
        .init(cfg.train.seed, &device)
        .map_err(TrainError::Config)?;
    let mut model = ImageModel { backbone, head };

    let train_set = Arc::new(splits.train);
    let loader = ImageLoader::new(
        train_set.clone(),
        images.train_pipeline(normalize, cfg.train.seed),
        images.loader(),
    )?;
    let eval_pipeline = images.eval_pipeline(normalize);
    eval_pipeline.validate()?;

    let mut backbone_opt = Adam::new(cfg.optim.clone());
    let mut head_opt = Adam::new(cfg.optim.clone());
    let mut loss_opt = Adam::new(cfg.optim.clone());
    let loss_lr_mult = cfg.loss.proxy_lr_multiplier().unwrap_or(1.0);
    let files = out_dir.map(|d| RunFiles {
        dir: d.to_path_buf(),
    });
    let mut state = ImageResumeState {
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
            model.backbone = model
                .backbone
                .load_weights(&f.dir.join("backbone-last.safetensors"))
                .map_err(|e| TrainError::Checkpoint(e.to_string()))?
                .with_batch_norm(bcfg.batch_norm);
            let (tensors, _) = load_safetensors(&f.dir.join("last.safetensors"))?;
            model.head = load_module(model.head, &tensors, "head.")?;
            if loss.has_parameters() {
                loss = load_module(loss, &tensors, "loss.")?;
            }
            backbone_opt.load_state(
                &tensors,
                &state.optimizer_steps,
                "optim.backbone.",
                &device,
            )?;
            head_opt.load_state(&tensors, &state.optimizer_steps, "optim.head.", &device)?;
            loss_opt.load_state(&tensors, &state.optimizer_steps, "optim.loss.", &device)?;
        } else {
            let _ = std::fs::remove_file(f.dir.join("metrics.jsonl"));
        }
        let text = toml::to_string_pretty(&cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        write_atomic(&f.dir.join("config.toml"), text.as_bytes())?;
    }

    let eval_cfg = cfg.eval_config();
    let eval_batch = cfg.sampler.batch_size.max(1);
    let mut best: Option<ImageModel> = None;
    for epoch in state.next_epoch..cfg.train.epochs {
        let lr = cfg.optim.lr_at_epoch(epoch);
        let batches = sampler.epoch(epoch as u64);
        observer.epoch_start(epoch, batches.len());
        let started = Instant::now();
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut total_sum = 0.0;
        let mut done = 0usize;
        for (b, batch) in loader.epoch(epoch as u64, batches).enumerate() {
            let batch = batch?;
            let y: Vec<i64> = batch.indices.iter().map(|&i| dense[i]).collect();
            let x = Tensor::<4>::from_data(TensorData::new(batch.data, batch.shape), &device);
            let emb = model.head.forward(model.backbone.forward(x));
            let out = loss.forward(emb, &y).map_err(|e| TrainError::Diverged {
                epoch,
                step: state.steps,
                cause: e.to_string(),
            })?;
            let terms = record_terms(&out, epoch, state.steps, &mut total_sum, &mut sums)?;
            let mut grads = out.total.backward();
            let mut head_grads = GradientsParams::from_module(&mut grads, &model.head);
            let mut backbone_grads = GradientsParams::from_module(&mut grads, &model.backbone);
            model.head = head_opt.step(model.head, &mut head_grads, lr);
            model.backbone = backbone_opt.step(
                model.backbone,
                &mut backbone_grads,
                lr * cfg.optim.backbone_lr_mult,
            );
            if loss.has_parameters() {
                let mut loss_grads = GradientsParams::from_module(&mut grads, &loss);
                loss = loss_opt.step(loss, &mut loss_grads, lr * loss_lr_mult);
            }
            state.steps += 1;
            done += 1;
            observer.step(epoch, b, &terms);
        }
        let warnings = loader.warnings();
        if !warnings.is_empty() {
            eprintln!(
                "warning: {} image(s) skipped so far; first: {}",
                warnings.len(),
                warnings[0]
            );
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
        if let Some(val) = &splits.val {
            if cfg.train.eval_every > 0 && ((epoch + 1) % cfg.train.eval_every == 0 || last_epoch) {
                let report = validate_images(
                    &model,
                    val,
                    eval_pipeline,
                    images.loader(),
                    eval_batch,
                    &eval_cfg,
                    &device,
                )?;
                let metrics = metric_map(&report.metrics);
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
                    best = Some(model.clone());
                    if let Some(f) = &files {
                        save_model(&f.dir, "best", &model, epoch)?;
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
            let mut tensors = module_tensors(&model.head, "head.");
            if loss.has_parameters() {
                tensors.extend(module_tensors(&loss, "loss."));
            }
            let mut steps = HashMap::new();
            for (opt, prefix) in [
                (&backbone_opt, "optim.backbone."),
                (&head_opt, "optim.head."),
                (&loss_opt, "optim.loss."),
            ] {
                let (t, s) = opt.state_tensors(prefix);
                tensors.extend(t);
                steps.extend(s);
            }
            state.optimizer_steps = steps;
            model
                .backbone
                .save_safetensors(&f.dir.join("backbone-last.safetensors"))
                .map_err(|e| TrainError::Io(e.to_string()))?;
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
    Ok(ImageTrainOutcome {
        model: best.unwrap_or(model),
        history: state.history,
        best_epoch: state.best_epoch,
        best_value: state.best_value,
    })
}

fn save_model(dir: &Path, which: &str, model: &ImageModel, epoch: usize) -> Result<(), TrainError> {
    model
        .backbone
        .save_safetensors(&dir.join(format!("backbone-{which}.safetensors")))
        .map_err(|e| TrainError::Io(e.to_string()))?;
    save_safetensors(
        &dir.join(format!("{which}.safetensors")),
        &module_tensors(&model.head, "head."),
        run_metadata(epoch),
    )
}
