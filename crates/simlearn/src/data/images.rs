//! Image datasets on disk: the layouts of the deep-metric-learning benchmarks, read into a list
//! of file paths with their labels. Pixels are decoded later, per batch, by
//! [`crate::data::augment`].
//!
//! Accepted layouts (every relative path is resolved against the dataset root):
//!
//! | constructor | layout |
//! |---|---|
//! | [`ImageDataset::from_folder`] | `root/<class>/<image>`: one sub-folder per class, classes numbered 0.. in sorted folder-name order |
//! | [`ImageDataset::from_list_file`] | lines `path label` (the CUB/Cars split files of the contextual-similarity repository); the label is the last whitespace-separated field, so paths may hold spaces |
//! | [`ImageDataset::cub200`] | CUB-200-2011: `images.txt` (`id name`), `image_class_labels.txt` (`id class`), `images/<name>`; optional `classes.txt` names the classes |
//! | [`ImageDataset::cars196`] | Cars-196 without `cars_annos.mat`: either list files `train.txt` and/or `test.txt` (`path label`) in the root, or an image folder `root/<class>/…` |
//! | [`ImageDataset::sop`] | Stanford Online Products: `Ebay_train.txt` / `Ebay_test.txt`, a header then `image_id class_id super_class_id path` |
//! | [`InShop::load`] | In-Shop: `list_eval_partition.txt` (count line, header line, then `image_name item_id status`, status one of train/query/gallery) |
//! | [`ImageDataset::inaturalist`] | a list file of `path label` lines, or of bare paths whose parent folder is the category |
//! | [`ImageDataset::from_csv`] | CSV with a header `path,<label1>,…`: continuous labels, one float column each |

pub mod emoji;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use simlearn_eval::Matrix;

use super::{DataError, FeatureDataset, Labels};

/// File extensions read as images by [`ImageDataset::from_folder`] (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// Image files with one label each.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataset {
    /// Absolute or root-joined path of every image.
    pub paths: Vec<PathBuf>,
    /// Labels of the images (class ids as the layout numbers them, or label vectors).
    pub labels: Labels,
    /// Class names, where the layout has them (folder names, `classes.txt`), keyed by class id.
    pub class_names: BTreeMap<i64, String>,
    /// Super-class of each image (Stanford Online Products only).
    pub super_labels: Option<Vec<i64>>,
}

