//! The index: building, appending, exact and HNSW search, and the on-disk artifact.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use simlearn_eval::io::{npy_header, parse_npy, NpyData};
use simlearn_eval::knn::exact_score;
use simlearn_eval::{knn, KnnConfig, Matrix, Similarity};

use crate::ann::{Graph, HnswParams};
use crate::scan::{scan, RowAux, SCAN_MAX_QUERIES};
use crate::{file_err, IndexError};

/// The `format` field of every manifest.
pub const FORMAT: &str = "simlearn-index";
/// The manifest version this crate writes and reads. A later version is refused (never
/// misread); an earlier one would be upgraded here.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Every file name the index itself may write (others in its folder are the user's and kept).
const OWN_FILES: [&str; 7] = [
    MANIFEST,
    "vectors.npy",
    "ids.npy",
    "labels.npy",
    "paths.txt",
    "hnsw.usearch",
    "model",
];
/// The most neighbours one query may ask for.
pub const MAX_K: usize = 1000;

/// How the index searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Exact kNN (the evaluation engine's), every query against every row.
    #[default]
    Exact,
    /// An HNSW graph proposes candidates, re-scored exactly with the f32 vectors.
    Hnsw,
}

/// Scalar type of the vectors inside the HNSW graph (the f32 vectors are always kept too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 4 bytes a value.
    #[default]
    F32,
    /// IEEE half precision, 2 bytes a value.
    F16,
    /// Signed bytes (usearch scales unit vectors by 127); cosine similarity only.
    I8,
}

/// Size and SHA-256 of one file of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Length in bytes.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
}

/// Where the vectors came from: the model files copied under `model/` in the index, so that
/// queries by image run through the same network and preprocessing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The run folder the files were copied from (as given when the index was built).
    pub source: String,
    /// The copied files, relative to `model/`.
    pub files: Vec<String>,
}

/// A calibrated decision threshold: a hit whose score is at least `score` is a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The score ("larger = closer") at or above which a hit is a match.
    pub score: f64,
    /// How it was chosen, e.g. `f1` or `precision>=0.95`.
    pub rule: String,
    /// Precision of the match decision on the calibration queries.
    pub precision: f64,
    /// Recall of the match decision on the calibration queries.
    pub recall: f64,
    /// F1 of the match decision on the calibration queries.
    pub f1: f64,
}

/// The manifest (`manifest.json`): everything needed to read and check the other files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this crate.
    pub version: u32,
    /// Vector dimension.
    pub dim: usize,
    /// Number of rows.
    pub count: usize,
    /// Score function.
    pub similarity: Similarity,
    /// Search kind.
    pub kind: Kind,
    /// Graph storage (kind `hnsw`).
    pub storage: Storage,
    /// HNSW parameters (kind `hnsw`).
    pub hnsw: Option<HnswParams>,
    /// Whether `labels.npy` exists.
    pub labels: bool,
    /// Whether `paths.txt` exists.
    pub paths: bool,
    /// Folder that relative payload paths are resolved against, and outside which no payload
    /// is ever served. A relative root is relative to the index folder.
    pub image_root: Option<String>,
    /// The model that made the vectors.
    pub model: Option<ModelRef>,
    /// A calibrated match threshold (`simlearn calibrate`).
    pub threshold: Option<Threshold>,
    /// Every other file of the index with its size and checksum.
    pub files: BTreeMap<String, FileEntry>,
}

/// Choices made when building an index.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Search kind.
    pub kind: Kind,
    /// Score function.
    pub similarity: Similarity,
    /// Graph storage (kind `hnsw`).
    pub storage: Storage,
    /// Graph parameters (kind `hnsw`).
    pub hnsw: HnswParams,
    /// See [`Manifest::image_root`].
    pub image_root: Option<String>,
}

