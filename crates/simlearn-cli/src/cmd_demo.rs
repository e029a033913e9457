//! `simlearn demo`: the README's main job. Trains contextual-similarity and contrastive heads
//! on the embedded scikit-learn digits (classes 0–4), evaluates them on the unseen classes 5–9,
//! and prints retrieval quality before and after training.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use simlearn::data::digits;
use simlearn::train::{embed, train_class, TrainConfig};
use simlearn_eval::{evaluate_classes, EvalConfig};

use crate::progress::TrainBars;

const CONFIGS: [(&str, &str); 2] = [
    (
        "contextual",
        include_str!("../../../configs/digits-contextual.toml"),
    ),
    (
        "contrastive",
        include_str!("../../../configs/digits-contrastive.toml"),
    ),
];

/// Train contextual and contrastive heads on the embedded digits and compare retrieval.
#[derive(clap::Args)]
pub struct Args {
    /// Folder for the run folders of both heads.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// Override the number of epochs of both runs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Scores {
    recall_at_1: f64,
    map_at_r: f64,
}

#[derive(Serialize)]
struct Row {
    method: String,
    /// Unseen images of the training classes 0–4 (validation; selects the checkpoint).
    seen_before: Option<Scores>,
    seen_after: Scores,
    /// The unseen classes 5–9.
    unseen_before: Option<Scores>,
    unseen_after: Scores,
    seconds: f64,
}

fn scores(emb: &simlearn_eval::Matrix, labels: &[i64], cfg: &EvalConfig) -> Result<Scores> {
    let r = evaluate_classes(emb, labels, None, cfg, None)?;
    Ok(Scores {
        recall_at_1: r.get("recall_at_1").unwrap_or(f64::NAN),
        map_at_r: r.get("map_at_r").unwrap_or(f64::NAN),
    })
}

pub fn run(args: Args) -> Result<()> {
    // Classes 0–4 train (half of their images; the other half validates), classes 5–9 test.
    let (seen, unseen) = digits().class_disjoint_split()?;
    let (train, val) = seen.alternate_split()?;
    let eval_cfg = EvalConfig {
        ks: vec![1, 2, 4, 8],
        ..EvalConfig::default()
    };
    let device = burn::prelude::Device::flex();
    let (val_labels, unseen_labels) = (val.class_labels()?, unseen.class_labels()?);
    let mut rows = vec![Row {
        method: "pixels (no model)".into(),
        seen_before: None,
        seen_after: scores(&val.features, val_labels, &eval_cfg)?,
        unseen_before: None,
        unseen_after: scores(&unseen.features, unseen_labels, &eval_cfg)?,
        seconds: 0.0,
    }];

    for (name, text) in CONFIGS {
        let mut cfg = TrainConfig::from_toml(text)?;
        if let Some(e) = args.epochs {
            cfg.train.epochs = e;
        }
        let resolved = cfg.resolved(train.dim())?;
        let untrained = resolved
            .model
            .init(resolved.train.seed, &device)
            .map_err(anyhow::Error::msg)?;
        let started = std::time::Instant::now();
        let mut bars = TrainBars::new(name, cfg.train.epochs, args.json);
        let out = train_class(
            &cfg,
            &train,
            Some(&val),
            Some(&args.out.join(name)),
            false,
            &mut bars,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        rows.push(Row {
            method: format!("{name} head"),
            seen_before: Some(scores(
                &embed(&untrained, &val.features, &device),
                val_labels,
                &eval_cfg,
            )?),
            seen_after: scores(
                &embed(&out.head, &val.features, &device),
                val_labels,
                &eval_cfg,
            )?,
            unseen_before: Some(scores(
                &embed(&untrained, &unseen.features, &device),
                unseen_labels,
                &eval_cfg,
            )?),
            unseen_after: scores(
                &embed(&out.head, &unseen.features, &device),
                unseen_labels,
                &eval_cfg,
            )?,
            seconds,
        });
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "\nscikit-learn digits: heads trained on {} images of classes 0-4; leave-one-out retrieval on\n\
         (a) the other {} images of classes 0-4 (validation, picks the checkpoint) and\n\
         (b) the {} images of the unseen classes 5-9.\n",
        train.len(),
        val.len(),
        unseen.len()
    );
    println!(
        "{:<18} {:>15} {:>15} {:>15} {:>15} {:>8}",
        "method", "(a) R@1", "(a) MAP@R", "(b) R@1", "(b) MAP@R", "train s"
    );
    let fmt = |before: &Option<Scores>, after: f64, pick: fn(&Scores) -> f64| match before {
        Some(b) => format!("{:.3}→{after:.3}", pick(b)),
        None => format!("{after:.3}"),
    };
    for r in &rows {
        println!(
            "{:<18} {:>15} {:>15} {:>15} {:>15} {:>8.1}",
            r.method,
            fmt(&r.seen_before, r.seen_after.recall_at_1, |s| s.recall_at_1),
            fmt(&r.seen_before, r.seen_after.map_at_r, |s| s.map_at_r),
            fmt(&r.unseen_before, r.unseen_after.recall_at_1, |s| s
                .recall_at_1),
            fmt(&r.unseen_before, r.unseen_after.map_at_r, |s| s.map_at_r),
            r.seconds
        );
    }
    println!(
        "\n(before→after: the untrained head, then the trained one)\nrun folders: {}",
        args.out.display()
    );
    Ok(())
}
