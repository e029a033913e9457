//! `simlearn index build` / `add` / `export`: a persistent, checksummed embedding index
//! (exact or HNSW) from embedding files, or from an image folder embedded with a trained run;
//! and its rows as a Parquet file, the way into a vector database or a dataframe.

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
    /// Write the index's rows (id, vector, label, path) to a Parquet file.
    Export(ExportArgs),
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

#[derive(clap::Args)]
struct ExportArgs {
    /// Index folder to export.
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Output Parquet file (written atomically): columns id (int64), vector
    /// (fixed_size_list<float32, dim>), and label (int64) / path (utf8) when the index has them.
    #[arg(long, value_name = "FILE")]
    parquet: PathBuf,
    /// Rows per Parquet row group.
    #[arg(long, default_value_t = 65_536)]
    row_group: usize,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        IndexCommand::Build(a) => build(a),
        IndexCommand::Add(a) => add(a),
        IndexCommand::Export(a) => export(a),
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

/// Writes `index`'s rows to `out` as Parquet, row group by row group. The schema's metadata
/// carries what a reader needs to score the vectors the way `simlearn search` does
/// (`simlearn.similarity`, `simlearn.dim`, `simlearn.manifest_version`).
fn write_parquet(index: &Index, out: &Path, row_group: usize) -> Result<()> {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    let m = index.manifest();
    let dim = m.dim;
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(item.clone(), dim as i32),
            false,
        ),
    ];
    if index.labels().is_some() {
        fields.push(Field::new("label", DataType::Int64, false));
    }
    if index.paths().is_some() {
        fields.push(Field::new("path", DataType::Utf8, false));
    }
    let similarity = serde_json::to_value(m.similarity)?;
    let metadata = [
        (
            "simlearn.similarity".to_string(),
            similarity.as_str().unwrap_or("?").to_string(),
        ),
        ("simlearn.dim".to_string(), dim.to_string()),
        (
            "simlearn.manifest_version".to_string(),
            m.version.to_string(),
        ),
    ]
    .into_iter()
    .collect::<std::collections::HashMap<String, String>>();
    let schema = Arc::new(Schema::new(fields).with_metadata(metadata));

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a file name", out.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> Result<()> {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_max_row_group_row_count(Some(row_group))
            .build();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
        let n = index.len();
        let step = row_group.max(1);
        for start in (0..n).step_by(step) {
            let end = (start + step).min(n);
            let values =
                Float32Array::from(index.vectors().data()[start * dim..end * dim].to_vec());
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(index.ids()[start..end].to_vec())),
                Arc::new(FixedSizeListArray::try_new(
                    item.clone(),
                    dim as i32,
                    Arc::new(values),
                    None,
                )?),
            ];
            if let Some(l) = index.labels() {
                columns.push(Arc::new(Int64Array::from(l[start..end].to_vec())));
            }
            if let Some(p) = index.paths() {
                columns.push(Arc::new(StringArray::from_iter_values(&p[start..end])));
            }
            writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        }
        writer.close()?;
        std::fs::rename(&tmp, out).with_context(|| {
            format!(
                "{}: cannot move {} into place",
                out.display(),
                tmp.display()
            )
        })?;
        Ok(())
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("{}: writing Parquet", out.display()))
}

fn export(a: ExportArgs) -> Result<()> {
    let started = Instant::now();
    if a.row_group == 0 {
        bail!("--row-group must be at least 1");
    }
    let index = Index::load(&a.index)?;
    write_parquet(&index, &a.parquet, a.row_group)?;
    let bytes = std::fs::metadata(&a.parquet).map(|m| m.len()).unwrap_or(0);
    let seconds = started.elapsed().as_secs_f64();
    if a.json {
        let out = serde_json::json!({
            "index": a.index,
            "parquet": a.parquet,
            "rows": index.len(),
            "dim": index.dim(),
            "bytes": bytes,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "exported {} rows × {} of {} to {} ({:.1} MB) in {seconds:.2} s",
            index.len(),
            index.dim(),
            a.index.display(),
            a.parquet.display(),
            bytes as f64 / 1e6
        );
    }
    Ok(())
}
