//! `simlearn search`: the nearest items of an index to query vectors, to indexed items, or to
//! images embedded with the index's own model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::prelude::*;
use simlearn::data::augment::Pipeline;
use simlearn::data::images::ImageDataset;
use simlearn::models::{Backbone, EmbeddingHead};
use simlearn::train::images::embed_images;
use simlearn_eval::io::read_embeddings;
use simlearn_eval::Matrix;
use simlearn_index::{Hit, Index, Threshold};

use crate::cmd_embed::load_run;

/// Search an index by vectors, by item id or by image.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("query").required(true).args(["vector", "image", "id"])))]
pub struct Args {
    /// Index folder (simlearn index build).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Query vectors: .npy / .safetensors / .csv, one query per row.
    #[arg(long, value_name = "FILE")]
    vector: Option<PathBuf>,
    /// Query images, embedded with the index's model (an index built with --run).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    image: Vec<PathBuf>,
    /// Query by the id of an indexed item (the item itself is left out); repeatable.
    #[arg(long, value_name = "N", num_args = 1..)]
    id: Vec<i64>,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    k: usize,
    /// A match threshold on the score (overrides the index's calibrated one): each hit is
    /// marked match / no match.
    #[arg(long, value_name = "SCORE")]
    threshold: Option<f64>,
    /// HNSW candidate-list size for this search (default: the index's).
    #[arg(long, value_name = "N")]
    ef_search: Option<usize>,
    /// Print the hits as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// The model files of a run folder that an index carries: its config and the best (else last)
/// backbone and head checkpoints.
pub(crate) fn run_model_files(dir: &Path) -> Result<Vec<String>> {
    let which = if dir.join("backbone-best.safetensors").exists() {
        "best"
    } else {
        "last"
    };
    let files = vec![
        "config.toml".to_string(),
        format!("backbone-{which}.safetensors"),
        format!("{which}.safetensors"),
    ];
    for f in &files {
        if !dir.join(f).is_file() {
            bail!(
                "{}: not a trained image run (no {f})",
                dir.join(f).display()
            );
        }
    }
    Ok(files)
}

/// A trained image run's network with its evaluation preprocessing (the run's
/// `images.resize` / `images.crop` / normalisation).
pub(crate) struct RunModel {
    backbone: Backbone,
    head: EmbeddingHead,
    pipeline: Pipeline,
    device: Device,
}

impl RunModel {
    /// Loads a run folder (or an index's `model/` copy of one).
    pub(crate) fn load(dir: &Path) -> Result<Self> {
        let device = Device::flex();
        let run = load_run(dir, &device)?;
        let pipeline = Pipeline {
            normalize: run.normalize,
            ..Pipeline::eval(run.images.resize, run.images.crop)
        };
        pipeline
            .validate()
            .with_context(|| dir.join("config.toml").display().to_string())?;
        Ok(Self {
            backbone: run.backbone,
            head: run.head,
            pipeline,
            device,
        })
    }

    /// Embeds a dataset (all of its images, in order); `progress(done, total)`.
    pub(crate) fn embed_dataset(
        &self,
        dataset: ImageDataset,
        batch_size: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Matrix> {
        let n = dataset.len();
        let (m, rows) = embed_images(
            &self.backbone,
            Some(&self.head),
            Arc::new(dataset),
            self.pipeline,
            Default::default(),
            batch_size,
            &self.device,
            progress,
        )?;
        if rows.len() != n {
            bail!("{} of {n} images could not be embedded", n - rows.len());
        }
        Ok(m)
    }

    /// Embeds one encoded image (PNG, JPEG, BMP, WebP bytes).
    pub(crate) fn embed_bytes(&self, bytes: &[u8]) -> Result<Vec<f32>, String> {
        let img = image::load_from_memory(bytes)
            .map_err(|e| format!("cannot decode image: {e}"))?
            .to_rgb8();
        let data = self
            .pipeline
            .apply(&img, 0, 0)
            .map_err(|e| format!("cannot preprocess image: {e}"))?;
        let s = self.pipeline.size() as usize;
        let x = Tensor::<4>::from_data(TensorData::new(data, [1, 3, s, s]), &self.device);
        let y = self.head.forward(self.backbone.forward(x));
        let v = y
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("embedding readback: {e:?}"))?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err("the model produced a non-finite value".into());
        }
        Ok(v)
    }
}

