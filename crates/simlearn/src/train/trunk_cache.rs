//! The frozen trunk's outputs, computed once: for partial fine-tuning with fixed views
//! (`backbone.train_stages`, `backbone.views`, `backbone.cache = true`), the output of the
//! frozen stages for each of the `V` augmented views of every training image, so that an epoch
//! runs only the trained stages; and the same for the validation images under the evaluation
//! pipeline, so that validating runs only the trained stages too.
//!
//! Layout of the cache folder (`backbone.cache_dir`, default `<run>/trunk-cache/`):
//! `trunk.f16` (or `trunk.f32` under `backbone.cache_dtype = "f32"`), the values as
//! little-endian IEEE floats, image-major (`(image × V + view) × c × h × w`), memory-mapped
//! while training; and `manifest.json`, its shape and the key of everything the values depend
//! on: the backbone settings and weight file (size, modification time), the image pipeline,
//! the views seed, every training image (path, size, modification time) and the simlearn
//! version. The validation sets sit beside it as `val.f32` + `val.json` (or `query`,
//! `gallery`), always f32, keyed without seed or views. A cache whose key differs from the
//! run's is rebuilt; its size is reported before it is built. Both files are written
//! atomically (the values under a per-process temporary name, renamed once complete, then the
//! manifest), so a crash never leaves a cache that looks complete, and runs sharing a folder
//! never write into each other's files.
//!
//! f16 (the default) keeps 11 significant bits: the cached values differ from the f32 trunk
//! outputs by at most 2⁻¹¹ relative (post-ReLU activations, far from f16's range limits), the
//! price of halving the cache; `f32` stores them exactly.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use half::f16;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use super::checkpoint::write_atomic;
use super::{BatchSource, SourceBatch, TrainConfig, TrainError, TrainObserver};
use crate::data::augment::{ImageLoader, LoaderConfig, Pipeline};
use crate::data::images::ImageDataset;
use crate::models::backbone::CacheDtype;
use crate::models::Backbone;

const FORMAT: &str = "simlearn-trunk-cache";
const VERSION: u32 = 1;
/// Images per forward pass while the cache is built.
const BUILD_BATCH: usize = 16;

/// What `manifest.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: String,
    version: u32,
    /// Hex digest of everything the values depend on.
    key: String,
    images: usize,
    views: u64,
    /// Storage of each value.
    dtype: CacheDtype,
    /// Frozen stages the values went through.
    stages: usize,
    /// `[c, h, w]` of one view.
    shape: [usize; 3],
    bytes: u64,
}

/// The memory-mapped cache of a frozen trunk's outputs; a [`BatchSource`] of them.
pub(crate) struct TrunkCache {
    map: Mmap,
    manifest: Manifest,
    seed: u64,
}

/// 64-bit FNV-1a, twice with different offsets: a stable digest (std's hasher may change
/// between Rust releases) for change detection, not for security.
struct Digest([u64; 2]);

