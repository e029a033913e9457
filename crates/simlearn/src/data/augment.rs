//! Image decoding and augmentation for [`ImageDataset`]s, batch by batch on a rayon pool with
//! prefetch.
//!
//! The transforms follow torchvision's defaults for metric-learning training:
//! - training: `RandomResizedCrop(size, scale = (0.16, 1), ratio = (3/4, 4/3))` (the DML papers'
//!   lower scale bound; torchvision's own default is 0.08), then `RandomHorizontalFlip(0.5)`;
//! - evaluation: `Resize(resize)` of the shorter side, then `CenterCrop(crop)`;
//! - then `ToTensor` (CHW, values / 255) and `Normalize(mean, std)` with ImageNet statistics
//!   (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225) or mean = std = 0.5.
//!
//! Resampling is bilinear with an antialiasing support that widens on downscaling
//! (`fast_image_resize`'s convolution, as PIL's), applied once to the crop region in source
//! coordinates. Randomness for image `index` of `epoch` comes from a ChaCha8 stream keyed by
//! `(seed, epoch, index)`, so a batch is identical whatever thread decodes it and in whatever
//! order.

use std::cell::RefCell;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::images::ImageDataset;
use super::{DataError, Labels};

/// Per-channel normalisation applied after scaling pixels to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    /// ImageNet statistics: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
    /// (torchvision's pretrained models).
    ImageNet,
    /// mean = std = 0.5 for every channel (maps [0, 1] to [-1, 1]; EfficientNet-Lite, see
    /// datasets.md).
    Half,
}

impl Normalize {
    /// `(mean, std)` per RGB channel.
    pub fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Normalize::ImageNet => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Normalize::Half => ([0.5; 3], [0.5; 3]),
        }
    }
}

/// The geometric part of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Geometry {
    /// torchvision `RandomResizedCrop(size, scale, ratio)` then a horizontal flip with
    /// probability `flip_p`.
    RandomResizedCrop {
        /// Output side in pixels.
        size: u32,
        /// Bounds of the crop area as a fraction of the image area.
        scale: (f64, f64),
        /// Bounds of the crop's width / height.
        ratio: (f64, f64),
        /// Probability of a horizontal flip.
        flip_p: f64,
    },
    /// `Resize(resize)` of the shorter side, then `CenterCrop(crop)`; needs `crop <= resize`.
    ResizeCenterCrop {
        /// Shorter side after resizing.
        resize: u32,
        /// Output side.
        crop: u32,
    },
}

/// A decoding + augmentation pipeline producing CHW `f32` images of one size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pipeline {
    /// Crop / resize / flip.
    pub geometry: Geometry,
    /// Normalisation after scaling to [0, 1].
    pub normalize: Normalize,
    /// Seed of the per-image ChaCha8 streams.
    pub seed: u64,
}

/// An integer crop rectangle in source pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Width in pixels (≥ 1).
    pub width: u32,
    /// Height in pixels (≥ 1).
    pub height: u32,
}

/// The random stream of image `index` in `epoch`: a ChaCha8 key made of the three numbers, so
/// distinct triples never share a stream.
pub fn item_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Which of `views` fixed augmented views image `index` shows in `epoch` (`views > 0`): a
/// draw from a stream of its own (bytes 24..32 of the key mark it), so the choice does not
/// correlate with any augmentation stream.
pub fn view_of(seed: u64, epoch: u64, index: u64, views: u64) -> u64 {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"viewpick");
    ChaCha8Rng::from_seed(key).random_range(0..views)
}

