//! `simlearn demo`: the README's main job. Trains contextual-similarity and contrastive heads
//! on the embedded scikit-learn digits (classes 0–4), evaluates them on the unseen classes 5–9,
//! and prints retrieval quality before and after training.
//!
//! The training set is made from half of the images of classes 0–4 only: each of the 8
//! rotations / reflections of a class is a class of its own (40 classes), and every image gets
//! [`AUGMENTED_COPIES`] jittered copies (rotation, scale, slant, shift, stroke thickness). Trained
//! on the 5 plain classes (`--plain`), both heads collapse onto five directions and retrieve the
//! unseen classes worse than the untrained head; `bench/demo_transfer.py` has the comparison.
//! The checkpoint is picked on the other half of classes 0–4, never on 5–9.
//!
//! It ends the way a trained model is used: the contextual head's embeddings of the unseen
//! classes become a `simlearn-index` artifact (`<out>/index`, with the digits as PNG payloads in
//! `<out>/gallery`), and one held-out image of each unseen class is searched in it.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

use simlearn::data::digits_augment::{
    augmented_copies, chimera_classes, dihedral_classes, DigitAugment, DIHEDRAL_ORDER,
};
use simlearn::data::{digits, rotated_digits, FeatureDataset};
use simlearn::report::{render, ReportOptions, ReportRun};
use simlearn::train::{
    embed, evaluate_continuous_labels, train_class, train_continuous, TrainConfig,
};
use simlearn_eval::{
    evaluate_classes, evaluate_continuous, ContinuousConfig, EvalConfig, Matrix, Similarity,
};
use simlearn_index::{BuildOptions, Hit, Index, Kind};

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
    /// Override the seed of both runs (head initialisation, batches, augmentation).
    #[arg(long)]
    seed: Option<u64>,
    /// Train on the 5 plain classes 0-4, without the dihedral classes and jittered copies.
    #[arg(long)]
    plain: bool,
    /// Print the results as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Continuous labels instead: digits rotated by random angles, log-ratio vs the two triplet
    /// baselines of Kim et al. (2019), evaluated with nDCG and mean angle error.
    #[arg(long)]
    continuous: bool,
}

const CONTINUOUS_CONFIGS: [(&str, &str); 3] = [
    (
        "log_ratio",
        include_str!("../../../configs/rotated-digits-log-ratio.toml"),
    ),
    (
        "dense_triplet",
        include_str!("../../../configs/rotated-digits-dense-triplet.toml"),
    ),
    (
        "binary_triplet",
        include_str!("../../../configs/rotated-digits-binary-triplet.toml"),
    ),
];

#[derive(Serialize)]
struct ContinuousRow {
    method: String,
    before: Option<BTreeMap<String, f64>>,
    after: BTreeMap<String, f64>,
    seconds: f64,
}

const CONTINUOUS_METRICS: [&str; 3] = ["ndcg_at_10", "ndcg_at_100", "mean_label_distance_at_1"];

fn pick(r: &simlearn_eval::ContinuousReport) -> BTreeMap<String, f64> {
    CONTINUOUS_METRICS
        .iter()
        .map(|m| (m.to_string(), r.get(m).unwrap_or(f64::NAN)))
        .collect()
}

