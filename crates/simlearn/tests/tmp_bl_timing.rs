// Temporary timing probe (deleted after use).
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use simlearn::losses::registry::LossConfig;
use simlearn::losses::ClassLoss;
use std::time::Instant;

#[test]
fn timing() {
    let device = Device::flex().autodiff();
    let (n, d, c) = (128usize, 512usize, 32usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let values: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let labels: Vec<i64> = (0..n as i64).map(|i| i / 4).collect();
    for name in [
        "contrastive",
        "triplet",
        "multi_similarity",
        "ntxent",
        "supcon",
        "smooth_ap",
        "fastap",
        "proxy_nca",
        "proxy_anchor",
        "normalized_softmax",
    ] {
        let cfg: LossConfig = toml::from_str::<toml::Table>(&format!("name = \"{name}\""))
            .unwrap()
            .try_into()
            .unwrap();
        let loss = cfg.init(c, d, &device).unwrap();
        let mut times = Vec::new();
        for _ in 0..12 {
            let x = Tensor::<2>::from_data(TensorData::new(values.clone(), [n, d]), &device)
                .require_grad();
            let t = Instant::now();
            let out = loss.forward(x.clone(), &labels).unwrap().total;
            let g = out.backward();
            let _ = x.grad(&g).unwrap().into_data();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{{\"loss\":\"{name}\",\"n\":{n},\"d\":{d},\"median_ms\":{:.2}}}",
            times[6]
        );
    }
}
