//! `simlearn train --config run.toml`: train an embedding head, write the run folder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use simlearn::data::{digits, rotated_digits, FeatureDataset};
use simlearn::train::images::train_images;
use simlearn::train::{train_class, train_continuous, EpochRecord, TrainConfig};

use crate::progress::TrainBars;

/// Train an embedding head on feature vectors (see `configs/*.toml`).
#[derive(clap::Args)]
pub struct Args {
    /// TOML run configuration; every missing key takes its paper default.
    #[arg(long)]
    config: PathBuf,
    /// Output folder (resolved config, metrics.jsonl, checkpoints). Default: runs/<config name>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the folder's last checkpoint (exact resume at an epoch boundary).
    #[arg(long)]
    resume: bool,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Loads the train/validation sets named by a config.
pub fn load_data(cfg: &TrainConfig) -> Result<(FeatureDataset, Option<FeatureDataset>)> {
    let d = &cfg.data;
    match d.source.as_str() {
        "rotated_digits" => {
            let (train, test) = rotated_digits(cfg.train.seed).alternate_split()?;
            Ok((train, Some(test)))
        }
        "digits" => {
            let (train, test) = digits().class_disjoint_split()?;
            Ok((train, Some(test)))
        }
        "features" => {
            let (Some(f), Some(l)) = (&d.features, &d.labels) else {
                bail!("config: data.features and data.labels are required when data.source = \"features\"");
            };
            let read = |f: &std::path::Path, l: &std::path::Path| {
                if cfg.continuous.is_some() {
                    FeatureDataset::from_continuous_files(f, l)
                } else {
                    FeatureDataset::from_class_files(f, l)
                }
            };
            let all = read(f, l)?;
            match (&d.val_features, &d.val_labels) {
                (Some(vf), Some(vl)) => Ok((all, Some(read(vf, vl)?))),
                (None, None) if d.split_train && cfg.continuous.is_some() => {
                    let (train, test) = all.alternate_split()?;
                    Ok((train, Some(test)))
                }
                (None, None) if d.split_train => {
                    let (train, test) = all.class_disjoint_split()?;
                    Ok((train, Some(test)))
                }
                (None, None) => Ok((all, None)),
                _ => bail!("config: data.val_features and data.val_labels must be given together"),
            }
        }
        other => bail!(
            "config: data.source \"{other}\" is not one of \"features\", \"digits\", \"rotated_digits\", \"images\""
        ),
    }
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("{}: cannot read", args.config.display()))?;
    let cfg = TrainConfig::from_toml(&text).with_context(|| args.config.display().to_string())?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .config
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("run");
        PathBuf::from("runs").join(stem)
    });
    let mut bars = TrainBars::new("train", cfg.train.epochs, args.json);
    if cfg.data.source == "images" {
        if cfg.continuous.is_some() {
            bail!("config: image fine-tuning supports class labels; drop [continuous] or embed the images first (simlearn embed)");
        }
        let outcome = train_images(&cfg, Some(&out), args.resume, &mut bars)?;
        return summarise(
            &args,
            &cfg,
            &out,
            outcome.best_epoch,
            outcome.best_value,
            &outcome.history,
        );
    }
    let (train, val) = load_data(&cfg)?;
    let outcome = if cfg.continuous.is_some() {
        train_continuous(
            &cfg,
            &train,
            val.as_ref(),
            Some(&out),
            args.resume,
            &mut bars,
        )?
    } else {
        train_class(
            &cfg,
            &train,
            val.as_ref(),
            Some(&out),
            args.resume,
            &mut bars,
        )?
    };
    summarise(
        &args,
        &cfg,
        &out,
        outcome.best_epoch,
        outcome.best_value,
        &outcome.history,
    )
}

fn summarise(
    args: &Args,
    cfg: &TrainConfig,
    out: &std::path::Path,
    best_epoch: Option<usize>,
    best_value: Option<f64>,
    history: &[EpochRecord],
) -> Result<()> {
    let last = history.last();
    if args.json {
        let summary = serde_json::json!({
            "run_dir": out,
            "epochs": history.len(),
            "best_epoch": best_epoch,
            "best_value": best_value,
            "select_metric": cfg.train.select_metric,
            "last": last,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("run folder: {}", out.display());
        if let (Some(e), Some(v)) = (best_epoch, best_value) {
            println!(
                "best {} = {v:.4} at epoch {}",
                cfg.train.select_metric,
                e + 1
            );
        }
        if let Some(val) = last.and_then(|r| r.validation.as_ref()) {
            println!("{:<24} {:>10}", "metric (last epoch)", "value");
            for (k, v) in val {
                println!("{k:<24} {v:>10.4}");
            }
        }
    }
    Ok(())
}