/// torchvision's `RandomResizedCrop.get_params` for a `width × height` image: up to 10 tries of
/// an area fraction `s ~ U(scale)` and a log-uniform aspect ratio `r ~ exp(U(ln ratio))`, giving
/// `w = round(sqrt(s·A·r))`, `h = round(sqrt(s·A/r))` (ties to even, as Python's `round`); the
/// first that fits is placed uniformly. Otherwise the centre crop of the whole image clamped to
/// the ratio bounds.
pub fn random_resized_crop_box(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut impl Rng,
) -> CropBox {
    let area = width as f64 * height as f64;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, lr0, lr1).exp();
        let w = (target * aspect).sqrt().round_ties_even();
        let h = (target / aspect).sqrt().round_ties_even();
        if w > 0.0 && h > 0.0 && w <= width as f64 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return CropBox {
                left,
                top,
                width: w,
                height: h,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (lo, hi) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < lo {
        (width, ((width as f64 / lo).round_ties_even() as u32).max(1))
    } else if in_ratio > hi {
        (
            ((height as f64 * hi).round_ties_even() as u32).max(1),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        left: (width - w) / 2,
        top: (height - h) / 2,
        width: w,
        height: h,
    }
}

fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// The region of the source that `Resize(resize)` + `CenterCrop(crop)` keeps, in source
/// coordinates `(left, top, width, height)`: the shorter side becomes `resize` and the longer
/// `floor(resize · long / short)` (torchvision), the crop starts at `round((side - crop) / 2)`.
pub fn center_crop_region(width: u32, height: u32, resize: u32, crop: u32) -> (f64, f64, f64, f64) {
    let (nw, nh) = if width <= height {
        (
            resize,
            (resize as u64 * height as u64 / width as u64) as u32,
        )
    } else {
        (
            (resize as u64 * width as u64 / height as u64) as u32,
            resize,
        )
    };
    let left = ((nw as f64 - crop as f64) / 2.0).round_ties_even();
    let top = ((nh as f64 - crop as f64) / 2.0).round_ties_even();
    let (sx, sy) = (width as f64 / nw as f64, height as f64 / nh as f64);
    (left * sx, top * sy, crop as f64 * sx, crop as f64 * sy)
}

/// Decodes an image file to 8-bit RGB (alpha dropped, grey expanded); the error names the file.
pub fn decode(path: &Path) -> Result<RgbImage, DataError> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::Invalid(format!("{}: cannot open image: {e}", path.display())))?
        .with_guessed_format()
        .map_err(|e| DataError::Invalid(format!("{}: cannot read image: {e}", path.display())))?
        .decode()
        .map_err(|e| DataError::Invalid(format!("{}: cannot decode image: {e}", path.display())))?;
    Ok(img.to_rgb8())
}

/// Mirrors an RGB image left-right in place.
pub fn hflip(img: &mut RgbImage) {
    let w = img.width() as usize;
    for row in img.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
}

