//! Timing of one head training step on burn's flex CPU backend (f32, autodiff): batch 128 of
//! 2048-d features → Linear 2048→512 → L2-normalise → margin contrastive loss on the 128 × 128
//! cosine matrix (32 classes × 4) → backward → Adam update (simlearn's optimiser, the one the
//! trainer uses). The same step as `head_step` in `bench/contextual_torch.py` (PyTorch).
//!
//! ```sh
//! cargo bench -p simlearn --bench head_step -- --runs 30
//! ```
//! Prints one JSON line: `{"bench", "median_ms", "min_ms", "max_ms", "runs"}`.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use simlearn::losses::contrastive::ContrastiveConfig;
use simlearn::losses::ClassLoss;
use simlearn::models::HeadConfig;
use simlearn::train::optim::{Adam, OptimConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let device = Device::flex().autodiff();
    let cfg = HeadConfig {
        input_dim: 2048,
        output_dim: 512,
        ..HeadConfig::default()
    };
    let mut head = cfg.init(0, &device).expect("valid head");
    let loss = ContrastiveConfig::default().init().expect("valid loss");
    let mut opt = Adam::new(OptimConfig::default());
    let labels: Vec<i64> = (0..128).map(|i| (i / 4) as i64).collect();
    let x = Tensor::<2>::random([128, 2048], Distribution::Normal(0.0, 1.0), &device);
    let mut times = Vec::new();
    for i in 0..runs + 3 {
        let t = Instant::now();
        let out = loss
            .forward(head.forward(x.clone()), &labels)
            .expect("finite batch");
        // The trainer reads the loss every step (NaN guard, logging); so does this bench.
        let _ = out.total.clone().into_scalar::<f32>();
        let mut grads = out.total.backward();
        let mut g = GradientsParams::from_module(&mut grads, &head);
        head = opt.step(head, &mut g, 1e-4);
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{{\"bench\":\"head_step_128x2048_to_512_contrastive_adam\",\"backend\":\"flex\",\"runs\":{},\"median_ms\":{:.3},\"min_ms\":{:.3},\"max_ms\":{:.3}}}",
        times.len(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