/// The index's model, or an error naming the index when it has none.
pub(crate) fn index_model(index: &Index, dir: &Path) -> Result<RunModel> {
    match index.model_dir() {
        Some(m) => RunModel::load(&m).with_context(|| format!("{}: its model", dir.display())),
        None => bail!(
            "{}: the index has no model, so it cannot embed images (build it with --run RUN --images ROOT, or query with --vector / --id)",
            dir.display()
        ),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut index = Index::load(&args.index)?;
    if let Some(ef) = args.ef_search {
        if ef == 0 {
            bail!("--ef-search must be at least 1");
        }
        index.set_ef_search(ef);
    }
    if let Some(t) = args.threshold {
        if !t.is_finite() {
            bail!("--threshold {t} must be finite");
        }
        index.set_threshold(Some(Threshold {
            score: t,
            rule: "--threshold".into(),
            precision: f64::NAN,
            recall: f64::NAN,
            f1: f64::NAN,
        }));
    }
    let k = args.k;
    let mut results: Vec<(String, Vec<Hit>)> = Vec::new();
    if let Some(p) = &args.vector {
        let q = read_embeddings(p, None)?;
        let hits = index
            .search(&q, k)
            .with_context(|| format!("{}", p.display()))?;
        let name = p.display().to_string();
        for (i, h) in hits.into_iter().enumerate() {
            results.push((format!("{name}[{i}]"), h));
        }
    } else if !args.image.is_empty() {
        let model = index_model(&index, &args.index)?;
        let mut data = Vec::new();
        for p in &args.image {
            let bytes =
                std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
            let v = model
                .embed_bytes(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            data.extend(v);
        }
        let dim = data.len() / args.image.len();
        let q = Matrix::new(args.image.len(), dim, data)?;
        let hits = index
            .search(&q, k)
            .with_context(|| format!("{}: its model", args.index.display()))?;
        for (p, h) in args.image.iter().zip(hits) {
            results.push((p.display().to_string(), h));
        }
    } else {
        for &id in &args.id {
            let h = index
                .search_id(id, k)
                .with_context(|| format!("--id {id}"))?;
            results.push((format!("id {id}"), h));
        }
    }
    let threshold = index.manifest().threshold.as_ref().map(|t| t.score);
    if args.json {
        let queries: Vec<serde_json::Value> = results
            .iter()
            .map(|(q, hits)| serde_json::json!({"query": q, "hits": hits}))
            .collect();
        let out = serde_json::json!({
            "index": args.index,
            "k": k,
            "threshold": threshold,
            "queries": queries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", table(&results, threshold.is_some()));
    }
    Ok(())
}

fn table(results: &[(String, Vec<Hit>)], with_match: bool) -> String {
    let mut rows: Vec<Vec<String>> = vec![["query", "rank", "id", "score", "label", "path"]
        .iter()
        .map(|s| s.to_string())
        .collect()];
    if with_match {
        rows[0].push("match".into());
    }
    for (q, hits) in results {
        for (r, h) in hits.iter().enumerate() {
            let mut row = vec![
                q.clone(),
                (r + 1).to_string(),
                h.id.to_string(),
                format!("{:.6}", h.score),
                h.label.map_or_else(|| "-".into(), |l| l.to_string()),
                h.path.clone().unwrap_or_else(|| "-".into()),
            ];
            if with_match {
                row.push(match h.matched {
                    Some(true) => "match".into(),
                    Some(false) => "no match".into(),
                    None => "-".into(),
                });
            }
            rows.push(row);
        }
    }
    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (v, w))| {
                // Numbers right-aligned, text left-aligned.
                if (1..=3).contains(&c) {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}
