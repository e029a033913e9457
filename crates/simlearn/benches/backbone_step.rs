//! Timing of one backbone training step and of one inference batch, on burn's flex CPU backend
//! (f32) by default or on a GPU device, side by side with `bench/backbone_step_torch.py`
//! (PyTorch CPU, same shapes and threads) and `bench/gpu_torch.py` (PyTorch CUDA).
//!
//! Training step: a random image batch (normalised scale, fixed seed) → backbone (random init,
//! BatchNorm with frozen running statistics and trained γ/β, the default policy) → average
//! pooling → loss (batch / 4 classes × 4) → backward → Adam update of every backbone parameter
//! (simlearn's optimiser, the one the trainer uses). The loss is read back every step, as the
//! trainer does; on a GPU device the step ends with `Device::sync`, so the clock stops after
//! the device has finished the update.
//! - `--loss contrastive` (default): margin contrastive loss on the cosine matrix
//!   (`ContrastiveConfig` defaults).
//! - `--loss contextual`: the contextual hybrid loss (`ContextualConfig` defaults, P256) with
//!   `--kernel fused` (default: host kernel, `S` read back from the device) or `--kernel graph`
//!   (burn tensor operations, stays on the device). The pooled features are first centred on the
//!   batch mean: a random-init backbone maps random images to nearly parallel features, and
//!   such a collapsed batch makes every neighbourhood the whole batch, where the fused kernel
//!   hands over to the graph form from batch 64 on. Centring gives sparse neighbourhoods, the
//!   regime of a trained network. Each line says whether the fused kernel would still fall
//!   back (`"fused_dense"`, measured once on the first warm-up batch).
//!
//! Inference: the same backbone on the plain (non-autodiff) device, the `simlearn embed` forward,
//! features read back to the host.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo bench -p simlearn --bench backbone_step -- --model resnet18 --runs 10
//! cargo bench -p simlearn --bench backbone_step --features wgpu -- --device wgpu \
//!     --model resnet50 --batch 64 --size 224 --loss contextual --kernel graph --skip-infer
//! ```
//! `--model resnet18|resnet50|lite0|all` (default all), `--runs N` (default 10) after
//! `--warmup W` warm-up runs (default 2; a GPU device compiles and autotunes its kernels in the
//! first ones), `--threads T` (default 2: the size of the global rayon pool burn-flex and the
//! fused kernel compute on), `--batch B` and `--size S` override the model's default shape
//! (ResNet-18 32 × 224, ResNet-50 16 × 224, Lite0 64 × 96), `--skip-train` / `--skip-infer`.
//! `--loss` and `--kernel` take comma-separated lists (`--loss contrastive,contextual --kernel
//! fused,graph` times three steps, each from a fresh backbone and optimiser, in one process so a
//! GPU device compiles its kernels once).
//! `--device flex|default|wgpu|cuda` (default flex): `default` is burn's default device of the
//! build (the wgpu or CUDA device when those features are on, else flex); `wgpu` needs
//! `--features wgpu` (burn's wgpu backend: Vulkan, Metal or DX12; Mesa's lavapipe runs it on a
//! CPU), `cuda` needs `--features cuda`; both pick the first/best adapter.
//! Prints one JSON line per model and mode: `{"bench", "backend", "device", "model", "mode",
//! "loss", "kernel", "batch", "size", "threads", "runs", "median_ms", "mean_ms", "min_ms",
//! "max_ms", "images_per_s"}` (`images_per_s` = batch / median; `loss` and `kernel` are `null`
//! for inference, `kernel` for the contrastive loss), plus `"fused_dense"` for the contextual
//! loss.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use simlearn::losses::contextual::{ContextualConfig, Kernel};
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

fn fail(message: &str) -> ! {
    eprintln!("backbone_step: {message}");
    std::process::exit(2)
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

/// What one JSON line describes besides its timings.
struct Line<'a> {
    device: &'a str,
    model: &'a str,
    mode: &'a str,
    loss: Option<&'a str>,
    kernel: Option<&'a str>,
    batch: usize,
    size: usize,
    threads: usize,
    fused_dense: Option<bool>,
}

fn json_str(v: Option<&str>) -> String {
    v.map_or_else(|| "null".to_string(), |s| format!("\"{s}\""))
}

