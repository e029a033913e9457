//! `simlearn loss`: compute a loss, its terms and its gradient with respect to the embeddings
//! on a user's own data, for parity checks against other implementations.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use simlearn::losses::continuous::ContinuousLossConfig;
use simlearn::losses::registry::LossConfig;
use simlearn::losses::{ClassLoss, ContinuousLoss, LossOutput};
use simlearn_eval::{LabelDistance, Matrix};

/// Compute a loss and its gradient on given embeddings.
#[derive(clap::Args)]
pub struct Args {
    /// Loss name: contextual, contrastive, triplet, multi_similarity, … (class labels) or
    /// log_ratio, dense_triplet, binary_triplet (continuous labels).
    #[arg(long)]
    loss: String,
    /// Embeddings, `n × d` (.npy, .safetensors, .csv). Used as given (losses normalise
    /// internally where their definition says so).
    #[arg(long)]
    embeddings: PathBuf,
    /// Class labels (.npy integers or one per line), for class-label losses.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Continuous labels, `n × d_label` floats, for log_ratio / dense_triplet / binary_triplet
    /// (row 0 is the anchor).
    #[arg(long)]
    continuous_labels: Option<PathBuf>,
    /// Label distance for continuous labels: euclidean, manhattan or circular:PERIOD.
    #[arg(long, default_value = "euclidean")]
    label_distance: String,
    /// Override a loss parameter, TOML syntax: `--set k=4 --set eps=0.04`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write ∂loss/∂embeddings (`n × d`, f32) to this .npy file.
    #[arg(long)]
    grad_out: Option<PathBuf>,
    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Parses `circular:360` and friends.
pub fn parse_label_distance(s: &str) -> Result<LabelDistance> {
    Ok(match s {
        "euclidean" => LabelDistance::Euclidean,
        "manhattan" => LabelDistance::Manhattan,
        _ => match s.strip_prefix("circular:").map(str::parse::<f64>) {
            Some(Ok(period)) if period > 0.0 => LabelDistance::Circular { period },
            _ => bail!(
                "--label-distance: expected euclidean, manhattan or circular:PERIOD, got \"{s}\""
            ),
        },
    })
}

fn loss_table(name: &str, sets: &[String]) -> Result<String> {
    let mut text = format!("name = {}\n", toml::Value::String(name.to_string()));
    for s in sets {
        let Some((k, v)) = s.split_once('=') else {
            bail!("--set: expected KEY=VALUE, got \"{s}\"");
        };
        // Bare words are strings; numbers, booleans and arrays keep their TOML type.
        let v = v.trim();
        let value = if toml::from_str::<toml::Table>(&format!("x = {v}")).is_ok() {
            v.to_string()
        } else {
            toml::Value::String(v.to_string()).to_string()
        };
        text.push_str(&format!("{} = {value}\n", k.trim()));
    }
    Ok(text)
}

pub fn run(args: Args) -> Result<()> {
    let emb = simlearn_eval::io::read_embeddings(&args.embeddings, None)?;
    if let Some(r) = emb.first_non_finite_row() {
        bail!(
            "{}: row {r} holds a NaN or infinite value",
            args.embeddings.display()
        );
    }
    let device = Device::flex().autodiff();
    let (n, d) = (emb.rows(), emb.cols());
    let x = Tensor::<2>::from_data(TensorData::new(emb.data().to_vec(), [n, d]), &device)
        .require_grad();
    let table = loss_table(&args.loss, &args.sets)?;
    let out: LossOutput = match (&args.labels, &args.continuous_labels) {
        (Some(l), None) => {
            let labels = simlearn_eval::io::read_class_labels(l)?;
            if labels.len() != n {
                bail!("{}: {} labels for {n} embeddings", l.display(), labels.len());
            }
            let cfg: LossConfig = toml::from_str(&table).context("--loss/--set")?;
            let classes = labels.iter().copied().collect::<std::collections::BTreeSet<_>>().len();
            let loss = cfg.init(classes, d, &device)?;
            loss.forward(x.clone(), &labels)?
        }
        (None, Some(l)) => {
            let labels = simlearn_eval::io::read_float_matrix(l)?;
            if labels.rows() != n {
                bail!("{}: {} label rows for {n} embeddings", l.display(), labels.rows());
            }
            let dist = parse_label_distance(&args.label_distance)?;
            let cfg: ContinuousLossConfig = toml::from_str(&table).context("--loss/--set")?;
            let loss = cfg.init()?;
            loss.forward(x.clone(), &label_distance_matrix(&labels, dist))?
        }
        _ => bail!("give exactly one of --labels (class losses) or --continuous-labels (log_ratio, dense_triplet, binary_triplet)"),
    };
    let total = out.total.clone().into_scalar::<f32>() as f64;
    let terms: Vec<(String, f64)> = out
        .terms
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone().into_scalar::<f32>() as f64))
        .collect();
    let grads = out.total.backward();
    let grad = x
        .grad(&grads)
        .map(|g| {
            g.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32")
        })
        .unwrap_or_else(|| vec![0.0; n * d]);
    if let Some(path) = &args.grad_out {
        simlearn_eval::io::write_npy_f32(path, &Matrix::new(n, d, grad.clone())?)?;
    }
    let grad_norm = grad
        .iter()
        .map(|g| (*g as f64) * (*g as f64))
        .sum::<f64>()
        .sqrt();
    if args.json {
        let j = serde_json::json!({
            "loss": args.loss,
            "total": total,
            "terms": terms.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "n": n,
            "dim": d,
            "grad_norm": grad_norm,
            "grad_out": args.grad_out,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{:<16} {:>14}", "term", "value");
        println!("{:<16} {:>14.8}", "total", total);
        for (k, v) in &terms {
            println!("{k:<16} {v:>14.8}");
        }
        println!("{:<16} {:>14.8}", "‖∂L/∂E‖", grad_norm);
    }
    Ok(())
}

/// Row-major `n × n` label distances.
pub fn label_distance_matrix(labels: &Matrix, dist: LabelDistance) -> Vec<f32> {
    let n = labels.rows();
    let mut out = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = dist.dist(labels.row(i), labels.row(j)) as f32;
        }
    }
    out
}
