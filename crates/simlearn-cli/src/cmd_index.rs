//! `simlearn index build` / `simlearn index add`: a persistent, checksummed embedding index
//! (exact or HNSW) from embedding files, or from an image folder embedded with a trained run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use simlearn::data::images::ImageDataset;
use simlearn::data::Labels;
use simlearn_eval::io::{read_class_labels, read_embeddings};
use simlearn_eval::Similarity;
use simlearn_index::{BuildOptions, HnswParams, Index, Kind, Storage};

use crate::cmd_search::{run_model_files, RunModel};
use crate::progress::bar;

/// Build or extend an embedding index.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: IndexCommand,
}

#[derive(clap::Subcommand)]
enum IndexCommand {
    /// Build an index from embeddings (or from images embedded with a trained run).
    Build(BuildArgs),
    /// Append rows to an existing index (ids continue after the largest).
    Add(AddArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Exact,
    Hnsw,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StorageArg {
    F32,
    F16,
    #[value(alias = "i8")]
    Int8,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Embeddings (.npy, .safetensors or .csv), one item per row.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "run",
        conflicts_with = "run"
    )]
    embeddings: Option<PathBuf>,
    /// Class labels, one per row: .npy integers or a text file with one label per line.
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Payload paths (a text file, one per row), served by `simlearn serve` under /items.
    #[arg(long, value_name = "FILE")]
    paths: Option<PathBuf>,
    /// Folder the payload paths are relative to (and the only place payloads are served from).
    #[arg(long, value_name = "DIR")]
    image_root: Option<PathBuf>,
    /// Item ids, one per row (.npy integers or a text file of integers); default 0, 1, ….
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,
    /// A trained image run (simlearn train on images): embed --images with it and keep its
    /// model in the index so that queries by image use the same network and preprocessing.
    #[arg(long, value_name = "RUN", requires = "images")]
    run: Option<PathBuf>,
    /// Image folder (one sub-folder per class) to embed with --run.
    #[arg(long, value_name = "ROOT", requires = "run")]
    images: Option<PathBuf>,
    /// Images per forward pass (with --run).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Search kind: exact kNN, or an HNSW graph re-scored exactly.
    #[arg(long, value_enum, default_value = "exact")]
    kind: KindArg,
    /// Scalar type of the HNSW graph (the f32 vectors are always kept for exact scores).
    #[arg(long, value_enum, default_value = "f32")]
    storage: StorageArg,
    /// Score: cosine, dot or sqeuclidean.
    #[arg(long, default_value = "cosine")]
    similarity: String,
    /// HNSW neighbours per node (faiss M).
    #[arg(long, default_value_t = HnswParams::default().m)]
    m: usize,
    /// HNSW candidate-list size while building.
    #[arg(long, default_value_t = HnswParams::default().ef_construction)]
    ef_construction: usize,
    /// HNSW candidate-list size while searching (saved in the manifest).
    #[arg(long, default_value_t = HnswParams::default().ef_search)]
    ef_search: usize,
    /// Output index folder (written atomically; an existing index there is replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct AddArgs {
    /// Index folder to extend (rewritten atomically).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// New embeddings, one item per row.
    #[arg(long, value_name = "FILE")]
    embeddings: PathBuf,
    /// Their labels (required exactly when the index has labels).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Their payload paths (required exactly when the index has paths).
    #[arg(long, value_name = "FILE")]
    paths: Option<PathBuf>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        IndexCommand::Build(a) => build(a),
        IndexCommand::Add(a) => add(a),
    }
}

fn check_count(file: &Path, n: usize, what: &str, rows: usize, emb: &str) -> Result<()> {
    if n != rows {
        bail!(
            "count mismatch: {} holds {n} {what} but {emb} has {rows} rows",
            file.display()
        );
    }
    Ok(())
}

fn read_labels(p: &Path, rows: usize, emb: &str) -> Result<Vec<i64>> {
    let l = read_class_labels(p)?;
    check_count(p, l.len(), "labels", rows, emb)?;
    Ok(l)
}

fn read_paths(p: &Path, rows: usize, emb: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
    let v: Vec<String> = text.lines().map(str::to_string).collect();
    check_count(p, v.len(), "paths", rows, emb)?;
    Ok(v)
}