impl Digest {
    fn new() -> Self {
        Digest([0xcbf2_9ce4_8422_2325, 0x6c62_272e_07bb_0142])
    }
    fn bytes(&mut self, b: &[u8]) {
        for h in &mut self.0 {
            for &x in b.iter().chain(&(b.len() as u64).to_le_bytes()) {
                *h ^= x as u64;
                *h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    fn file(&mut self, path: &Path) {
        self.bytes(path.to_string_lossy().as_bytes());
        match std::fs::metadata(path) {
            Ok(m) => {
                self.bytes(&m.len().to_le_bytes());
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                self.bytes(&t.to_le_bytes());
            }
            Err(_) => self.bytes(b"missing"),
        }
    }
    fn hex(&self) -> String {
        format!("{:016x}{:016x}", self.0[0], self.0[1])
    }
}

/// Digest of everything the frozen stages' outputs of `dataset` depend on: the simlearn
/// version, the frozen stage count, the backbone settings and weight file, the `[images]`
/// pipeline (sizes, augmentation, normalisation) and every image (path, size, modification
/// time), in dataset order. The training cache (`train`) adds the views seed, the
/// views and the storage; a validation cache (evaluation pipeline, f32) depends on none of them.
/// The learning rates, losses and epochs never matter.
fn cache_key(cfg: &TrainConfig, frozen: usize, dataset: &ImageDataset, train: bool) -> String {
    let mut d = Digest::new();
    d.bytes(env!("CARGO_PKG_VERSION").as_bytes());
    let b = cfg.backbone.clone().unwrap_or_default();
    if train {
        // The views are drawn from the views seed; which view an epoch shows is not cached.
        d.bytes(&b.views_seed.unwrap_or(cfg.train.seed).to_le_bytes());
    } else {
        d.bytes(b"eval");
    }
    d.bytes(&(frozen as u64).to_le_bytes());
    // Of `[images]`, only what changes the pixels: the images themselves are digested below,
    // so how they are listed (layout, root, list files) or decoded in parallel does not count.
    let pipeline = cfg.images.as_ref().map(|i| {
        serde_json::json!({
            "size": i.size, "resize": i.resize, "crop": i.crop, "min_scale": i.min_scale,
            "flip": i.flip, "normalize": i.normalize, "skip_bad": i.skip_bad,
        })
    });
    let mut settings = serde_json::json!({
        "arch": b.arch, "weights": b.weights, "width": b.width, "images": pipeline,
    });
    if train {
        settings["views"] = serde_json::json!(b.views);
        settings["dtype"] = serde_json::json!(b.cache_dtype);
    }
    d.bytes(settings.to_string().as_bytes());
    if let Some(w) = &b.weights {
        d.file(w);
    }
    d.bytes(&(dataset.len() as u64).to_le_bytes());
    for p in &dataset.paths {
        d.file(p);
    }
    d.hex()
}

/// The first `frozen` stages of a decoded batch (`expected` images), read back as f32.
fn frozen_outputs(
    backbone: &Backbone,
    frozen: usize,
    data: Vec<f32>,
    shape: [usize; 4],
    expected: usize,
    inner: &Device,
) -> Result<(Vec<f32>, [usize; 4]), TrainError> {
    if shape[0] != expected {
        return Err(TrainError::Config(
            "the trunk cache needs every image to decode (images.skip_bad skipped one)".into(),
        ));
    }
    let x = Tensor::<4>::from_data(TensorData::new(data, shape), inner);
    let y = backbone.forward_frozen(x, frozen);
    let dims = y.dims();
    let v = y
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainError::Io(format!("trunk readback: {e:?}")))?;
    Ok((v, dims))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// Computes the frozen stages' outputs of a batch of dataset indices for one view.
type Produce<'a> = dyn FnMut(&[usize], u64) -> Result<(Vec<f32>, [usize; 4]), TrainError> + 'a;

impl TrunkCache {
    /// Opens the training cache in `dir` if it is complete and its key matches this run, else
    /// builds it, reporting its size first through `observer.note` and its progress through
    /// `observer.work`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_or_build(
        dir: &Path,
        backbone: &Backbone,
        frozen: usize,
        loader: &ImageLoader,
        dataset: &ImageDataset,
        cfg: &TrainConfig,
        device: &Device,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let dtype = cfg
            .backbone
            .as_ref()
            .map(|b| b.cache_dtype)
            .unwrap_or_default();
        let inner = device.clone().without_autodiff();
        let backbone = backbone.clone();
        let mut run = |batch: &[usize], view: u64| {
            let b = loader.load_view(view, batch)?;
            frozen_outputs(&backbone, frozen, b.data, b.shape, batch.len(), &inner)
        };
        Self::open_or_build_with(
            dir,
            "trunk",
            cache_key(cfg, frozen, dataset, true),
            dtype,
            dataset.len(),
            loader.views(),
            frozen,
            cfg.train.seed,
            &mut run,
            observer,
        )
    }

    /// The frozen stages' outputs of the validation images `dataset` under the evaluation
    /// pipeline (one deterministic view, stored as f32 so that validation through the cache
    /// gives the uncached embeddings), in `dir`, named `name` (`val`, `query`, `gallery`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_or_build_eval(
        dir: &Path,
        name: &str,
        backbone: &Backbone,
        frozen: usize,
        dataset: &Arc<ImageDataset>,
        pipeline: Pipeline,
        loader: LoaderConfig,
        cfg: &TrainConfig,
        device: &Device,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let loader = ImageLoader::new(dataset.clone(), pipeline, loader)?;
        let inner = device.clone().without_autodiff();
        let backbone = backbone.clone();
        let mut run = |batch: &[usize], _view: u64| {
            let b = loader.load_view(0, batch)?;
            frozen_outputs(&backbone, frozen, b.data, b.shape, batch.len(), &inner)
        };
        Self::open_or_build_with(
            dir,
            name,
            cache_key(cfg, frozen, dataset, false),
            CacheDtype::F32,
            dataset.len(),
            1,
            frozen,
            0,
            &mut run,
            observer,
        )
    }

    /// Opens `<dir>/<name>.<dtype>` if its manifest `<dir>/<name>.json` holds `key`, else builds
    /// it from `produce`, `n` images × `views` views.
    #[allow(clippy::too_many_arguments)]
    fn open_or_build_with(
        dir: &Path,
        name: &str,
        key: String,
        dtype: CacheDtype,
        n: usize,
        views: u64,
        stages: usize,
        seed: u64,
        produce: &mut Produce<'_>,
        observer: &mut dyn TrainObserver,
    ) -> Result<Self, TrainError> {
        let label = if name == "trunk" {
            "trunk cache".to_string()
        } else {
            format!("trunk cache ({name})")
        };
        let values = dir.join(format!("{name}.{}", dtype.name()));
        let size = dtype.size() as u64;
        let manifest_path = dir.join(if name == "trunk" {
            "manifest.json".to_string()
        } else {
            format!("{name}.json")
        });
        if let Some(m) = read_manifest(&manifest_path) {
            let len = std::fs::metadata(&values).map(|m| m.len()).ok();
            if m.key == key && m.format == FORMAT && m.version == VERSION && len == Some(m.bytes) {
                observer.note(&format!(
                    "{label}: reusing {} ({:.2} GiB)",
                    values.display(),
                    m.bytes as f64 / (1u64 << 30) as f64
                ));
                return Self::map(&values, m, seed);
            }
            observer.note(&format!(
                "{label}: the config or the data changed since it was built; rebuilding"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        // The manifest goes first, so that a cache interrupted while rebuilding is not reused.
        let _ = std::fs::remove_file(&manifest_path);
        let (_, [_, c, h, w]) = produce(&[0], 0)?;
        let item = c * h * w;
        let bytes = (n as u64) * views * (item as u64) * size;
        observer.note(&format!(
            "{label}: {n} images × {views} views × {c}×{h}×{w} {} = {:.2} GiB in {}",
            dtype.name(),
            bytes as f64 / (1u64 << 30) as f64,
            values.display()
        ));
        // A per-process name: runs sharing `dir` never write into one another's partial file.
        let partial = dir.join(format!(
            "{name}.{}.partial-{}",
            dtype.name(),
            std::process::id()
        ));
        let mut f = std::fs::File::create(&partial).map_err(|e| io_err(&partial, e))?;
        f.set_len(bytes).map_err(|e| io_err(&partial, e))?;
        let total = n * views as usize;
        let mut done = 0;
        let mut buf = Vec::with_capacity(item * size as usize);
        let all: Vec<usize> = (0..n).collect();
        for view in 0..views {
            for batch in all.chunks(BUILD_BATCH) {
                let (v, _) = produce(batch, view)?;
                for (row, &i) in batch.iter().enumerate() {
                    buf.clear();
                    for &x in &v[row * item..(row + 1) * item] {
                        match dtype {
                            CacheDtype::F16 => {
                                buf.extend_from_slice(&f16::from_f32(x).to_bits().to_le_bytes())
                            }
                            CacheDtype::F32 => buf.extend_from_slice(&x.to_le_bytes()),
                        }
                    }
                    let offset = ((i as u64) * views + view) * (item as u64) * size;
                    f.seek(SeekFrom::Start(offset))
                        .and_then(|_| f.write_all(&buf))
                        .map_err(|e| io_err(&partial, e))?;
                }
                done += batch.len();
                observer.work(&label, done, total);
            }
        }
        f.sync_all().map_err(|e| io_err(&partial, e))?;
        drop(f);
        std::fs::rename(&partial, &values).map_err(|e| io_err(&values, e))?;
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            key,
            images: n,
            views,
            dtype,
            stages,
            shape: [c, h, w],
            bytes,
        };
        let text = serde_json::to_string_pretty(&manifest).expect("manifest serialises");
        write_atomic(&manifest_path, text.as_bytes())?;
        Self::map(&values, manifest, seed)
    }

    fn map(path: &Path, manifest: Manifest, seed: u64) -> Result<Self, TrainError> {
        let f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
        // SAFETY: the file is only ever replaced by rename, never written in place (builders
        // write a per-process partial file), so the mapped bytes do not change while mapped.
        let map = unsafe { Mmap::map(&f) }.map_err(|e| io_err(path, e))?;
        if map.len() as u64 != manifest.bytes {
            return Err(io_err(path, "truncated trunk cache"));
        }
        Ok(TrunkCache {
            map,
            manifest,
            seed,
        })
    }

    /// Images in the cache.
    pub(crate) fn len(&self) -> usize {
        self.manifest.images
    }

    /// Frozen stages the values went through.
    pub(crate) fn stages(&self) -> usize {
        self.manifest.stages
    }

    /// View 0 of the images `indices` as one `len × c × h × w` batch (what validation reads).
    pub(crate) fn batch(&self, indices: &[usize]) -> (Vec<f32>, [usize; 4]) {
        let [c, h, w] = self.manifest.shape;
        let mut data = Vec::with_capacity(indices.len() * self.item_len());
        for &i in indices {
            self.read(i, 0, &mut data);
        }
        (data, [indices.len(), c, h, w])
    }

    fn item_len(&self) -> usize {
        self.manifest.shape.iter().product()
    }

    /// The cached values of `view` of image `index`, as f32.
    fn read(&self, index: usize, view: u64, out: &mut Vec<f32>) {
        let item = self.item_len();
        let size = self.manifest.dtype.size();
        let start = ((index as u64 * self.manifest.views + view) as usize) * item * size;
        let bytes = &self.map[start..start + item * size];
        match self.manifest.dtype {
            CacheDtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
            ),
            CacheDtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
        }
    }
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

impl BatchSource for TrunkCache {
    fn epoch<'a>(
        &'a self,
        epoch: u64,
        batches: Vec<Vec<usize>>,
    ) -> Box<dyn Iterator<Item = Result<SourceBatch, TrainError>> + 'a> {
        let [c, h, w] = self.manifest.shape;
        Box::new(batches.into_iter().map(move |indices| {
            if let Some(&i) = indices.iter().find(|&&i| i >= self.manifest.images) {
                return Err(TrainError::Io(format!(
                    "batch index {i} is out of range for a trunk cache of {} images",
                    self.manifest.images
                )));
            }
            let mut data = Vec::with_capacity(indices.len() * self.item_len());
            for &i in &indices {
                let view =
                    crate::data::augment::view_of(self.seed, epoch, i as u64, self.manifest.views);
                self.read(i, view, &mut data);
            }
            Ok(SourceBatch {
                shape: vec![indices.len(), c, h, w],
                indices,
                data,
                stages: self.manifest.stages,
            })
        }))
    }
}
