//! `simlearn embed`: run a backbone (and optionally a trained run's head) over an image dataset
//! and write the features with their labels, so heads train on a CPU in seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::prelude::Device;
use simlearn::data::augment::{Normalize, Pipeline};
use simlearn::data::images::ImageDataset;
use simlearn::data::Labels;
use simlearn::models::backbone::{Architecture, BatchNormMode, Pooling};
use simlearn::models::{BackboneConfig, EmbeddingHead};
use simlearn::train::images::{
    embed_images, load_image_run, ImageLayout, ImageModel, ImagesSection, NormalizeName,
};
use simlearn::train::TrainConfig;
use simlearn_eval::io::{write_npy_f32, write_npy_i64};
use simlearn_eval::Matrix;

use crate::progress::bar;

/// Embed an image dataset with a pretrained backbone (or a fine-tuned run).
#[derive(clap::Args)]
pub struct Args {
    /// Dataset root (a class folder, or the root of a benchmark layout).
    #[arg(long)]
    images: PathBuf,
    /// Layout of the dataset.
    #[arg(long, value_enum, default_value = "folder")]
    layout: LayoutArg,
    /// List file for `--layout list` / `inaturalist`.
    #[arg(long)]
    list: Option<PathBuf>,
    /// For layouts with a fixed split (sop, inshop): which part to embed.
    #[arg(long, value_enum, default_value = "all")]
    part: PartArg,
    /// Backbone architecture.
    #[arg(long, value_enum, default_value = "efficientnet-lite0")]
    arch: ArchArg,
    /// Pretrained weights (.pth zip/legacy or .safetensors). Required unless --run or --random.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Use a randomly initialised backbone (a baseline, not for real use).
    #[arg(long)]
    random: bool,
    /// Embed with a fine-tuned run folder's backbone and head (simlearn train on images).
    #[arg(long, conflicts_with_all = ["weights", "random"])]
    run: Option<PathBuf>,
    /// Global pooling.
    #[arg(long, value_enum, default_value = "avg")]
    pooling: PoolingArg,
    /// GeM power (with --pooling gem).
    #[arg(long, default_value_t = 3.0)]
    gem_p: f64,
    /// Resize of the shorter side before the centre crop (default 256; with --run, the run's
    /// images.resize, as `index build --run` and image queries use it).
    #[arg(long)]
    resize: Option<u32>,
    /// Centre-crop size, the network input (default 224; with --run, the run's images.crop).
    #[arg(long)]
    crop: Option<u32>,
    /// Normalisation (default: what the weights were trained with).
    #[arg(long, value_enum)]
    normalize: Option<NormArg>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Decoding threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Skip undecodable images (reported with a count) instead of stopping.
    #[arg(long)]
    skip_bad: bool,
    /// Output features: `.npy` (f32) or `.safetensors` (tensor `embeddings`).
    #[arg(long)]
    out: PathBuf,
    /// Output labels (`.npy` int64). Default: `<out stem>_labels.npy`. The image paths go to
    /// `<out stem>_paths.txt`, one per row.
    #[arg(long)]
    labels_out: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LayoutArg {
    Folder,
    List,
    Cub200,
    Cars196,
    Sop,
    Inshop,
    Inaturalist,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum PartArg {
    All,
    Train,
    Test,
    Query,
    Gallery,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ArchArg {
    Resnet18,
    Resnet50,
    EfficientnetLite0,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PoolingArg {
    Avg,
    Max,
    AvgMax,
    Gem,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NormArg {
    Imagenet,
    Half,
}

fn load_dataset(args: &Args) -> Result<ImageDataset> {
    let root = &args.images;
    let part = args.part;
    let check = |allowed: &[PartArg], layout: &str| -> Result<()> {
        if !allowed.contains(&part) {
            bail!("--part: layout {layout} has no such part (see --help)");
        }
        Ok(())
    };
    Ok(match args.layout {
        LayoutArg::Folder => {
            check(&[PartArg::All], "folder")?;
            ImageDataset::from_folder(root)?
        }
        LayoutArg::List | LayoutArg::Inaturalist => {
            check(&[PartArg::All], "list")?;
            let list = args
                .list
                .as_deref()
                .context("--list is required for --layout list / inaturalist")?;
            if matches!(args.layout, LayoutArg::List) {
                ImageDataset::from_list_file(list, root)?
            } else {
                ImageDataset::inaturalist(list, root)?
            }
        }
        LayoutArg::Cub200 | LayoutArg::Cars196 => {
            check(
                &[PartArg::All, PartArg::Train, PartArg::Test],
                "cub200/cars196",
            )?;
            let all = if matches!(args.layout, LayoutArg::Cub200) {
                ImageDataset::cub200(root)?
            } else {
                ImageDataset::cars196(root)?
            };
            match part {
                PartArg::All => all,
                PartArg::Train => all.class_disjoint_split()?.0,
                _ => all.class_disjoint_split()?.1,
            }
        }
        LayoutArg::Sop => {
            check(
                &[PartArg::Train, PartArg::Test],
                "sop (use --part train or test)",
            )?;
            ImageDataset::sop(root, part == PartArg::Test)?
        }
        LayoutArg::Inshop => {
            check(
                &[PartArg::Train, PartArg::Query, PartArg::Gallery],
                "inshop (use --part train, query or gallery)",
            )?;
            let s = simlearn::data::images::InShop::load(root)?;
            match part {
                PartArg::Train => s.train,
                PartArg::Query => s.query,
                _ => s.gallery,
            }
        }
    })
}

/// A fine-tuned image run folder, loaded.
pub(crate) struct LoadedRun {
    pub backbone: simlearn::models::Backbone,
    pub head: EmbeddingHead,
    /// The pipeline normalisation the run trained with.
    pub normalize: Normalize,
    /// The run's `[images]` section (its evaluation resize / crop).
    pub images: ImagesSection,
}

/// Loads the backbone, head and preprocessing of a fine-tuned image run folder.
pub(crate) fn load_run(dir: &Path, device: &Device) -> Result<LoadedRun> {
    let cfg_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path)
        .with_context(|| format!("{}: cannot read", cfg_path.display()))?;
    let cfg = TrainConfig::from_toml(&text).with_context(|| cfg_path.display().to_string())?;
    if cfg.data.source != "images" {
        bail!(
            "{}: not an image fine-tuning run (data.source = \"{}\"); embed features with the backbone, then use simlearn eval",
            dir.display(),
            cfg.data.source
        );
    }
    let bcfg = cfg.backbone.clone().unwrap_or_default();
    let ImageModel { backbone, head } = load_image_run(dir, &cfg, device)?;
    let images = cfg.images.unwrap_or_default();
    let normalize = images
        .normalize
        .map(Normalize::from)
        .unwrap_or_else(|| bcfg.arch.normalize());
    Ok(LoadedRun {
        backbone,
        head,
        normalize,
        images,
    })
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::flex();
    let dataset = load_dataset(&args)?;
    let Labels::Class(labels) = &dataset.labels else {
        bail!("{}: embed expects class labels", args.images.display());
    };
    let labels = labels.clone();
    let arch = match args.arch {
        ArchArg::Resnet18 => Architecture::Resnet18,
        ArchArg::Resnet50 => Architecture::Resnet50,
        ArchArg::EfficientnetLite0 => Architecture::EfficientnetLite0,
    };
    let pooling = match args.pooling {
        PoolingArg::Avg => Pooling::Avg,
        PoolingArg::Max => Pooling::Max,
        PoolingArg::AvgMax => Pooling::AvgMax,
        PoolingArg::Gem => Pooling::Gem { p: args.gem_p },
    };
    let (mut resize, mut crop) = (256, 224);
    let (backbone, head, default_norm) = match &args.run {
        Some(dir) => {
            let run = load_run(dir, &device)?;
            // The run's evaluation preprocessing, so these vectors match an index built from
            // the same run (`index build --run`) and its image queries.
            (resize, crop) = (run.images.resize, run.images.crop);
            (run.backbone, Some(run.head), run.normalize)
        }
        None => {
            if args.weights.is_none() && !args.random {
                bail!("--weights FILE is required (or --random for an untrained baseline, or --run DIR); EfficientNet-Lite0 ImageNet weights: scripts/fetch_weights.sh");
            }
            let cfg = BackboneConfig {
                arch,
                weights: args.weights.clone(),
                pooling,
                batch_norm: BatchNormMode::FrozenStats,
                ..BackboneConfig::default()
            };
            (cfg.init(None, &device)?, None, arch.normalize())
        }
    };
    let normalize = args.normalize.map_or(default_norm, |n| {
        Normalize::from(match n {
            NormArg::Imagenet => NormalizeName::Imagenet,
            NormArg::Half => NormalizeName::Half,
        })
    });
    let (resize, crop) = (args.resize.unwrap_or(resize), args.crop.unwrap_or(crop));
    let section = ImagesSection {
        layout: ImageLayout::Folder,
        resize,
        crop,
        threads: args.threads,
        skip_bad: args.skip_bad,
        ..ImagesSection::default()
    };
    let pipeline = Pipeline {
        normalize,
        ..Pipeline::eval(resize, crop)
    };
    let n = dataset.len();
    let paths = dataset.paths.clone();
    let pb = bar(n as u64, "embed", args.json);
    let started = Instant::now();
    let (features, rows) = embed_images(
        &backbone,
        head.as_ref(),
        Arc::new(dataset),
        pipeline,
        section.loader(),
        args.batch_size,
        &device,
        &mut |done, _| pb.set_position(done as u64),
    )?;
    pb.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let skipped = n - rows.len();

    let stem = args
        .out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("features")
        .to_string();
    let dir = args.out.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    })
    .with_context(|| format!("{}: cannot create", dir.display()))?;
    let labels_out = args
        .labels_out
        .clone()
        .unwrap_or_else(|| dir.join(format!("{stem}_labels.npy")));
    let paths_out = dir.join(format!("{stem}_paths.txt"));
    write_features(&args.out, &features)?;
    let kept_labels: Vec<i64> = rows.iter().map(|&i| labels[i]).collect();
    write_npy_i64(&labels_out, &kept_labels)?;
    let mut list = String::new();
    for &i in &rows {
        list.push_str(&paths[i].to_string_lossy());
        list.push('\n');
    }
    simlearn::train::checkpoint::write_atomic(&paths_out, list.as_bytes())?;

    if args.json {
        let summary = serde_json::json!({
            "images": rows.len(),
            "skipped": skipped,
            "dim": features.cols(),
            "seconds": seconds,
            "images_per_second": rows.len() as f64 / seconds.max(1e-9),
            "features": args.out,
            "labels": labels_out,
            "paths": paths_out,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} images → {} × {} features in {:.1} s ({:.1} images/s){}",
            rows.len(),
            features.rows(),
            features.cols(),
            seconds,
            rows.len() as f64 / seconds.max(1e-9),
            if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            }
        );
        println!("features: {}", args.out.display());
        println!("labels:   {}", labels_out.display());
        println!("paths:    {}", paths_out.display());
    }
    Ok(())
}

fn write_features(path: &Path, m: &Matrix) -> Result<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "npy" => Ok(write_npy_f32(path, m)?),
        "safetensors" => {
            let t = simlearn::train::checkpoint::NamedTensor {
                name: "embeddings".into(),
                shape: vec![m.rows(), m.cols()],
                data: m.data().to_vec(),
            };
            Ok(simlearn::train::checkpoint::save_safetensors(
                path,
                &[t],
                Default::default(),
            )?)
        }
        _ => bail!("{}: --out must end in .npy or .safetensors", path.display()),
    }
}