/// One neighbour of a query.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    /// The item's id.
    pub id: i64,
    /// Exact score, "larger = closer" (cosine / dot, or −squared distance).
    pub score: f32,
    /// The item's class label, when the index has labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    /// The item's payload path, when the index has paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Under a calibrated threshold: whether the score is a match.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matched: Option<bool>,
    /// Row position inside the index.
    #[serde(skip)]
    pub position: usize,
}

/// A loaded or freshly built index.
pub struct Index {
    manifest: Manifest,
    vectors: Matrix,
    ids: Vec<i64>,
    by_id: HashMap<i64, usize>,
    labels: Option<Vec<i64>>,
    paths: Option<Vec<String>>,
    graph: Option<Graph>,
    /// Model files (name under `model/`, content), carried along by `save`.
    model_files: Vec<(String, Vec<u8>)>,
    dir: Option<PathBuf>,
    /// Row factors of the few-query exact scan, made on its first use (reset by `add`).
    scan_aux: std::sync::OnceLock<RowAux>,
}

fn check_rows(vectors: &Matrix, what: &str) -> Result<(), IndexError> {
    if vectors.rows() == 0 || vectors.cols() == 0 {
        return Err(IndexError::Invalid(format!(
            "{what}: empty ({} × {})",
            vectors.rows(),
            vectors.cols()
        )));
    }
    if let Some(r) = vectors.first_non_finite_row() {
        return Err(IndexError::Invalid(format!(
            "{what}: row {r} holds NaN or infinity"
        )));
    }
    Ok(())
}

fn check_side<T>(what: &str, have: bool, new: Option<&[T]>, rows: usize) -> Result<(), IndexError> {
    match (have, new) {
        (true, None) => Err(IndexError::Invalid(format!(
            "the index has {what}: give {what} for the new rows too"
        ))),
        (false, Some(_)) => Err(IndexError::Invalid(format!(
            "the index was built without {what}: the new rows cannot have them"
        ))),
        (_, Some(v)) if v.len() != rows => Err(IndexError::Invalid(format!(
            "{} {what} for {rows} vectors",
            v.len()
        ))),
        _ => Ok(()),
    }
}

impl Index {
    /// Builds an index of `vectors` (rows get ids 0, 1, …). `labels` and `paths`, when given,
    /// have one entry per row. `progress(done, total)` reports graph insertion.
    pub fn build(
        vectors: Matrix,
        labels: Option<Vec<i64>>,
        paths: Option<Vec<String>>,
        opts: &BuildOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Self, IndexError> {
        check_rows(&vectors, "vectors")?;
        let n = vectors.rows();
        check_side("labels", labels.is_some(), labels.as_deref(), n)?;
        check_side("paths", paths.is_some(), paths.as_deref(), n)?;
        if opts.storage == Storage::I8 && opts.similarity != Similarity::Cosine {
            return Err(IndexError::Invalid(
                "int8 graph storage needs cosine similarity (usearch quantises unit vectors)"
                    .into(),
            ));
        }
        if opts.kind == Kind::Exact && opts.storage != Storage::F32 {
            return Err(IndexError::Invalid(
                "f16 / int8 storage applies to the hnsw graph; an exact index scores the f32 vectors"
                    .into(),
            ));
        }
        let graph = match opts.kind {
            Kind::Exact => None,
            Kind::Hnsw => {
                let g = Graph::new(vectors.cols(), opts.similarity, opts.storage, &opts.hnsw)?;
                g.insert(&vectors, 0, &|d| progress(d, n))?;
                Some(g)
            }
        };
        let manifest = Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            dim: vectors.cols(),
            count: n,
            similarity: opts.similarity,
            kind: opts.kind,
            storage: opts.storage,
            hnsw: (opts.kind == Kind::Hnsw).then_some(opts.hnsw),
            labels: labels.is_some(),
            paths: paths.is_some(),
            image_root: opts.image_root.clone(),
            model: None,
            threshold: None,
            files: BTreeMap::new(),
        };
        let ids: Vec<i64> = (0..n as i64).collect();
        Ok(Self {
            by_id: ids.iter().enumerate().map(|(i, &id)| (id, i)).collect(),
            manifest,
            vectors,
            ids,
            labels,
            paths,
            graph,
            model_files: Vec::new(),
            dir: None,
            scan_aux: std::sync::OnceLock::new(),
        })
    }

