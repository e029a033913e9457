//! Images per second of the decoding + augmentation pipeline on generated 500 × 375 JPEGs
//! (the size of the CUB/Cars images that stack.md §5 measured): training
//! (RandomResizedCrop 224 + flip + ImageNet normalisation) and evaluation (Resize 256 +
//! CenterCrop 224), on one thread and on all cores through [`ImageLoader`].
//!
//! `cargo bench -p simlearn --bench image_pipeline` (env `IMAGES`, default 64, sets how many
//! files are generated; each configuration decodes them all three times and reports the best).
//! With `IMAGES_DIR=/some/dir` the JPEGs are written there and kept, so that
//! `bench/image_pipeline_torch.py /some/dir` times PIL + torchvision on the same files.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use image::{Rgb, RgbImage};
use simlearn::data::augment::{ImageLoader, LoaderConfig, Pipeline};
use simlearn::data::images::ImageDataset;

/// A smooth gradient with texture, so the JPEG has realistic entropy (not a flat colour).
fn synthetic(i: u32) -> RgbImage {
    RgbImage::from_fn(500, 375, |x, y| {
        let t = x
            .wrapping_mul(31)
            .wrapping_add(y.wrapping_mul(17))
            .wrapping_add(i * 101);
        Rgb([
            (x / 2 + (t % 23)) as u8,
            (y / 2 + (t % 37)) as u8,
            ((x + y + i * 7) % 256) as u8,
        ])
    })
}

fn main() {
    let n: usize = std::env::var("IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let keep = std::env::var_os("IMAGES_DIR").map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("simlearn-bench-images-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut paths: Vec<PathBuf> = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("{i}.jpg"));
        let img = synthetic(i as u32);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).expect("create jpeg"));
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 90)
            .encode_image(&img)
            .expect("encode jpeg");
        paths.push(p);
    }
    let labels = (0..n as i64).map(|i| i % 8).collect();
    let ds = Arc::new(ImageDataset::new(paths, labels).expect("dataset"));
    let batches: Vec<Vec<usize>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(32)
        .map(<[usize]>::to_vec)
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("{n} JPEGs of 500x375 (q90), output 3x224x224 f32, {cores} core(s) available");
    for (name, pipeline) in [
        (
            "train: RandomResizedCrop 224 + flip",
            Pipeline::train(224, 0),
        ),
        (
            "eval: Resize 256 + CenterCrop 224",
            Pipeline::eval(256, 224),
        ),
    ] {
        for threads in [1, cores] {
            let cfg = LoaderConfig {
                threads,
                prefetch: 2,
                skip_bad: false,
            };
            let loader = ImageLoader::new(ds.clone(), pipeline, cfg).expect("loader");
            let mut best = f64::INFINITY;
            for epoch in 0..3 {
                let t = Instant::now();
                let mut count = 0;
                for b in loader.epoch(epoch, batches.clone()) {
                    count += b.expect("batch").indices.len();
                }
                assert_eq!(count, n);
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{name:<38} threads {threads:>2}: {:>8.1} images/s ({:.2} ms/image/thread)",
                n as f64 / best,
                best * 1e3 * threads as f64 / n as f64
            );
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