fn read_ids(p: &Path, rows: usize, emb: &str) -> Result<Vec<i64>> {
    let is_npy = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    let ids = if is_npy {
        read_class_labels(p)?
    } else {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                l.trim().parse::<i64>().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: line {}: {:?} is not an integer id",
                        p.display(),
                        i + 1,
                        l.trim()
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    check_count(p, ids.len(), "ids", rows, emb)?;
    Ok(ids)
}

fn build(a: BuildArgs) -> Result<()> {
    let similarity = Similarity::parse(&a.similarity).context("--similarity")?;
    let kind = match a.kind {
        KindArg::Exact => Kind::Exact,
        KindArg::Hnsw => Kind::Hnsw,
    };
    let storage = match a.storage {
        StorageArg::F32 => Storage::F32,
        StorageArg::F16 => Storage::F16,
        StorageArg::Int8 => Storage::I8,
    };
    let hnsw = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef_search,
    };
    if kind == Kind::Hnsw {
        hnsw.validate()
            .context("--m / --ef-construction / --ef-search")?;
    }
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let started = Instant::now();
    let mut image_root = a.image_root.clone();
    let (vectors, labels, paths, source, model) = match (&a.embeddings, &a.run, &a.images) {
        (Some(e), _, _) => {
            let v = read_embeddings(e, None)?;
            let name = e.display().to_string();
            let labels = a
                .labels
                .as_deref()
                .map(|p| read_labels(p, v.rows(), &name))
                .transpose()?;
            let paths = a
                .paths
                .as_deref()
                .map(|p| read_paths(p, v.rows(), &name))
                .transpose()?;
            (v, labels, paths, name, None)
        }
        (None, Some(run), Some(root)) => {
            if a.labels.is_some() || a.paths.is_some() {
                bail!("--labels / --paths come from the image folder with --run; leave them out");
            }
            let files = run_model_files(run)?;
            let model = RunModel::load(run)?;
            let dataset = ImageDataset::from_folder(root)?;
            let Labels::Class(labels) = &dataset.labels else {
                bail!("{}: expected class labels", root.display());
            };
            let labels = labels.clone();
            let canon = root
                .canonicalize()
                .with_context(|| format!("{}: cannot resolve", root.display()))?;
            let paths: Vec<String> = dataset
                .paths
                .iter()
                .map(|p| {
                    let p = p.canonicalize().unwrap_or_else(|_| p.clone());
                    p.strip_prefix(&canon)
                        .map(Path::to_path_buf)
                        .unwrap_or(p)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            image_root.get_or_insert(canon);
            let pb = bar(dataset.len() as u64, "embed", a.json);
            let v = model
                .embed_dataset(dataset, a.batch_size, &mut |d, _| pb.set_position(d as u64))?;
            pb.finish_and_clear();
            (
                v,
                Some(labels),
                Some(paths),
                root.display().to_string(),
                Some((run.clone(), files)),
            )
        }
        _ => bail!("give --embeddings FILE, or --run RUN with --images ROOT"),
    };
    let image_root = match image_root {
        Some(r) => Some(
            r.canonicalize()
                .with_context(|| format!("{}: --image-root cannot be resolved", r.display()))?
                .to_string_lossy()
                .into_owned(),
        ),
        None => None,
    };
    let opts = BuildOptions {
        kind,
        similarity,
        storage,
        hnsw,
        image_root,
    };
    let n = vectors.rows();
    let pb = bar(
        n as u64,
        "index",
        a.json || kind == Kind::Exact || n < 10_000,
    );
    let mut index = Index::build(vectors, labels, paths, &opts, &|d, _| {
        pb.set_position(d as u64)
    })
    .with_context(|| source.clone())?;
    pb.finish_and_clear();
    if let Some(p) = &a.ids {
        let ids = read_ids(p, n, &source)?;
        index
            .set_ids(ids)
            .with_context(|| p.display().to_string())?;
    }
    if let Some((run, files)) = &model {
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        index.attach_model(run, &names)?;
    }
    index.save(&a.out)?;
    summary(&index, &a.out, "built", started, a.json)
}

fn add(a: AddArgs) -> Result<()> {
    let started = Instant::now();
    let mut index = Index::load(&a.index)?;
    let v = read_embeddings(&a.embeddings, None)?;
    let name = a.embeddings.display().to_string();
    let labels = a
        .labels
        .as_deref()
        .map(|p| read_labels(p, v.rows(), &name))
        .transpose()?;
    let paths = a
        .paths
        .as_deref()
        .map(|p| read_paths(p, v.rows(), &name))
        .transpose()?;
    let pb = bar(v.rows() as u64, "add", a.json || v.rows() < 10_000);
    index
        .add(&v, labels.as_deref(), paths.as_deref(), &|d, _| {
            pb.set_position(d as u64)
        })
        .with_context(|| name.clone())?;
    pb.finish_and_clear();
    index.save(&a.index)?;
    summary(&index, &a.index, "extended", started, a.json)
}

fn summary(index: &Index, dir: &Path, verb: &str, started: Instant, json: bool) -> Result<()> {
    let m = index.manifest();
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let out = serde_json::json!({
            "index": dir,
            "items": index.len(),
            "dim": m.dim,
            "kind": m.kind,
            "storage": m.storage,
            "similarity": m.similarity,
            "hnsw": m.hnsw,
            "labels": m.labels,
            "paths": m.paths,
            "model": m.model.as_ref().map(|r| &r.source),
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        // The manifest's own (serde) spelling: cosine, f16, int8 ….
        let name = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
        let kind = match (m.kind, &m.hnsw) {
            (Kind::Hnsw, Some(h)) => format!(
                "hnsw (m {}, ef_construction {}, ef_search {}, {} graph)",
                h.m,
                h.ef_construction,
                h.ef_search,
                name(serde_json::to_value(m.storage)?)
            ),
            _ => "exact".to_string(),
        };
        println!(
            "{verb} {}: {} × {} {kind}, {} similarity{}{}{} in {seconds:.2} s",
            dir.display(),
            index.len(),
            m.dim,
            name(serde_json::to_value(m.similarity)?),
            if m.labels { ", labels" } else { "" },
            if m.paths { ", paths" } else { "" },
            if m.model.is_some() { ", model" } else { "" },
        );
    }
    Ok(())
}
