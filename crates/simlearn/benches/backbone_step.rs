//! Timing of one backbone training step and of one inference batch on burn's flex CPU backend
//! (f32), side by side with `bench/backbone_step_torch.py` (PyTorch, same shapes and threads).
//!
//! Training step: a random image batch (normalised scale, fixed seed) → backbone (random init,
//! BatchNorm with frozen running statistics and trained γ/β, the default policy) → average
//! pooling → margin contrastive loss on the cosine matrix (batch / 4 classes × 4) → backward →
//! Adam update of every backbone parameter (simlearn's optimiser, the one the trainer uses).
//! Inference: the same backbone on the plain (non-autodiff) device, the `simlearn embed` forward.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench -p simlearn --bench backbone_step -- --model resnet18 --runs 10
//! ```
//! `--model resnet18|resnet50|lite0|all` (default all), `--runs N` (default 10, after 2 warm-up
//! runs), `--threads T` (default 2: the size of the global rayon pool burn-flex computes on),
//! `--batch B` and `--size S` override the model's default shape (ResNet-18 32 × 224,
//! ResNet-50 16 × 224, Lite0 64 × 96), `--skip-train` / `--skip-infer`.
//! Prints one JSON line per model and mode: `{"bench", "model", "mode", "batch", "size",
//! "threads", "runs", "median_ms", "mean_ms", "min_ms", "max_ms"}`.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use simlearn::losses::contrastive::ContrastiveConfig;
use simlearn::losses::ClassLoss;
use simlearn::models::backbone::{Architecture, BackboneConfig};
use simlearn::train::optim::{Adam, OptimConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn stats(mut times: Vec<f64>) -> (f64, f64, f64, f64) {
    times.sort_by(|a, b| a.total_cmp(b));
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        0.5 * (times[n / 2 - 1] + times[n / 2])
    };
    let mean = times.iter().sum::<f64>() / n as f64;
    (median, mean, times[0], times[n - 1])
}

#[allow(clippy::too_many_arguments)]
fn report(model: &str, mode: &str, batch: usize, size: usize, threads: usize, times: Vec<f64>) {
    let runs = times.len();
    let (median, mean, min, max) = stats(times);
    println!(
        "{{\"bench\":\"backbone_step\",\"backend\":\"flex\",\"model\":\"{model}\",\"mode\":\"{mode}\",\"batch\":{batch},\"size\":{size},\"threads\":{threads},\"runs\":{runs},\"median_ms\":{median:.1},\"mean_ms\":{mean:.1},\"min_ms\":{min:.1},\"max_ms\":{max:.1}}}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs").unwrap_or(10).max(1);
    let threads: usize = arg(&args, "--threads").unwrap_or(2).max(1);
    let which: String = arg(&args, "--model").unwrap_or_else(|| "all".to_string());
    let skip_train = args.iter().any(|a| a == "--skip-train");
    let skip_infer = args.iter().any(|a| a == "--skip-infer");
    // burn-flex parallelises on rayon's global pool; fixing its size here pins the threads
    // whatever RAYON_NUM_THREADS says.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the global rayon pool is built once, before any tensor work");
    let models: Vec<(&str, Architecture, usize, usize)> = [
        ("resnet18", Architecture::Resnet18, 32, 224),
        ("resnet50", Architecture::Resnet50, 16, 224),
        ("lite0", Architecture::EfficientnetLite0, 64, 96),
    ]
    .into_iter()
    .filter(|(name, ..)| which == "all" || which == *name)
    .collect();
    if models.is_empty() {
        eprintln!("--model must be resnet18, resnet50, lite0 or all (got {which})");
        std::process::exit(2);
    }
    for (name, arch, default_batch, default_size) in models {
        let batch: usize = arg(&args, "--batch").unwrap_or(default_batch);
        let size: usize = arg(&args, "--size").unwrap_or(default_size);
        let cfg = BackboneConfig {
            arch,
            ..BackboneConfig::default()
        };
        if !skip_train {
            let device = Device::flex().autodiff();
            device.seed(0);
            let mut backbone = cfg.init(None, &device).expect("valid backbone");
            let loss = ContrastiveConfig::default().init().expect("valid loss");
            let mut opt = Adam::new(OptimConfig::default());
            let labels: Vec<i64> = (0..batch).map(|i| (i / 4) as i64).collect();
            let x = Tensor::<4>::random(
                [batch, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let mut times = Vec::with_capacity(runs);
            for i in 0..runs + 2 {
                let t = Instant::now();
                let out = loss
                    .forward(backbone.forward(x.clone()), &labels)
                    .expect("finite batch");
                // The trainer reads the loss every step (NaN guard, logging); so does this bench.
                let _ = out.total.clone().into_scalar::<f32>();
                let mut grads = out.total.backward();
                let mut g = GradientsParams::from_module(&mut grads, &backbone);
                backbone = opt.step(backbone, &mut g, 1e-5);
                if i >= 2 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            report(name, "train_step", batch, size, threads, times);
        }
        if !skip_infer {
            let device = Device::flex();
            let backbone = cfg
                .init(None, &device.clone().autodiff())
                .expect("valid backbone");
            let backbone = backbone.valid();
            let x = Tensor::<4>::random(
                [batch, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let mut times = Vec::with_capacity(runs);
            for i in 0..runs + 2 {
                let t = Instant::now();
                let y = backbone.forward(x.clone());
                let v = y.into_data();
                assert!(v.num_elements() > 0);
                if i >= 2 {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            report(name, "inference", batch, size, threads, times);
        }
    }
}
