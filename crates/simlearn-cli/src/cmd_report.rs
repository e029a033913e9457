//! `simlearn report RUN_DIR… --out DIR`: an HTML page with figures and a results table for
//! one or more run folders (see `simlearn::report`).

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use simlearn::report::{read_run_config, render, ReportOptions, ReportRun};

/// Write an HTML report (training curves, similarity histograms, retrieval grids, results with
/// bootstrap intervals and paired differences) of trained run folders.
#[derive(clap::Args)]
pub struct Args {
    /// Run folders written by `simlearn train` (head or image fine-tuning runs) or `simlearn demo`.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder: index.html, one .svg per figure, report.json.
    #[arg(long)]
    out: PathBuf,
    /// Queries per retrieval grid (random ones, and as many worst ones).
    #[arg(long, default_value_t = 8)]
    queries: usize,
    /// Seed of the random query choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Neighbours shown per query.
    #[arg(long, default_value_t = 8)]
    top_k: usize,
}

pub fn run(args: Args) -> Result<()> {
    let device = burn::prelude::Device::flex();
    let mut runs = Vec::with_capacity(args.runs.len());
    for dir in &args.runs {
        let cfg = read_run_config(dir)?;
        if cfg.data.source == "images" {
            // Fine-tuned backbone + head: the run's validation images are the test set.
            let mut bars = crate::progress::TrainBars::new("report", 0, false);
            runs.push(ReportRun::load_images(dir, &device, &mut bars)?);
            continue;
        }
        // The test set is the run's validation data, reloaded exactly as `simlearn train` did.
        let (_, val) = crate::cmd_train::load_data(&cfg)
            .with_context(|| format!("{}: loading the data of config.toml", dir.display()))?;
        let test = val.ok_or_else(|| {
            anyhow!(
                "{}: config.toml names no validation data (data.split_train = false and no data.val_features), so there is no test set to report on",
                dir.display()
            )
        })?;
        runs.push(ReportRun::load(dir, test, &device)?);
    }
    let opts = ReportOptions {
        queries: args.queries,
        seed: args.seed,
        top_k: args.top_k,
        ..ReportOptions::default()
    };
    let files = render(&runs, &args.out, &opts)?;
    println!("report: {}", files.index.display());
    println!("numbers: {}", files.json.display());
    println!("figures: {}", files.figures.len());
    Ok(())
}