fn read_text(path: &Path) -> Result<String, DataError> {
    fs::read_to_string(path)
        .map_err(|e| DataError::Invalid(format!("{}: cannot read: {e}", path.display())))
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir)
        .map_err(|e| DataError::Invalid(format!("{}: cannot list: {e}", dir.display())))?;
    for entry in rd {
        let entry = entry
            .map_err(|e| DataError::Invalid(format!("{}: cannot list: {e}", dir.display())))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

fn parse_int(field: &str, file: &Path, line: usize, what: &str) -> Result<i64, DataError> {
    field.parse().map_err(|_| {
        DataError::Invalid(format!(
            "{} line {line}: {what} {field:?} is not an integer",
            file.display()
        ))
    })
}

impl ImageDataset {
    /// A class-label dataset; checks that there are as many labels as paths and at least one.
    pub fn new(paths: Vec<PathBuf>, labels: Vec<i64>) -> Result<Self, DataError> {
        Self::with_labels(paths, Labels::Class(labels))
    }

    fn with_labels(paths: Vec<PathBuf>, labels: Labels) -> Result<Self, DataError> {
        if paths.len() != labels.len() {
            return Err(DataError::Invalid(format!(
                "{} image paths but {} labels",
                paths.len(),
                labels.len()
            )));
        }
        if paths.is_empty() {
            return Err(DataError::Invalid("the image dataset is empty".into()));
        }
        Ok(Self {
            paths,
            labels,
            class_names: BTreeMap::new(),
            super_labels: None,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The class labels, or an error for a continuous-label dataset.
    pub fn class_labels(&self) -> Result<&[i64], DataError> {
        match &self.labels {
            Labels::Class(v) => Ok(v),
            Labels::Continuous(_) => Err(DataError::Invalid(
                "this image dataset has continuous labels; a class-label split or loss needs integer classes".into(),
            )),
        }
    }

    /// `root/<class>/<image>`: every sub-folder of `root` is a class, numbered 0, 1, … in sorted
    /// name order; files with an extension of [`IMAGE_EXTENSIONS`] are its images (sorted), other
    /// files are ignored. Nested folders below a class folder are not searched.
    pub fn from_folder(root: &Path) -> Result<Self, DataError> {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        let mut names = BTreeMap::new();
        let classes: Vec<PathBuf> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if classes.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: no class sub-folders",
                root.display()
            )));
        }
        for (c, dir) in classes.iter().enumerate() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            names.insert(c as i64, name);
            for f in sorted_entries(dir)? {
                if f.is_file() && is_image(&f) {
                    paths.push(f);
                    labels.push(c as i64);
                }
            }
        }
        let mut ds = Self::new(paths, labels)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", root.display())))?;
        ds.class_names = names;
        Ok(ds)
    }

    /// Lines `path label` (blank lines and lines starting with `#` skipped); the label is the last
    /// whitespace-separated field and must be an integer; `path` is joined to `root`.
    pub fn from_list_file(list: &Path, root: &Path) -> Result<Self, DataError> {
        let text = read_text(list)?;
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, label)) = line.rsplit_once(char::is_whitespace) else {
                return Err(DataError::Invalid(format!(
                    "{} line {}: expected `path label`, found {line:?}",
                    list.display(),
                    i + 1
                )));
            };
            labels.push(parse_int(label, list, i + 1, "label")?);
            paths.push(root.join(path.trim()));
        }
        Self::new(paths, labels).map_err(|e| DataError::Invalid(format!("{}: {e}", list.display())))
    }

    /// CUB-200-2011 from its standard files: `images.txt` (`image_id relative_path`),
    /// `image_class_labels.txt` (`image_id class_id`, classes 1–200) and `images/`. Images come
    /// in `images.txt` order; `classes.txt` (`class_id name`), if present, fills
    /// [`ImageDataset::class_names`].
    pub fn cub200(root: &Path) -> Result<Self, DataError> {
        let images_txt = root.join("images.txt");
        let labels_txt = root.join("image_class_labels.txt");
        let mut class_of = BTreeMap::new();
        for (i, line) in read_text(&labels_txt)?.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() {
                continue;
            }
            if f.len() != 2 {
                return Err(DataError::Invalid(format!(
                    "{} line {}: expected `image_id class_id`",
                    labels_txt.display(),
                    i + 1
                )));
            }
            let id = parse_int(f[0], &labels_txt, i + 1, "image id")?;
            let c = parse_int(f[1], &labels_txt, i + 1, "class id")?;
            class_of.insert(id, c);
        }
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in read_text(&images_txt)?.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((id, name)) = line.split_once(char::is_whitespace) else {
                return Err(DataError::Invalid(format!(
                    "{} line {}: expected `image_id path`",
                    images_txt.display(),
                    i + 1
                )));
            };
            let id = parse_int(id, &images_txt, i + 1, "image id")?;
            let Some(&c) = class_of.get(&id) else {
                return Err(DataError::Invalid(format!(
                    "{} line {}: image {id} has no class in {}",
                    images_txt.display(),
                    i + 1,
                    labels_txt.display()
                )));
            };
            paths.push(root.join("images").join(name.trim()));
            labels.push(c);
        }
        let mut ds = Self::new(paths, labels)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", images_txt.display())))?;
        let classes_txt = root.join("classes.txt");
        if classes_txt.is_file() {
            for (i, line) in read_text(&classes_txt)?.lines().enumerate() {
                if let Some((id, name)) = line.trim().split_once(char::is_whitespace) {
                    let id = parse_int(id, &classes_txt, i + 1, "class id")?;
                    ds.class_names.insert(id, name.trim().to_string());
                }
            }
        }
        Ok(ds)
    }

    /// Cars-196 without the MATLAB annotation file: the list files `train.txt` and `test.txt`
    /// (`path label`, paths relative to `root`) concatenated in that order when at least one
    /// exists (as the contextual-similarity repository ships its split), otherwise an image
    /// folder `root/<class>/…` ([`ImageDataset::from_folder`]).
    pub fn cars196(root: &Path) -> Result<Self, DataError> {
        let lists: Vec<PathBuf> = ["train.txt", "test.txt"]
            .iter()
            .map(|f| root.join(f))
            .filter(|p| p.is_file())
            .collect();
        if lists.is_empty() {
            return Self::from_folder(root);
        }
        let mut parts = Vec::new();
        for l in &lists {
            parts.push(Self::from_list_file(l, root)?);
        }
        Self::concat(parts)
    }

    fn concat(parts: Vec<ImageDataset>) -> Result<Self, DataError> {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for p in parts {
            labels.extend_from_slice(p.class_labels()?);
            paths.extend(p.paths);
        }
        Self::new(paths, labels)
    }

    /// Stanford Online Products: `Ebay_train.txt` (`test == false`) or `Ebay_test.txt`, a header
    /// line `image_id class_id super_class_id path`, then one image a line. Labels are the class
    /// ids (train 1–11,318, test 11,319–22,634 in the release); super-classes go to
    /// [`ImageDataset::super_labels`].
    pub fn sop(root: &Path, test: bool) -> Result<Self, DataError> {
        let file = root.join(if test {
            "Ebay_test.txt"
        } else {
            "Ebay_train.txt"
        });
        let text = read_text(&file)?;
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        let mut supers = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.is_empty() || (i == 0 && f[0] == "image_id") {
                continue;
            }
            if f.len() != 4 {
                return Err(DataError::Invalid(format!(
                    "{} line {}: expected `image_id class_id super_class_id path`, found {} fields",
                    file.display(),
                    i + 1,
                    f.len()
                )));
            }
            parse_int(f[0], &file, i + 1, "image_id")?;
            labels.push(parse_int(f[1], &file, i + 1, "class_id")?);
            supers.push(parse_int(f[2], &file, i + 1, "super_class_id")?);
            paths.push(root.join(f[3]));
        }
        let mut ds = Self::new(paths, labels)
            .map_err(|e| DataError::Invalid(format!("{}: {e}", file.display())))?;
        ds.super_labels = Some(supers);
        Ok(ds)
    }

    /// iNaturalist list file: lines `path label`, or bare paths whose parent folder names the
    /// category (the Smooth-AP split files list `train_val2018/<super>/<category>/<image>`).
    /// Bare-path categories are numbered 0.. in sorted folder-name order, and the names kept in
    /// [`ImageDataset::class_names`]; a file may not mix both forms.
    pub fn inaturalist(list: &Path, root: &Path) -> Result<Self, DataError> {
        let text = read_text(list)?;
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty())
            .collect();
        let bare = |l: &str| !l.contains(char::is_whitespace);
        let n_bare = lines.iter().filter(|(_, l)| bare(l)).count();
        if n_bare == 0 {
            return Self::from_list_file(list, root);
        }
        if let Some((i, _)) = lines.iter().find(|(_, l)| !bare(l)) {
            return Err(DataError::Invalid(format!(
                "{} line {i}: mixes `path label` lines with bare paths",
                list.display()
            )));
        }
        let mut cats = Vec::new();
        for (i, l) in &lines {
            let cat = Path::new(l)
                .parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    DataError::Invalid(format!(
                        "{} line {i}: {l:?} has no parent folder to name its category",
                        list.display()
                    ))
                })?;
            cats.push(cat);
        }
        let ids: BTreeMap<String, i64> = cats
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c, i as i64))
            .collect();
        let labels = cats.iter().map(|c| ids[c]).collect();
        let paths = lines.iter().map(|(_, l)| root.join(l)).collect();
        let mut ds = Self::new(paths, labels)?;
        ds.class_names = ids.into_iter().map(|(c, i)| (i, c)).collect();
        Ok(ds)
    }

    /// CSV with continuous labels: a header `path,<name1>,<name2>,…` then rows of a path and
    /// one float per label column (all finite). Fields are split on `,` (no quoting).
    pub fn from_csv(csv: &Path, root: &Path) -> Result<Self, DataError> {
        let text = read_text(csv)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else {
            return Err(DataError::Invalid(format!("{}: empty CSV", csv.display())));
        };
        let d = header.split(',').count() - 1;
        if d == 0 {
            return Err(DataError::Invalid(format!(
                "{} line 1: the header needs a path column and at least one label column",
                csv.display()
            )));
        }
        let mut paths = Vec::new();
        let mut values = Vec::new();
        for (i, line) in lines {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != d + 1 {
                return Err(DataError::Invalid(format!(
                    "{} line {}: {} fields, the header has {}",
                    csv.display(),
                    i + 1,
                    f.len(),
                    d + 1
                )));
            }
            paths.push(root.join(f[0]));
            for v in &f[1..] {
                let x: f32 = v
                    .parse()
                    .ok()
                    .filter(|x: &f32| x.is_finite())
                    .ok_or_else(|| {
                        DataError::Invalid(format!(
                            "{} line {}: label {v:?} is not a finite number",
                            csv.display(),
                            i + 1
                        ))
                    })?;
                values.push(x);
            }
        }
        let n = paths.len();
        let m = Matrix::new(n, d, values).map_err(|e| DataError::Invalid(e.to_string()))?;
        Self::with_labels(paths, Labels::Continuous(m))
            .map_err(|e| DataError::Invalid(format!("{}: {e}", csv.display())))
    }

    /// The images with the given indices (labels, super-labels and class names follow).
    pub fn subset(&self, idx: &[usize]) -> ImageDataset {
        ImageDataset {
            paths: idx.iter().map(|&i| self.paths[i].clone()).collect(),
            labels: self.labels.select(idx),
            class_names: self.class_names.clone(),
            super_labels: self
                .super_labels
                .as_ref()
                .map(|s| idx.iter().map(|&i| s[i]).collect()),
        }
    }

    /// Class-disjoint split with exactly the semantics of
    /// [`FeatureDataset::class_disjoint_split`] (first half of the sorted distinct classes
    /// trains, second half tests; at least 4 classes): the split is delegated to it on the
    /// image indices, so both stay identical.
    pub fn class_disjoint_split(&self) -> Result<(ImageDataset, ImageDataset), DataError> {
        let labels = self.class_labels()?.to_vec();
        // Indices travel as f32 features: exact below 2^24 images.
        if self.len() >= 1 << 24 {
            return Err(DataError::Invalid(format!(
                "class_disjoint_split supports fewer than 2^24 images, found {}",
                self.len()
            )));
        }
        let idx: Vec<f32> = (0..self.len()).map(|i| i as f32).collect();
        let carrier = FeatureDataset {
            features: Matrix::new(self.len(), 1, idx)
                .map_err(|e| DataError::Invalid(e.to_string()))?,
            labels: Labels::Class(labels),
        };
        let (tr, te) = carrier.class_disjoint_split()?;
        let back = |d: &FeatureDataset| -> Vec<usize> {
            d.features.data().iter().map(|&x| x as usize).collect()
        };
        Ok((self.subset(&back(&tr)), self.subset(&back(&te))))
    }
}