/// `ToTensor` + `Normalize`: CHW values `(p / 255 − mean_c) / std_c`.
pub fn to_chw(img: &RgbImage, normalize: Normalize) -> Vec<f32> {
    let (mean, std) = normalize.mean_std();
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (px[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

thread_local! {
    // Resizer keeps scratch buffers; one per worker thread avoids reallocating per image.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

fn resize_region(
    img: &RgbImage,
    region: (f64, f64, f64, f64),
    side: u32,
) -> Result<RgbImage, DataError> {
    let mut dst = RgbImage::new(side, side);
    let opts = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(region.0, region.1, region.2, region.3);
    RESIZER
        .with(|r| r.borrow_mut().resize(img, &mut dst, &opts))
        .map_err(|e| DataError::Invalid(format!("resize failed: {e}")))?;
    Ok(dst)
}

impl Pipeline {
    /// Training pipeline: RandomResizedCrop(`size`, scale 0.16–1, ratio 3/4–4/3), flip p = 0.5,
    /// ImageNet normalisation.
    pub fn train(size: u32, seed: u64) -> Self {
        Pipeline {
            geometry: Geometry::RandomResizedCrop {
                size,
                scale: (0.16, 1.0),
                ratio: (3.0 / 4.0, 4.0 / 3.0),
                flip_p: 0.5,
            },
            normalize: Normalize::ImageNet,
            seed,
        }
    }

    /// Evaluation pipeline: Resize(`resize`) + CenterCrop(`crop`), ImageNet normalisation
    /// (the papers use 256 / 224).
    pub fn eval(resize: u32, crop: u32) -> Self {
        Pipeline {
            geometry: Geometry::ResizeCenterCrop { resize, crop },
            normalize: Normalize::ImageNet,
            seed: 0,
        }
    }

    /// Checks the parameters; the error names the offending one.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Invalid(m));
        match self.geometry {
            Geometry::RandomResizedCrop {
                size,
                scale,
                ratio,
                flip_p,
            } => {
                if size == 0 {
                    return bad("RandomResizedCrop size must be at least 1".into());
                }
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return bad(format!(
                        "RandomResizedCrop scale {scale:?} must satisfy 0 < min <= max <= 1"
                    ));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return bad(format!(
                        "RandomResizedCrop ratio {ratio:?} must satisfy 0 < min <= max"
                    ));
                }
                if !(0.0..=1.0).contains(&flip_p) {
                    return bad(format!("flip probability {flip_p} must lie in [0, 1]"));
                }
            }
            Geometry::ResizeCenterCrop { resize, crop } => {
                if crop == 0 || crop > resize {
                    return bad(format!(
                        "CenterCrop {crop} must satisfy 1 <= crop <= resize ({resize})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Output side in pixels.
    pub fn size(&self) -> u32 {
        match self.geometry {
            Geometry::RandomResizedCrop { size, .. } => size,
            Geometry::ResizeCenterCrop { crop, .. } => crop,
        }
    }

    /// Number of floats per output image (`3 · size²`).
    pub fn output_len(&self) -> usize {
        3 * (self.size() as usize).pow(2)
    }

    /// Transforms a decoded image as item `index` of `epoch`: CHW `f32`, `3 × size × size`.
    pub fn apply(&self, img: &RgbImage, epoch: u64, index: u64) -> Result<Vec<f32>, DataError> {
        self.validate()?;
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Err(DataError::Invalid("the image has no pixels".into()));
        }
        let out = match self.geometry {
            Geometry::RandomResizedCrop {
                size,
                scale,
                ratio,
                flip_p,
            } => {
                let mut rng = item_rng(self.seed, epoch, index);
                let b = random_resized_crop_box(w, h, scale, ratio, &mut rng);
                // Drawn whatever flip_p is, so changing flip_p never shifts later draws.
                let flip = rng.random::<f64>() < flip_p;
                let region = (b.left as f64, b.top as f64, b.width as f64, b.height as f64);
                let mut out = resize_region(img, region, size)?;
                if flip {
                    hflip(&mut out);
                }
                out
            }
            Geometry::ResizeCenterCrop { resize, crop } => {
                resize_region(img, center_crop_region(w, h, resize, crop), crop)?
            }
        };
        Ok(to_chw(&out, self.normalize))
    }

    /// Decodes `path` and applies the pipeline; errors name the file.
    pub fn load(&self, path: &Path, epoch: u64, index: u64) -> Result<Vec<f32>, DataError> {
        let img = decode(path)?;
        self.apply(&img, epoch, index)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", path.display())))
    }
}

/// Settings of an [`ImageLoader`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderConfig {
    /// Decoding threads (0 = rayon's default, one per core).
    pub threads: usize,
    /// Batches decoded ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Skip images that fail to decode (counted in [`ImageLoader::warnings`]) instead of
    /// ending the epoch with an error.
    pub skip_bad: bool,
}

impl Default for LoaderConfig {
    /// All cores, 2 batches ahead, errors stop the epoch.
    fn default() -> Self {
        LoaderConfig {
            threads: 0,
            prefetch: 2,
            skip_bad: false,
        }
    }
}

/// A decoded batch: `data` is `shape = [n, 3, size, size]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// Pixel values, CHW per image.
    pub data: Vec<f32>,
    /// `[n, 3, size, size]`.
    pub shape: [usize; 4],
    /// Dataset indices of the images (bad images left out under `skip_bad`).
    pub indices: Vec<usize>,
    /// Their labels.
    pub labels: Labels,
}

/// Decodes batches of an [`ImageDataset`] on a dedicated rayon pool, `prefetch` batches ahead
/// of the consumer.
pub struct ImageLoader {
    dataset: Arc<ImageDataset>,
    pipeline: Pipeline,
    config: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    warnings: Arc<Mutex<Vec<String>>>,
    views: u64,
    pick_seed: u64,
}

/// The augmentation "epoch" each image of a batch is drawn with.
#[derive(Debug, Clone, Copy)]
enum ItemEpoch {
    /// Every image uses the batch's epoch.
    Epoch(u64),
    /// Each image shows one of `views` fixed views, picked by [`view_of`].
    Views { epoch: u64, views: u64, seed: u64 },
}

impl ItemEpoch {
    fn of(self, index: u64) -> u64 {
        match self {
            ItemEpoch::Epoch(e) => e,
            ItemEpoch::Views { epoch, views, seed } => view_of(seed, epoch, index, views),
        }
    }
}

impl ImageLoader {
    /// Checks the pipeline and builds the thread pool.
    pub fn new(
        dataset: Arc<ImageDataset>,
        pipeline: Pipeline,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        pipeline.validate()?;
        if config.prefetch == 0 {
            return Err(DataError::Invalid(
                "loader prefetch must be at least 1".into(),
            ));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(|i| format!("simlearn-img-{i}"))
            .build()
            .map_err(|e| {
                DataError::Invalid(format!("cannot start the image loader threads: {e}"))
            })?;
        Ok(ImageLoader {
            dataset,
            pipeline,
            config,
            pool: Arc::new(pool),
            warnings: Arc::new(Mutex::new(Vec::new())),
            views: 0,
            pick_seed: pipeline.seed,
        })
    }

    /// Fixed views: with `views > 0`, image `i` of epoch `e` is augmented as view
    /// `view_of(pick_seed, e, i, views)` (its augmentation stream is that of "epoch" = the
    /// view, under the pipeline's seed), so every image has `views` distinct augmentations
    /// over the whole run. `pick_seed` (which view an epoch shows) is separate from the
    /// pipeline's seed (what the views are), so that runs of several seeds can share views.
    pub fn with_views(mut self, views: u64, pick_seed: u64) -> Self {
        self.views = views;
        self.pick_seed = pick_seed;
        self
    }

    /// The number of fixed views (0: fresh augmentations every epoch).
    pub fn views(&self) -> u64 {
        self.views
    }

    fn item_epoch(&self, epoch: u64) -> ItemEpoch {
        if self.views > 0 {
            ItemEpoch::Views {
                epoch,
                views: self.views,
                seed: self.pick_seed,
            }
        } else {
            ItemEpoch::Epoch(epoch)
        }
    }

    /// Decodes view `view` of every image of `batch` (what the trunk cache stores).
    pub fn load_view(&self, view: u64, batch: &[usize]) -> Result<ImageBatch, DataError> {
        self.build(ItemEpoch::Epoch(view), batch)
    }

    fn build(&self, epoch: ItemEpoch, batch: &[usize]) -> Result<ImageBatch, DataError> {
        build_batch(
            &self.dataset,
            &self.pipeline,
            self.config.skip_bad,
            &self.pool,
            &self.warnings,
            epoch,
            batch,
        )
    }

    /// Messages of the images skipped so far (one per bad image and epoch, naming the file).
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Decodes one batch synchronously (on the loader's pool).
    pub fn load_batch(&self, epoch: u64, batch: &[usize]) -> Result<ImageBatch, DataError> {
        self.build(self.item_epoch(epoch), batch)
    }

    /// Streams the batches of an epoch, decoded in the background. Indices out of range end the
    /// stream with an error; under `skip_bad` a batch whose images all failed is left out.
    pub fn epoch(&self, epoch: u64, batches: Vec<Vec<usize>>) -> BatchStream {
        let (tx, rx) = sync_channel(self.config.prefetch);
        let dataset = self.dataset.clone();
        let pipeline = self.pipeline;
        let skip_bad = self.config.skip_bad;
        let pool = self.pool.clone();
        let warnings = self.warnings.clone();
        let item_epoch = self.item_epoch(epoch);
        let handle = std::thread::spawn(move || {
            for b in batches {
                let r = build_batch(
                    &dataset, &pipeline, skip_bad, &pool, &warnings, item_epoch, &b,
                );
                let stop = r.is_err();
                if matches!(&r, Ok(batch) if batch.indices.is_empty()) {
                    continue;
                }
                // A closed channel means the consumer dropped the stream: stop decoding.
                if tx.send(r).is_err() || stop {
                    break;
                }
            }
        });
        BatchStream {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

fn build_batch(
    dataset: &ImageDataset,
    pipeline: &Pipeline,
    skip_bad: bool,
    pool: &rayon::ThreadPool,
    warnings: &Mutex<Vec<String>>,
    epoch: ItemEpoch,
    batch: &[usize],
) -> Result<ImageBatch, DataError> {
    if let Some(&i) = batch.iter().find(|&&i| i >= dataset.len()) {
        return Err(DataError::Invalid(format!(
            "batch index {i} is out of range for {} images",
            dataset.len()
        )));
    }
    let results: Vec<Result<Vec<f32>, DataError>> = pool.install(|| {
        batch
            .par_iter()
            .map(|&i| pipeline.load(&dataset.paths[i], epoch.of(i as u64), i as u64))
            .collect()
    });
    let mut data = Vec::with_capacity(batch.len() * pipeline.output_len());
    let mut kept = Vec::with_capacity(batch.len());
    for (&i, r) in batch.iter().zip(results) {
        match r {
            Ok(v) => {
                data.extend_from_slice(&v);
                kept.push(i);
            }
            Err(e) if skip_bad => {
                if let Ok(mut w) = warnings.lock() {
                    w.push(format!("skipped: {e}"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    let s = pipeline.size() as usize;
    Ok(ImageBatch {
        data,
        shape: [kept.len(), 3, s, s],
        labels: dataset.labels.select(&kept),
        indices: kept,
    })
}

/// The batches of one epoch, in order; see [`ImageLoader::epoch`].
pub struct BatchStream {
    rx: Option<Receiver<Result<ImageBatch, DataError>>>,
    handle: Option<JoinHandle<()>>,
}

impl Iterator for BatchStream {
    type Item = Result<ImageBatch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Closing the channel first lets a producer blocked on a full queue see the hang-up.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