    /// Appends rows (ids continue after the largest id). Labels and paths must be given exactly
    /// when the index has them.
    pub fn add(
        &mut self,
        vectors: &Matrix,
        labels: Option<&[i64]>,
        paths: Option<&[String]>,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(), IndexError> {
        check_rows(vectors, "new vectors")?;
        if vectors.cols() != self.manifest.dim {
            return Err(IndexError::Invalid(format!(
                "new vectors have dimension {}, the index {}",
                vectors.cols(),
                self.manifest.dim
            )));
        }
        let n = vectors.rows();
        check_side("labels", self.manifest.labels, labels, n)?;
        check_side("paths", self.manifest.paths, paths, n)?;
        let first = self.vectors.rows();
        if let Some(g) = &self.graph {
            g.insert(vectors, first, &|d| progress(d, n))?;
        }
        let mut data = std::mem::replace(&mut self.vectors, Matrix::new(0, 0, vec![])?).into_data();
        data.extend_from_slice(vectors.data());
        self.vectors = Matrix::new(first + n, self.manifest.dim, data)?;
        let next = self.ids.iter().max().map_or(0, |m| m + 1);
        for i in 0..n as i64 {
            self.by_id.insert(next + i, self.ids.len());
            self.ids.push(next + i);
        }
        if let (Some(l), Some(new)) = (&mut self.labels, labels) {
            l.extend_from_slice(new);
        }
        if let (Some(p), Some(new)) = (&mut self.paths, paths) {
            p.extend(new.iter().cloned());
        }
        self.manifest.count = first + n;
        self.scan_aux = std::sync::OnceLock::new();
        Ok(())
    }

    /// Replaces the ids (one per row, all distinct); later [`Index::add`]s continue after the
    /// largest.
    pub fn set_ids(&mut self, ids: Vec<i64>) -> Result<(), IndexError> {
        if ids.len() != self.len() {
            return Err(IndexError::Invalid(format!(
                "{} ids for {} rows",
                ids.len(),
                self.len()
            )));
        }
        let mut by_id = HashMap::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            if let Some(j) = by_id.insert(id, i) {
                return Err(IndexError::Invalid(format!(
                    "id {id} appears twice (rows {j} and {i})"
                )));
            }
        }
        self.ids = ids;
        self.by_id = by_id;
        Ok(())
    }