fn run_continuous(args: &Args) -> Result<()> {
    let device = burn::prelude::Device::flex();
    let mut rows = Vec::new();
    let mut header = None;
    let mut report_test = None;
    for (name, text) in CONTINUOUS_CONFIGS {
        let mut cfg = TrainConfig::from_toml(text)?;
        override_args(&mut cfg, args);
        let (train, test) = rotated_digits(cfg.train.seed).alternate_split()?;
        let section = cfg.continuous.clone().unwrap_or_default();
        let eval_cfg = ContinuousConfig {
            label_distance: section.label_distance,
            ..ContinuousConfig::default()
        };
        if rows.is_empty() {
            let simlearn::data::Labels::Continuous(labels) = &test.labels else {
                unreachable!("rotated digits carry angles")
            };
            let pixels = evaluate_continuous(&test.features, labels, None, &eval_cfg, None)?;
            rows.push(ContinuousRow {
                method: "pixels (no model)".into(),
                before: None,
                after: pick(&pixels),
                seconds: 0.0,
            });
            header = Some((train.len(), test.len()));
            report_test = Some(test.clone());
        }
        let resolved = cfg.resolved(train.dim())?;
        let untrained = resolved
            .model
            .init(resolved.train.seed, &device)
            .map_err(anyhow::Error::msg)?;
        let before = evaluate_continuous_labels(&untrained, &test, &eval_cfg, &device)?;
        let started = std::time::Instant::now();
        let mut bars = TrainBars::new(name, cfg.train.epochs, args.json);
        let out = train_continuous(
            &cfg,
            &train,
            Some(&test),
            Some(&args.out.join(name)),
            false,
            &mut bars,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let after = evaluate_continuous_labels(&out.head, &test, &eval_cfg, &device)?;
        rows.push(ContinuousRow {
            method: format!("{name} head"),
            before: Some(pick(&before)),
            after: pick(&after),
            seconds,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let (n_train, n_test) = header.unwrap_or_default();
    println!(
        "\nRotated digits (label = angle, circular distance): heads trained on {n_train} images,\n\
         leave-one-out retrieval on the other {n_test} (the last epoch's head is kept only if it is the best on them).\n"
    );
    println!(
        "{:<22} {:>15} {:>15} {:>17} {:>8}",
        "method", "nDCG@10", "nDCG@100", "mean angle err@1", "train s"
    );
    for r in &rows {
        let cell = |m: &str, prec: usize| match &r.before {
            Some(b) => format!("{:.prec$}→{:.prec$}", b[m], r.after[m]),
            None => format!("{:.prec$}", r.after[m]),
        };
        println!(
            "{:<22} {:>15} {:>15} {:>17} {:>8.1}",
            r.method,
            cell("ndcg_at_10", 3),
            cell("ndcg_at_100", 3),
            cell("mean_label_distance_at_1", 1),
            r.seconds
        );
    }
    println!(
        "\n(before→after: the untrained head, then the trained one)\nrun folders: {}",
        args.out.display()
    );
    if let Some(test) = &report_test {
        let names = CONTINUOUS_CONFIGS.iter().map(|(n, _)| *n);
        println!(
            "report: {}",
            write_report(&args.out, names, test, &device)?.display()
        );
    }
    Ok(())
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

/// Chimera classes (top / left half of one dihedral class over the rest of another) added to
/// the 40 dihedral classes, and images made for each.
pub const CHIMERA_CLASSES: usize = 600;
/// Images of each chimera class.
pub const CHIMERA_IMAGES: usize = 24;
/// Samples per class in a batch on the made classes (the configs' `samples_per_class` is for the
/// 5 plain classes).
pub const MADE_SAMPLES_PER_CLASS: usize = 4;
/// Jittered copies of every training row (so `1 + AUGMENTED_COPIES` rows per made image).
pub const AUGMENTED_COPIES: usize = 3;

fn override_args(cfg: &mut TrainConfig, args: &Args) {
    if let Some(e) = args.epochs {
        cfg.train.epochs = e;
    }
    if let Some(s) = args.seed {
        cfg.train.seed = s;
    }
}

/// The demo's training rows, made from `images` of classes 0–4 alone: the 8 dihedral
/// transforms as classes of their own, chimera classes of those, then jittered copies of
/// everything (seeded with `seed`).
fn training_set(images: &FeatureDataset, plain: bool, seed: u64) -> Result<FeatureDataset> {
    if plain {
        return Ok(images.clone());
    }
    let classes = dihedral_classes(images)?;
    let classes = chimera_classes(
        &classes,
        CHIMERA_CLASSES,
        CHIMERA_IMAGES,
        seed.wrapping_mul(2).wrapping_add(1),
    )?;
    Ok(augmented_copies(
        &classes,
        AUGMENTED_COPIES,
        &DigitAugment::default(),
        seed,
    )?)
}

pub fn run(args: Args) -> Result<()> {
    if args.continuous {
        return run_continuous(&args);
    }
    // Classes 0–4 train (half of their images; the other half validates), classes 5–9 test.
    let (seen, unseen) = digits().class_disjoint_split()?;
    let (images, val) = seen.alternate_split()?;
    let eval_cfg = EvalConfig {
        ks: vec![1, 2, 4, 8],
        ..EvalConfig::default()
    };
    let device = burn::prelude::Device::flex();
    let (val_labels, unseen_labels) = (val.class_labels()?, unseen.class_labels()?);
    let mut made = None;
    let mut search_head = None;
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
        override_args(&mut cfg, &args);
        let train = training_set(&images, args.plain, cfg.train.seed)?;
        let mut classes = train.class_labels()?.to_vec();
        classes.sort_unstable();
        classes.dedup();
        made = Some((train.len(), classes.len()));
        if !args.plain {
            // Many classes: 20 classes x 4 a batch instead of the configs' 5 x 16.
            cfg.sampler.samples_per_class = MADE_SAMPLES_PER_CLASS;
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
        if search_head.is_none() {
            search_head = Some(out.head.clone());
        }
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

    let head = search_head.expect("CONFIGS is not empty");
    let search = index_and_search(&args.out, &embed(&head, &unseen.features, &device), &unseen)?;
    if args.json {
        #[derive(Serialize)]
        struct Out<'a> {
            methods: &'a [Row],
            search: &'a DemoSearch,
        }
        let out = Out {
            methods: &rows,
            search: &search,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let made = match (args.plain, made) {
        (false, Some((rows, classes))) => format!(
            ",\nmade into {classes} classes: their {DIHEDRAL_ORDER} rotations/reflections, each a class, and \
             {CHIMERA_CLASSES}\nclasses of half-and-half chimeras of those ({CHIMERA_IMAGES} images each), \
             {AUGMENTED_COPIES} jittered copies\nof every image: {rows} training rows"
        ),
        _ => String::new(),
    };
    println!(
        "\nscikit-learn digits: heads trained on {} images of classes 0-4{made};\n\
         leave-one-out retrieval on\n\
         (a) the other {} images of classes 0-4 (validation, picks the checkpoint) and\n\
         (b) the {} images of the unseen classes 5-9.\n",
        images.len(),
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
    let names = CONFIGS.iter().map(|(n, _)| *n);
    println!(
        "report: {}",
        write_report(&args.out, names, &unseen, &device)?.display()
    );
    print!("{}", search.to_table());
    Ok(())
}

/// Neighbours shown per demo query.
const DEMO_K: usize = 5;

#[derive(Serialize)]
struct DemoQuery {
    /// Row of the query among the unseen images.
    row: usize,
    label: i64,
    hits: Vec<Hit>,
}

#[derive(Serialize)]
struct DemoSearch {
    index: PathBuf,
    items: usize,
    queries: Vec<DemoQuery>,
}

impl DemoSearch {
    fn to_table(&self) -> String {
        let mut s = format!(
            "\nsearch: the contextual head's embeddings of {} unseen images (classes 5-9) indexed in {};\n\
             one held-out image of each unseen class as the query, its {DEMO_K} nearest neighbours (cosine):\n\n",
            self.items,
            self.index.display()
        );
        s += &format!("{:<14} {}\n", "query (class)", "neighbours: id class score");
        for q in &self.queries {
            let hits: Vec<String> = q
                .hits
                .iter()
                .map(|h| format!("{:>4} {} {:.3}", h.id, h.label.unwrap_or(-1), h.score))
                .collect();
            let same = q.hits.iter().filter(|h| h.label == Some(q.label)).count();
            s += &format!(
                "row {:<5} ({}) {}   {same}/{} same class\n",
                q.row,
                q.label,
                hits.join(" |"),
                q.hits.len()
            );
        }
        s += &format!(
            "\nbrowse it: simlearn serve --index {} (then open http://127.0.0.1:8080/ and type an id)\n",
            self.index.display()
        );
        s
    }
}

/// Writes an 8 × 8 digit (pixels in [0, 1]) as a 32 × 32 PNG, dark ink on white.
fn write_digit_png(pixels: &[f32], path: &std::path::Path) -> Result<()> {
    const SCALE: u32 = 4;
    let img = image::GrayImage::from_fn(8 * SCALE, 8 * SCALE, |x, y| {
        let p = pixels[(y / SCALE * 8 + x / SCALE) as usize].clamp(0.0, 1.0);
        image::Luma([(255.0 * (1.0 - p)).round() as u8])
    });
    img.save(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot write the PNG: {e}", path.display()))
}

/// Indexes `emb` (the unseen images' embeddings) without the first image of each class, then
/// searches those held-out images: the trained head's use, shown on data it never saw.
fn index_and_search(
    out: &std::path::Path,
    emb: &Matrix,
    unseen: &FeatureDataset,
) -> Result<DemoSearch> {
    let labels = unseen.class_labels()?;
    let mut queries = Vec::new();
    let mut seen_classes = std::collections::BTreeSet::new();
    for (row, &l) in labels.iter().enumerate() {
        if seen_classes.insert(l) {
            queries.push(row);
        }
    }
    let gallery: Vec<usize> = (0..labels.len()).filter(|r| !queries.contains(r)).collect();
    let gallery_dir = out.join("gallery");
    std::fs::create_dir_all(&gallery_dir)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", gallery_dir.display()))?;
    let dim = emb.cols();
    let mut vectors = Vec::with_capacity(gallery.len() * dim);
    let mut paths = Vec::with_capacity(gallery.len());
    for (id, &r) in gallery.iter().enumerate() {
        vectors.extend_from_slice(emb.row(r));
        let name = format!("{id:04}.png");
        write_digit_png(unseen.features.row(r), &gallery_dir.join(&name))?;
        paths.push(name);
    }
    let opts = BuildOptions {
        kind: Kind::Exact,
        similarity: Similarity::Cosine,
        // Relative to the index folder, so the run folder can be moved as a whole.
        image_root: Some("../gallery".into()),
        ..BuildOptions::default()
    };
    let mut index = Index::build(
        Matrix::new(gallery.len(), dim, vectors)?,
        Some(gallery.iter().map(|&r| labels[r]).collect()),
        Some(paths),
        &opts,
        &|_, _| {},
    )?;
    let dir = out.join("index");
    index.save(&dir)?;
    let mut q = Vec::with_capacity(queries.len() * dim);
    for &r in &queries {
        q.extend_from_slice(emb.row(r));
    }
    let hits = index.search(&Matrix::new(queries.len(), dim, q)?, DEMO_K)?;
    Ok(DemoSearch {
        index: dir,
        items: gallery.len(),
        queries: queries
            .iter()
            .zip(hits)
            .map(|(&row, hits)| DemoQuery {
                row,
                label: labels[row],
                hits,
            })
            .collect(),
    })
}

/// Renders the HTML report of the demo's runs, evaluated on `test`, into `<out>/report/`.
fn write_report<'a>(
    out: &std::path::Path,
    names: impl Iterator<Item = &'a str>,
    test: &simlearn::data::FeatureDataset,
    device: &burn::prelude::Device,
) -> Result<std::path::PathBuf> {
    let runs = names
        .map(|n| ReportRun::load(&out.join(n), test.clone(), device))
        .collect::<Result<Vec<_>, _>>()?;
    let files = render(&runs, &out.join("report"), &ReportOptions::default())?;
    Ok(files.index)
}
