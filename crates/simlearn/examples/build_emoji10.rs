//! Renders the Emoji-10 image folder from unpacked `@iconify-json/*` packages (see
//! `scripts/build_emoji10.sh`, which fetches them with `npm pack` and calls this).
//!
//! ```text
//! cargo run --release -p simlearn --example build_emoji10 -- \
//!     --raw data/emoji10/raw --out data/emoji10 [--size 64] [--min-styles 8] [--sets noto,twemoji,…]
//! ```
//!
//! Input: `<raw>/<set>/package/icons.json` (+ `chars.json` when the package has one).
//! Output: `<out>/{train,test}/<class key>/<set>.png` (RGB, icons drawn on white, fitted and
//! centred in a `size × size` square) and `<out>/manifest.tsv` (`split key set icon`). Class
//! matching and the split are `simlearn::data::images::emoji::plan`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use resvg::{tiny_skia, usvg};
use simlearn::data::images::emoji::{plan, IconSet};

/// The ten sets of datasets.md, in its order (the name table of the first set with a name wins).
const SETS: [&str; 10] = [
    "noto",
    "twemoji",
    "openmoji",
    "fluent-emoji-flat",
    "fluent-emoji",
    "fluent-emoji-high-contrast",
    "emojione",
    "emojione-monotone",
    "emojione-v1",
    "noto-v1",
];

struct Args {
    raw: PathBuf,
    out: PathBuf,
    size: u32,
    min_styles: usize,
    sets: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        raw: PathBuf::from("data/emoji10/raw"),
        out: PathBuf::from("data/emoji10"),
        size: 64,
        min_styles: 8,
        sets: SETS.iter().map(|s| s.to_string()).collect(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--raw" => a.raw = value()?.into(),
            "--out" => a.out = value()?.into(),
            "--size" => {
                let v = value()?;
                a.size = v
                    .parse()
                    .ok()
                    .filter(|&s| (1..=4096).contains(&s))
                    .ok_or(format!("--size {v}: expected an integer in 1..=4096"))?;
            }
            "--min-styles" => {
                let v = value()?;
                a.min_styles = v
                    .parse()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or(format!("--min-styles {v}: expected a positive integer"))?;
            }
            "--sets" => a.sets = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn load_set(raw: &Path, name: &str) -> Result<IconSet, String> {
    let dir = raw.join(name).join("package");
    let icons = dir.join("icons.json");
    let text = fs::read_to_string(&icons).map_err(|e| format!("{}: {e}", icons.display()))?;
    let chars_path = dir.join("chars.json");
    let chars = if chars_path.is_file() {
        Some(
            fs::read_to_string(&chars_path)
                .map_err(|e| format!("{}: {e}", chars_path.display()))?,
        )
    } else {
        None
    };
    IconSet::parse(name, &text, chars.as_deref()).map_err(|e| e.to_string())
}

/// Renders one icon on white, fitted into `size × size` with its aspect ratio kept.
fn render(svg: &str, size: u32) -> Result<image::RgbImage, String> {
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).map_err(|e| e.to_string())?;
    let (w, h) = (tree.size().width(), tree.size().height());
    let scale = (size as f32 / w).min(size as f32 / h);
    let (dx, dy) = (
        (size as f32 - w * scale) / 2.0,
        (size as f32 - h * scale) / 2.0,
    );
    let mut pixmap = tiny_skia::Pixmap::new(size, size).ok_or("cannot allocate the pixmap")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let tf = tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, dx, dy);
    resvg::render(&tree, tf, &mut pixmap.as_mut());
    // The background is opaque, so premultiplied RGB equals straight RGB.
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    image::RgbImage::from_raw(size, size, rgb).ok_or_else(|| "pixmap size mismatch".to_string())
}

/// Renders `icon` of `set` to `<dir>/<set>.png`.
fn render_one(set: &IconSet, icon: &str, dir: &Path, size: u32) -> Result<(), String> {
    let svg = set.resolve(icon).ok_or("icon vanished")?.to_svg();
    let img = render(&svg, size)?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.png", set.name));
    img.save(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let mut sets = Vec::new();
    for name in &args.sets {
        let s = load_set(&args.raw, name)?;
        eprintln!(
            "{name}: {} names, chars table: {}",
            s.names().len(),
            s.has_chars()
        );
        sets.push(s);
    }
    let classes = plan(&sets, args.min_styles);
    let n_test = classes.iter().filter(|c| c.test).count();
    eprintln!(
        "{} classes drawn in >= {} styles: {} train, {n_test} test",
        classes.len(),
        args.min_styles,
        classes.len() - n_test
    );
    for split in ["train", "test"] {
        let d = args.out.join(split);
        if d.exists() {
            // Stale classes of an earlier build (other size or sets) must not survive.
            fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
    }
    let jobs: Vec<(&str, &str, usize, &str)> = classes
        .iter()
        .flat_map(|c| {
            let split = if c.test { "test" } else { "train" };
            c.icons
                .iter()
                .map(move |(si, icon)| (split, c.key.as_str(), *si, icon.as_str()))
        })
        .collect();
    let failures: Vec<String> = jobs
        .par_iter()
        .filter_map(|&(split, key, si, icon)| {
            render_one(&sets[si], icon, &args.out.join(split).join(key), args.size)
                .err()
                .map(|e| format!("{} {icon} ({key}): {e}", sets[si].name))
        })
        .collect();
    let mut manifest = String::from("split\tkey\tset\ticon\n");
    for &(split, key, si, icon) in &jobs {
        manifest.push_str(&format!("{split}\t{key}\t{}\t{icon}\n", sets[si].name));
    }
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mpath = args.out.join("manifest.tsv");
    fs::write(&mpath, manifest).map_err(|e| format!("{}: {e}", mpath.display()))?;
    for f in &failures {
        eprintln!("warning: not rendered: {f}");
    }
    eprintln!(
        "wrote {} images ({} failed) of {}x{} px under {}",
        jobs.len() - failures.len(),
        failures.len(),
        args.size,
        args.size,
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