fn report(line: &Line, times: Vec<f64>) {
    let runs = times.len();
    let (median, mean, min, max) = stats(times);
    let images_per_s = line.batch as f64 / (median / 1e3);
    let dense = line
        .fused_dense
        .map_or_else(String::new, |d| format!(",\"fused_dense\":{d}"));
    println!(
        "{{\"bench\":\"backbone_step\",\"backend\":\"{device}\",\"device\":\"{device}\",\"model\":\"{model}\",\"mode\":\"{mode}\",\"loss\":{loss},\"kernel\":{kernel},\"batch\":{batch},\"size\":{size},\"threads\":{threads},\"runs\":{runs},\"median_ms\":{median:.1},\"mean_ms\":{mean:.1},\"min_ms\":{min:.1},\"max_ms\":{max:.1},\"images_per_s\":{images_per_s:.2}{dense}}}",
        device = line.device,
        model = line.model,
        mode = line.mode,
        loss = json_str(line.loss),
        kernel = json_str(line.kernel),
        batch = line.batch,
        size = line.size,
        threads = line.threads,
    );
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Device {
    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Device {
    fail(
        "--device wgpu needs a build with the wgpu backend: \
         cargo bench -p simlearn --bench backbone_step --features wgpu",
    )
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Device {
    Device::cuda(0usize)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Device {
    fail(
        "--device cuda needs a build with the CUDA backend: \
         cargo bench -p simlearn --bench backbone_step --features cuda",
    )
}

/// The plain (non-autodiff) device named by `--device`.
fn base_device(name: &str) -> Device {
    match name {
        "flex" => Device::flex(),
        "default" => Device::default(),
        "wgpu" => wgpu_device(),
        "cuda" => cuda_device(),
        other => fail(&format!(
            "--device must be flex, default, wgpu or cuda (got {other})"
        )),
    }
}

/// Whether the fused contextual kernel would find these embeddings too dense and run the
/// graph form instead (its rule: batch ≥ 64 and the k-neighbourhood masks `A` cover more than
/// an eighth of all pairs; `A_ij = 1` where `D_ij ≤ d_k(i) + ε`, `D = max(0, 2 − 2S)`).
fn fused_dense(z: &[f32], n: usize, d: usize, k: usize, eps: f64) -> bool {
    let rows: Vec<Vec<f64>> = z
        .chunks(d)
        .map(|r| {
            let norm = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|&v| f64::from(v) / norm.max(1e-12)).collect()
        })
        .collect();
    let mut nnz = 0usize;
    for a in &rows {
        let dist: Vec<f64> = rows
            .iter()
            .map(|b| (2.0 - 2.0 * a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>()).max(0.0))
            .collect();
        let mut sorted = dist.clone();
        sorted.sort_by(|x, y| x.total_cmp(y));
        let d_k = sorted[k - 1];
        nnz += dist.iter().filter(|&&v| v <= d_k + eps).count();
    }
    n >= 64 && nnz * 8 > n * n
}

/// One timed training step: backbone, loss and optimiser on an autodiff device.
struct Step<'a> {
    cfg: &'a BackboneConfig,
    device: Device,
    loss: &'a str,
    kernel: Option<&'a str>,
    batch: usize,
    size: usize,
}

impl Step<'_> {
    /// Milliseconds of each of `runs` steps after `warmup` untimed ones, and for the contextual
    /// loss whether its first batch is dense enough for the fused kernel to fall back.
    fn time(&self, warmup: usize, runs: usize) -> (Vec<f64>, Option<bool>) {
        let (batch, size, device) = (self.batch, self.size, &self.device);
        let contextual = ContextualConfig {
            kernel: match self.kernel {
                Some("graph") => Kernel::Graph,
                _ => Kernel::Fused,
            },
            ..ContextualConfig::default()
        };
        let loss: Box<dyn ClassLoss> = match self.loss {
            "contextual" => Box::new(contextual.init().expect("valid loss")),
            _ => Box::new(ContrastiveConfig::default().init().expect("valid loss")),
        };
        let is_contextual = self.loss == "contextual";
        device.seed(0);
        let mut backbone = self.cfg.init(None, device).expect("valid backbone");
        let mut opt = Adam::new(OptimConfig::default());
        let labels: Vec<i64> = (0..batch).map(|i| (i / 4) as i64).collect();
        let x = Tensor::<4>::random(
            [batch, 3, size, size],
            Distribution::Normal(0.0, 1.0),
            device,
        );
        let mut dense = None;
        let mut times = Vec::with_capacity(runs);
        for i in 0..runs + warmup {
            let t = Instant::now();
            let mut z = backbone.forward(x.clone());
            if is_contextual {
                let mean = z.clone().mean_dim(0);
                z = z - mean;
                if dense.is_none() {
                    let [n, d] = z.dims();
                    let host = z.clone().detach().into_data().try_to_vec::<f32>();
                    let host = host.expect("f32 embeddings");
                    dense = Some(fused_dense(&host, n, d, contextual.k, contextual.eps));
                }
            }
            let out = loss.forward(z, &labels).expect("finite batch");
            // The trainer reads the loss every step (NaN guard, logging); so does this bench.
            let _ = out.total.clone().into_scalar::<f32>();
            let mut grads = out.total.backward();
            let mut g = GradientsParams::from_module(&mut grads, &backbone);
            backbone = opt.step(backbone, &mut g, 1e-5);
            // A GPU device runs the backward and the update asynchronously.
            device.sync().expect("the device ran the step");
            if i >= warmup {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        (times, dense)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = arg(&args, "--runs").unwrap_or(10).max(1);
    let warmup: usize = arg(&args, "--warmup").unwrap_or(2);
    let threads: usize = arg(&args, "--threads").unwrap_or(2).max(1);
    let which: String = arg(&args, "--model").unwrap_or_else(|| "all".to_string());
    let device_name: String = arg(&args, "--device").unwrap_or_else(|| "flex".to_string());
    let loss_list: String = arg(&args, "--loss").unwrap_or_else(|| "contrastive".to_string());
    let kernel_list: String = arg(&args, "--kernel").unwrap_or_else(|| "fused".to_string());
    let skip_train = args.iter().any(|a| a == "--skip-train");
    let skip_infer = args.iter().any(|a| a == "--skip-infer");
    // (loss, kernel) pairs to time, in the order given: the contrastive loss has no kernel, the
    // contextual one is timed with each kernel of `--kernel`.
    let mut losses: Vec<(&str, Option<&str>)> = Vec::new();
    for loss in loss_list.split(',') {
        match loss {
            "contrastive" => losses.push(("contrastive", None)),
            "contextual" => {
                for kernel in kernel_list.split(',') {
                    if !matches!(kernel, "fused" | "graph") {
                        fail(&format!("--kernel must be fused or graph (got {kernel})"));
                    }
                    losses.push(("contextual", Some(kernel)));
                }
            }
            other => fail(&format!(
                "--loss must be contrastive or contextual (got {other})"
            )),
        }
    }
    let base = base_device(&device_name);
    // burn-flex parallelises on rayon's global pool (so does the fused contextual kernel);
    // fixing its size here pins the threads whatever RAYON_NUM_THREADS says.
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
        fail(&format!(
            "--model must be resnet18, resnet50, lite0 or all (got {which})"
        ));
    }
    for (name, arch, default_batch, default_size) in models {
        let batch: usize = arg(&args, "--batch").unwrap_or(default_batch);
        let size: usize = arg(&args, "--size").unwrap_or(default_size);
        let cfg = BackboneConfig {
            arch,
            ..BackboneConfig::default()
        };
        for &(loss, kernel) in losses.iter().filter(|_| !skip_train) {
            let step = Step {
                cfg: &cfg,
                device: base.clone().autodiff(),
                loss,
                kernel,
                batch,
                size,
            };
            let (times, dense) = step.time(warmup, runs);
            let line = Line {
                device: &device_name,
                model: name,
                mode: "train_step",
                loss: Some(loss),
                kernel,
                batch,
                size,
                threads,
                fused_dense: dense,
            };
            report(&line, times);
        }
        if !skip_infer {
            let device = base.clone();
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
            for i in 0..runs + warmup {
                let t = Instant::now();
                let y = backbone.forward(x.clone());
                let v = y.into_data();
                assert!(v.num_elements() > 0);
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let line = Line {
                device: &device_name,
                model: name,
                mode: "inference",
                loss: None,
                kernel: None,
                batch,
                size,
                threads,
                fused_dense: None,
            };
            report(&line, times);
        }
    }
}