    /// The manifest (its `files` are filled in by [`Index::save`] and [`Index::load`]).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.vectors.rows()
    }

    /// Whether the index has no rows (never true for a built or loaded index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    /// The f32 vectors, one row per item.
    pub fn vectors(&self) -> &Matrix {
        &self.vectors
    }

    /// Ids, one per row.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Class labels, one per row.
    pub fn labels(&self) -> Option<&[i64]> {
        self.labels.as_deref()
    }

    /// Payload paths, one per row.
    pub fn paths(&self) -> Option<&[String]> {
        self.paths.as_deref()
    }

    /// The folder the index was loaded from or last saved to.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The row of `id`.
    pub fn position(&self, id: i64) -> Result<usize, IndexError> {
        self.by_id
            .get(&id)
            .copied()
            .ok_or_else(|| IndexError::Invalid(format!("no item with id {id}")))
    }

    /// The folder of the copied model files, when the index has a model and a folder.
    pub fn model_dir(&self) -> Option<PathBuf> {
        match (&self.manifest.model, &self.dir) {
            (Some(_), Some(d)) => Some(d.join("model")),
            _ => None,
        }
    }

    /// The payload image root resolved against the index folder.
    pub fn image_root(&self) -> Option<PathBuf> {
        let root = PathBuf::from(self.manifest.image_root.as_ref()?);
        Some(if root.is_absolute() {
            root
        } else {
            self.dir.as_deref().unwrap_or(Path::new(".")).join(root)
        })
    }

    /// Copies the model files `files` (relative to `source`) into the index (`model/`).
    pub fn attach_model(&mut self, source: &Path, files: &[&str]) -> Result<(), IndexError> {
        let mut copied = Vec::new();
        for f in files {
            let p = source.join(f);
            let bytes = std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot read: {e}")))?;
            copied.push((f.to_string(), bytes));
        }
        self.model_files = copied;
        self.manifest.model = Some(ModelRef {
            source: source.display().to_string(),
            files: files.iter().map(|f| f.to_string()).collect(),
        });
        Ok(())
    }

    /// Sets (or clears) the calibrated match threshold.
    pub fn set_threshold(&mut self, t: Option<Threshold>) {
        self.manifest.threshold = t;
    }

    /// Overrides the HNSW search candidate-list size (not saved).
    pub fn set_ef_search(&mut self, ef: usize) {
        if let (Some(g), Some(p)) = (&self.graph, &mut self.manifest.hnsw) {
            g.set_ef(ef);
            p.ef_search = ef.max(1);
        }
    }

    /// Bytes used by the HNSW graph (0 for an exact index).
    pub fn graph_memory(&self) -> usize {
        self.graph.as_ref().map_or(0, Graph::memory_usage)
    }

    fn check_k(&self, k: usize, exclude_one: bool) -> Result<(), IndexError> {
        let max = (self.len() - usize::from(exclude_one)).min(MAX_K);
        if k == 0 || k > max {
            return Err(IndexError::Invalid(format!(
                "k = {k} is out of range: 1 ≤ k ≤ {max}"
            )));
        }
        Ok(())
    }

    fn check_queries(&self, queries: &Matrix) -> Result<(), IndexError> {
        if queries.cols() != self.manifest.dim {
            return Err(IndexError::Invalid(format!(
                "query has dimension {}, the index {}",
                queries.cols(),
                self.manifest.dim
            )));
        }
        if let Some(r) = queries.first_non_finite_row() {
            return Err(IndexError::Invalid(format!(
                "query {r} holds NaN or infinity"
            )));
        }
        Ok(())
    }

    fn hit(&self, position: usize, score: f32) -> Hit {
        Hit {
            id: self.ids[position],
            score,
            label: self.labels.as_ref().map(|l| l[position]),
            path: self.paths.as_ref().map(|p| p[position].clone()),
            matched: self
                .manifest
                .threshold
                .as_ref()
                .map(|t| f64::from(score) >= t.score),
            position,
        }
    }

    /// The `k` nearest rows of every query, best first (ties: lower position first).
    pub fn search(&self, queries: &Matrix, k: usize) -> Result<Vec<Vec<Hit>>, IndexError> {
        self.check_queries(queries)?;
        self.check_k(k, false)?;
        self.search_unchecked(queries, k, None)
    }

    /// The `k` nearest rows of the item with id `id`, the item itself left out (its exact
    /// duplicates are kept).
    pub fn search_id(&self, id: i64, k: usize) -> Result<Vec<Hit>, IndexError> {
        let pos = self.position(id)?;
        self.check_k(k, true)?;
        let q = self.vectors.select_rows(&[pos]);
        Ok(self
            .search_unchecked(&q, k, Some(pos))?
            .pop()
            .unwrap_or_default())
    }

    fn search_unchecked(
        &self,
        queries: &Matrix,
        k: usize,
        exclude: Option<usize>,
    ) -> Result<Vec<Vec<Hit>>, IndexError> {
        let want = k + usize::from(exclude.is_some());
        let rows: Vec<Vec<(usize, f32)>> = match &self.graph {
            None if queries.rows() <= SCAN_MAX_QUERIES => {
                let sim = self.manifest.similarity;
                let aux = self
                    .scan_aux
                    .get_or_init(|| RowAux::new(&self.vectors, sim));
                (0..queries.rows())
                    .map(|q| {
                        self.rescore(
                            queries.row(q),
                            scan(&self.vectors, aux, queries.row(q), want),
                        )
                    })
                    .collect::<Result<_, _>>()?
            }
            None => {
                let cfg = KnnConfig {
                    k: want,
                    similarity: self.manifest.similarity,
                    ..KnnConfig::default()
                };
                let nb = knn(queries, &self.vectors, &cfg, None)?;
                (0..queries.rows())
                    .map(|q| {
                        let (idx, sc) = nb.row(q);
                        idx.iter()
                            .map(|&i| i as usize)
                            .zip(sc.iter().copied())
                            .collect()
                    })
                    .collect()
            }
            Some(g) => {
                // Quantised graphs misorder near neighbours; asking for twice as many and
                // re-scoring them exactly puts the true ones back on top.
                let count = match self.manifest.storage {
                    Storage::F32 => want,
                    Storage::F16 | Storage::I8 => 2 * want,
                };
                (0..queries.rows())
                    .into_par_iter()
                    .map(|q| self.rescore(queries.row(q), g.candidates(queries.row(q), count)?))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .filter(|&(p, _)| Some(p) != exclude)
                    .take(k)
                    .map(|(p, s)| self.hit(p, s))
                    .collect()
            })
            .collect())
    }

    fn rescore(&self, q: &[f32], cand: Vec<usize>) -> Result<Vec<(usize, f32)>, IndexError> {
        let sim = self.manifest.similarity;
        let mut scored: Vec<(usize, f64)> = cand
            .into_iter()
            .map(|p| (p, exact_score(sim, q, self.vectors.row(p))))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(scored.into_iter().map(|(p, s)| (p, s as f32)).collect())
    }

    /// Writes the index to `dir` atomically: every file goes into a fresh sibling folder,
    /// which then replaces `dir` by renames. Refuses to replace a non-empty folder that is
    /// not an index.
    pub fn save(&mut self, dir: &Path) -> Result<(), IndexError> {
        if dir.exists() {
            let is_index = dir.join(MANIFEST).is_file();
            let empty = std::fs::read_dir(dir)
                .map_err(|e| file_err(dir, format!("cannot read: {e}")))?
                .next()
                .is_none();
            if !is_index && !empty {
                return Err(file_err(
                    dir,
                    "exists and is not a simlearn index; refusing to replace it",
                ));
            }
        }
        let files = self.encode()?;
        let mut manifest = self.manifest.clone();
        manifest.files = files
            .iter()
            .map(|(name, bytes)| {
                (
                    name.clone(),
                    FileEntry {
                        bytes: bytes.len() as u64,
                        sha256: sha256_hex(bytes),
                    },
                )
            })
            .collect();
        let mut mbytes = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| IndexError::Invalid(format!("manifest: {e}")))?;
        mbytes.push(b'\n');

        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent)
            .map_err(|e| file_err(&parent, format!("cannot create: {e}")))?;
        let name = dir
            .file_name()
            .ok_or_else(|| file_err(dir, "not a folder name"))?
            .to_string_lossy()
            .into_owned();
        let tag = format!("{}-{}", std::process::id(), unique());
        let tmp = parent.join(format!(".{name}.tmp-{tag}"));
        let old = parent.join(format!(".{name}.old-{tag}"));
        let write_all = || -> Result<(), IndexError> {
            std::fs::create_dir(&tmp).map_err(|e| file_err(&tmp, format!("cannot create: {e}")))?;
            for (name, bytes) in files
                .iter()
                .chain(std::iter::once(&(MANIFEST.to_string(), mbytes.clone())))
            {
                let p = tmp.join(name);
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)
                        .map_err(|e| file_err(d, format!("cannot create: {e}")))?;
                }
                let mut f = std::fs::File::create(&p)
                    .map_err(|e| file_err(&p, format!("cannot create: {e}")))?;
                f.write_all(bytes)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| file_err(&p, format!("cannot write: {e}")))?;
            }
            Ok(())
        };
        if let Err(e) = write_all() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let existed = dir.exists();
        if existed {
            // Files of the user's own inside the folder (an images/ folder, notes) move over
            // to the new folder; only the index's own files are replaced.
            let ours: std::collections::HashSet<String> = files
                .iter()
                .map(|(n, _)| n.split('/').next().unwrap_or(n).to_string())
                .chain([MANIFEST.to_string(), "model".to_string()])
                .collect();
            let entries =
                std::fs::read_dir(dir).map_err(|e| file_err(dir, format!("cannot read: {e}")))?;
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !ours.contains(&n) && !OWN_FILES.contains(&n.as_str()) {
                    std::fs::rename(e.path(), tmp.join(&n)).map_err(|err| {
                        file_err(&e.path(), format!("cannot move into the new index: {err}"))
                    })?;
                }
            }
            std::fs::rename(dir, &old).map_err(|e| {
                let _ = std::fs::remove_dir_all(&tmp);
                file_err(dir, format!("cannot move the old index aside: {e}"))
            })?;
        }
        if let Err(e) = std::fs::rename(&tmp, dir) {
            if existed {
                let _ = std::fs::rename(&old, dir);
            }
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(file_err(
                dir,
                format!("cannot rename the new index into place: {e}"),
            ));
        }
        if existed {
            let _ = std::fs::remove_dir_all(&old);
        }
        self.manifest = manifest;
        self.dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// The content of every file except the manifest, in a fixed order.
    fn encode(&self) -> Result<Vec<(String, Vec<u8>)>, IndexError> {
        let mut files = Vec::new();
        let m = &self.vectors;
        let mut v = npy_header("<f4", &[m.rows(), m.cols()]);
        v.reserve(m.data().len() * 4);
        for x in m.data() {
            v.extend_from_slice(&x.to_le_bytes());
        }
        files.push(("vectors.npy".to_string(), v));
        files.push(("ids.npy".to_string(), npy_i64(&self.ids)));
        if let Some(l) = &self.labels {
            files.push(("labels.npy".to_string(), npy_i64(l)));
        }
        if let Some(p) = &self.paths {
            let mut t = String::new();
            for s in p {
                t.push_str(s);
                t.push('\n');
            }
            files.push(("paths.txt".to_string(), t.into_bytes()));
        }
        if let Some(g) = &self.graph {
            files.push(("hnsw.usearch".to_string(), g.to_bytes()?));
        }
        for (name, bytes) in &self.model_files {
            files.push((format!("model/{name}"), bytes.clone()));
        }
        Ok(files)
    }

    /// Reads an index folder, checking the manifest's format and version and the size and
    /// SHA-256 of every file; any mismatch is an error naming the file.
    pub fn load(dir: &Path) -> Result<Self, IndexError> {
        let mpath = dir.join(MANIFEST);
        let text =
            std::fs::read(&mpath).map_err(|e| file_err(&mpath, format!("cannot read: {e}")))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| file_err(&mpath, format!("not a valid index manifest: {e}")))?;
        if manifest.format != FORMAT {
            return Err(file_err(
                &mpath,
                format!("format is {:?}, expected {FORMAT:?}", manifest.format),
            ));
        }
        if manifest.version != FORMAT_VERSION {
            return Err(file_err(
                &mpath,
                format!(
                    "index format version {} is not supported (this build reads version {FORMAT_VERSION})",
                    manifest.version
                ),
            ));
        }
        let read = |name: &str| -> Result<Vec<u8>, IndexError> {
            let p = dir.join(name);
            let entry = manifest
                .files
                .get(name)
                .ok_or_else(|| file_err(&mpath, format!("lists no {name}")))?;
            let bytes = std::fs::read(&p).map_err(|e| file_err(&p, format!("cannot read: {e}")))?;
            if bytes.len() as u64 != entry.bytes {
                return Err(file_err(
                    &p,
                    format!(
                        "corrupted: {} bytes, the manifest records {}",
                        bytes.len(),
                        entry.bytes
                    ),
                ));
            }
            let sum = sha256_hex(&bytes);
            if sum != entry.sha256 {
                return Err(file_err(
                    &p,
                    format!(
                        "corrupted: SHA-256 {}…, the manifest records {}…",
                        &sum[..12],
                        entry.sha256.get(..12).unwrap_or(&entry.sha256)
                    ),
                ));
            }
            Ok(bytes)
        };
        let (n, d) = (manifest.count, manifest.dim);
        let vpath = dir.join("vectors.npy");
        let a = parse_npy(&read("vectors.npy")?).map_err(|e| file_err(&vpath, e))?;
        let NpyData::Float(data) = a.data else {
            return Err(file_err(&vpath, "not a float array"));
        };
        if a.shape != [n, d] || a.descr != "<f4" {
            return Err(file_err(
                &vpath,
                format!(
                    "{} array of shape {:?}, the manifest says <f4 ({n}, {d})",
                    a.descr, a.shape
                ),
            ));
        }
        let vectors = Matrix::new(n, d, data).map_err(|e| file_err(&vpath, e))?;
        if let Some(r) = vectors.first_non_finite_row() {
            return Err(file_err(&vpath, format!("row {r} holds NaN or infinity")));
        }
        let ints = |name: &str| -> Result<Vec<i64>, IndexError> {
            let p = dir.join(name);
            let a = parse_npy(&read(name)?).map_err(|e| file_err(&p, e))?;
            match a.data {
                NpyData::Int(v) if a.shape == [n] => Ok(v),
                _ => Err(file_err(&p, format!("expected {n} integers"))),
            }
        };
        let ids = ints("ids.npy")?;
        let labels = manifest.labels.then(|| ints("labels.npy")).transpose()?;
        let paths = if manifest.paths {
            let p = dir.join("paths.txt");
            let text =
                String::from_utf8(read("paths.txt")?).map_err(|_| file_err(&p, "not UTF-8"))?;
            let v: Vec<String> = text.lines().map(str::to_string).collect();
            if v.len() != n {
                return Err(file_err(&p, format!("{} paths for {n} rows", v.len())));
            }
            Some(v)
        } else {
            None
        };
        let graph = match manifest.kind {
            Kind::Exact => None,
            Kind::Hnsw => {
                let p = dir.join("hnsw.usearch");
                let params = manifest
                    .hnsw
                    .ok_or_else(|| file_err(&mpath, "kind hnsw without hnsw parameters"))?;
                let g = Graph::from_bytes(
                    &read("hnsw.usearch")?,
                    d,
                    manifest.similarity,
                    manifest.storage,
                    &params,
                )
                .map_err(|e| file_err(&p, e))?;
                if g.len() != n {
                    return Err(file_err(&p, format!("{} nodes for {n} rows", g.len())));
                }
                Some(g)
            }
        };
        let model_files = match &manifest.model {
            None => Vec::new(),
            Some(m) => m
                .files
                .iter()
                .map(|f| Ok((f.clone(), read(&format!("model/{f}"))?)))
                .collect::<Result<_, IndexError>>()?,
        };
        let mut by_id = HashMap::with_capacity(n);
        for (i, &id) in ids.iter().enumerate() {
            if by_id.insert(id, i).is_some() {
                return Err(file_err(
                    &dir.join("ids.npy"),
                    format!("id {id} appears twice"),
                ));
            }
        }
        Ok(Self {
            manifest,
            vectors,
            ids,
            by_id,
            labels,
            paths,
            graph,
            model_files,
            dir: Some(dir.to_path_buf()),
            scan_aux: std::sync::OnceLock::new(),
        })
    }
}

fn npy_i64(v: &[i64]) -> Vec<u8> {
    let mut b = npy_header("<i8", &[v.len()]);
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
