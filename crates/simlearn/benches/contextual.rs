//! Timing of the contextual hybrid loss (forward + backward) on burn's flex CPU backend with
//! autodiff, f32, at batch sizes n = 128, 256, 512 and embedding width d = 512.
//!
//! Input: a leaf `n × 512` tensor of Gaussian raw embeddings (the loss L2-normalises them),
//! labels `n/4` classes × 4 (the authors' 4 samples per class), default configuration (P256:
//! k 4, ε 0.05, gain 10, λ 0.4, γ 0.1). Each measurement covers the forward pass, the backward
//! pass and reading one gradient entry back (the backend is eager, so this only guards against
//! lazy work). Runs: `--runs N` (default 20, at least 20 are recommended) after 3 warm-up runs.
//! `--n 128,256` picks batch sizes; `--kernel graph` times the tensor-graph form instead of the
//! default fused kernel.
//!
//! Prints one JSON line per (n, measurement): `{"bench", "backend", "kernel", "n", "d", "runs",
//! "median_ms", "min_ms", "max_ms"}`.
//!
//! ```sh
//! cargo bench -p simlearn --bench contextual -- --runs 30
//! cargo bench -p simlearn --bench contextual -- --runs 30 --kernel graph
//! ```

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use simlearn::losses::contextual::{ContextualConfig, Kernel};
use simlearn::losses::ClassLoss;

const D: usize = 512;
const WARMUP: usize = 3;

fn parse_runs() -> usize {
    arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// The value after `flag` on the command line, if any.
fn arg(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// Batch sizes: `--n 128,256` or the issue's 128, 256, 512.
fn parse_sizes() -> Vec<usize> {
    arg("--n")
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![128, 256, 512])
}

fn summary(name: &str, kernel: &str, n: usize, mut times_ms: Vec<f64>) {
    times_ms.sort_by(|a, b| a.total_cmp(b));
    let runs = times_ms.len();
    let median = if runs % 2 == 1 {
        times_ms[runs / 2]
    } else {
        0.5 * (times_ms[runs / 2 - 1] + times_ms[runs / 2])
    };
    println!(
        "{{\"bench\":\"{name}\",\"backend\":\"flex-cpu-autodiff-f32\",\"kernel\":\"{kernel}\",\
         \"n\":{n},\"d\":{D},\
         \"runs\":{runs},\"median_ms\":{median:.3},\"min_ms\":{:.3},\"max_ms\":{:.3}}}",
        times_ms[0],
        times_ms[runs - 1]
    );
}

fn main() {
    let runs = parse_runs().max(1);
    let device = Device::flex().autodiff();
    let kernel_name = arg("--kernel").unwrap_or_else(|| "fused".into());
    let kernel = match kernel_name.as_str() {
        "fused" => Kernel::Fused,
        "graph" => Kernel::Graph,
        other => panic!("--kernel {other}: expected fused or graph"),
    };
    let loss = ContextualConfig {
        kernel,
        ..ContextualConfig::default()
    }
    .init()
    .expect("default contextual config is valid");
    for n in parse_sizes() {
        let labels: Vec<i64> = (0..n).map(|i| (i / 4) as i64).collect();
        let mut fwd_bwd = Vec::with_capacity(runs);
        let mut fwd = Vec::with_capacity(runs);
        for run in 0..WARMUP + runs {
            let z =
                Tensor::<2>::random([n, D], Distribution::Normal(0.0, 1.0), &device).require_grad();

            let start = Instant::now();
            let out = loss.forward(z.clone(), &labels).expect("valid batch");
            let _ = out.total.clone().into_scalar::<f32>();
            let forward_ms = start.elapsed().as_secs_f64() * 1e3;

            let start = Instant::now();
            let out = loss.forward(z.clone(), &labels).expect("valid batch");
            let grads = out.total.backward();
            let g = z.grad(&grads).expect("gradient of the embeddings");
            let _ = g.narrow(0, 0, 1).narrow(1, 0, 1).into_scalar::<f32>();
            let total_ms = start.elapsed().as_secs_f64() * 1e3;

            if run >= WARMUP {
                fwd.push(forward_ms);
                fwd_bwd.push(total_ms);
            }
        }
        summary("contextual_fwd_bwd", &kernel_name, n, fwd_bwd);
        summary("contextual_fwd", &kernel_name, n, fwd);
    }
}