/// In-Shop Clothes Retrieval split from `list_eval_partition.txt`: item ids (`id_00000001`)
/// become integer labels (1). Query and gallery share items; train items are disjoint from both.
#[derive(Debug, Clone, PartialEq)]
pub struct InShop {
    /// Images with status `train`.
    pub train: ImageDataset,
    /// Images with status `query`.
    pub query: ImageDataset,
    /// Images with status `gallery`.
    pub gallery: ImageDataset,
}

impl InShop {
    /// Reads `root/list_eval_partition.txt` (first line the image count, second the header
    /// `image_name item_id evaluation_status`); image paths are joined to `root`. The count line
    /// must match the number of rows.
    pub fn load(root: &Path) -> Result<Self, DataError> {
        let file = root.join("list_eval_partition.txt");
        let text = read_text(&file)?;
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let count = match lines.next() {
            Some((_, l)) => parse_int(l.trim(), &file, 1, "image count")?,
            None => {
                return Err(DataError::Invalid(format!(
                    "{}: empty file",
                    file.display()
                )))
            }
        };
        lines.next(); // header
        let mut parts: [(Vec<PathBuf>, Vec<i64>); 3] = Default::default();
        let mut rows = 0i64;
        for (i, line) in lines {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 {
                return Err(DataError::Invalid(format!(
                    "{} line {}: expected `image_name item_id evaluation_status`",
                    file.display(),
                    i + 1
                )));
            }
            let id = f[1].strip_prefix("id_").unwrap_or(f[1]);
            let item = parse_int(id, &file, i + 1, "item_id")?;
            let k = match f[2] {
                "train" => 0,
                "query" => 1,
                "gallery" => 2,
                s => {
                    return Err(DataError::Invalid(format!(
                        "{} line {}: evaluation_status {s:?} is not train, query or gallery",
                        file.display(),
                        i + 1
                    )))
                }
            };
            parts[k].0.push(root.join(f[0]));
            parts[k].1.push(item);
            rows += 1;
        }
        if rows != count {
            return Err(DataError::Invalid(format!(
                "{}: the first line announces {count} images, the file lists {rows}",
                file.display()
            )));
        }
        let [tr, q, g] = parts;
        let mk = |(p, l): (Vec<PathBuf>, Vec<i64>), what: &str| {
            ImageDataset::new(p, l)
                .map_err(|e| DataError::Invalid(format!("{} ({what}): {e}", file.display())))
        };
        Ok(InShop {
            train: mk(tr, "train")?,
            query: mk(q, "query")?,
            gallery: mk(g, "gallery")?,
        })
    }
}
