//! Embedding models: heads on precomputed features with an L2-normalised output.
//!
//! The head is what the contextual-similarity paper calls `remap` (Linear 2048→512 with bias on
//! ResNet-50 features, PyTorch default init, then L2 normalisation; optionally preceded by a
//! LayerNorm without affine parameters, the "standardize" step of its CUB/Cars network).
//!
//! Image backbones (ResNet-18/50, EfficientNet-Lite0) with pretrained-weight loading live in
//! [`backbone`].

pub mod backbone;
pub mod efficientnet;
pub mod resnet;

pub use backbone::{Backbone, BackboneConfig, BackboneError, Pooling};

use burn::module::Param;
use burn::nn::{Linear, Relu};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Configuration of an [`EmbeddingHead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Input feature dimension (set from the data when 0).
    pub input_dim: usize,
    /// Hidden layer widths; empty means a single linear layer (the paper's head).
    pub hidden: Vec<usize>,
    /// Embedding dimension. Default 512, the dimension of every result in the contextual paper.
    pub output_dim: usize,
    /// LayerNorm without affine parameters on the input (the paper's CUB/Cars "standardize").
    pub standardize: bool,
    /// L2-normalise the output (default true: cosine retrieval).
    pub normalize: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            input_dim: 0,
            hidden: Vec::new(),
            output_dim: 512,
            standardize: false,
            normalize: true,
        }
    }
}

/// Linear or MLP head with ReLU between layers and an optionally L2-normalised output.
#[derive(Module, Debug)]
pub struct EmbeddingHead {
    layers: Vec<Linear>,
    activation: Relu,
    #[module(skip)]
    standardize: bool,
    #[module(skip)]
    normalize: bool,
}

impl HeadConfig {
    /// Builds the head with PyTorch's default `nn.Linear` initialisation,
    /// `U(−1/√fan_in, 1/√fan_in)` for weights and biases, drawn from a ChaCha8 stream seeded
    /// with `seed` so that the same seed gives the same head on every platform.
    pub fn init(&self, seed: u64, device: &Device) -> Result<EmbeddingHead, String> {
        if self.input_dim == 0 || self.output_dim == 0 || self.hidden.contains(&0) {
            return Err(format!(
                "model: every layer width must be positive (input_dim {}, hidden {:?}, output_dim {})",
                self.input_dim, self.hidden, self.output_dim
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut dims = vec![self.input_dim];
        dims.extend(&self.hidden);
        dims.push(self.output_dim);
        let layers = dims
            .windows(2)
            .map(|w| linear_pytorch_init(w[0], w[1], &mut rng, device))
            .collect();
        Ok(EmbeddingHead {
            layers,
            standardize: self.standardize,
            activation: Relu::new(),
            normalize: self.normalize,
        })
    }
}

fn linear_pytorch_init(d_in: usize, d_out: usize, rng: &mut ChaCha8Rng, device: &Device) -> Linear {
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-bound..bound)).collect() };
    let weight = Tensor::<2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let bias = Tensor::<1>::from_data(TensorData::new(draw(d_out), [d_out]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

impl EmbeddingHead {
    /// Embeds a batch of features: `n × input_dim` → `n × output_dim`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = if self.standardize {
            // LayerNorm without affine parameters (PyTorch `elementwise_affine=False`, eps 1e-5).
            let (var, mean) = x.clone().var_mean_bias(1);
            (x - mean) / (var + 1e-5).sqrt()
        } else {
            x
        };
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = self.activation.forward(x);
            }
        }
        if self.normalize {
            crate::distances::l2_normalize(x, crate::distances::NORMALIZE_EPS)
        } else {
            x
        }
    }

    /// Embedding dimension.
    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.weight.lazy_shape()[1])
    }
}
