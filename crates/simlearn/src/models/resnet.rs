//! ResNet-18 and ResNet-50 (He et al., CVPR 2016) with torchvision's layout and parameter
//! names, so torchvision `state_dict`s load without a conversion step.
//!
//! torchvision's v1.5 variant: the stride of a bottleneck block sits on its 3 × 3 convolution;
//! the shortcut is a 1 × 1 convolution + BatchNorm (`downsample.0`, `downsample.1`) whenever
//! the shape changes. BatchNorm eps 1e-5, momentum 0.1 (torchvision defaults). Convolutions are
//! initialised Kaiming-normal (fan-out, ReLU gain) as in torchvision; a pretrained file
//! overwrites every one of them.

use std::ops::Range;

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::backbone::{BackboneError, Pooling};

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetDepth {
    /// Four stages of two basic blocks (3 × 3, 3 × 3); 512-d features at width 64.
    R18,
    /// Stages of 3/4/6/3 bottleneck blocks (1 × 1, 3 × 3, 1 × 1, expansion 4); 2048-d features.
    R50,
}

impl ResNetDepth {
    fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R50 => [3, 4, 6, 3],
        }
    }

    fn expansion(self) -> usize {
        match self {
            ResNetDepth::R18 => 1,
            ResNetDepth::R50 => 4,
        }
    }
}

/// The shortcut projection (`downsample.0` conv, `downsample.1` BatchNorm in torchvision;
/// the loader maps those indices onto these field names).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

/// A basic block (`conv3`/`bn3` absent) or a bottleneck block.
#[derive(Module, Debug)]
pub struct Block {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Option<Conv2d>,
    bn3: Option<BatchNorm>,
    downsample: Option<Downsample>,
}

/// ResNet trunk, global pooling and an optional classifier (`fc`).
#[derive(Module, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    maxpool: MaxPool2d,
    layer1: Vec<Block>,
    layer2: Vec<Block>,
    layer3: Vec<Block>,
    layer4: Vec<Block>,
    fc: Option<Linear>,
    #[module(skip)]
    pooling: Pooling,
    #[module(skip)]
    feature_dim: usize,
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c)
        .with_epsilon(1e-5)
        .with_momentum(0.1)
        .init(device)
}

impl Block {
    fn new(depth: ResNetDepth, c_in: usize, planes: usize, stride: usize, device: &Device) -> Self {
        let out = planes * depth.expansion();
        let downsample = (stride != 1 || c_in != out).then(|| Downsample {
            conv: conv(c_in, out, 1, stride, device),
            bn: bn(out, device),
        });
        match depth {
            ResNetDepth::R18 => Block {
                conv1: conv(c_in, planes, 3, stride, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, 1, device),
                bn2: bn(planes, device),
                conv3: None,
                bn3: None,
                downsample,
            },
            ResNetDepth::R50 => Block {
                conv1: conv(c_in, planes, 1, 1, device),
                bn1: bn(planes, device),
                conv2: conv(planes, planes, 3, stride, device),
                bn2: bn(planes, device),
                conv3: Some(conv(planes, out, 1, 1, device)),
                bn3: Some(bn(out, device)),
                downsample,
            },
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(ds) => ds.bn.forward(ds.conv.forward(x.clone())),
            None => x.clone(),
        };
        let mut out = relu(self.bn1.forward(self.conv1.forward(x)));
        out = self.bn2.forward(self.conv2.forward(out));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            out = bn3.forward(conv3.forward(relu(out)));
        }
        relu(out + identity)
    }
}

impl ResNet {
    /// Builds a randomly initialised ResNet. `width` is the first stage's channel count
    /// (64 in every published ResNet; smaller values only make test fixtures small);
    /// `classes` adds the `fc` classifier.
    pub fn new(
        depth: ResNetDepth,
        width: usize,
        pooling: Pooling,
        classes: Option<usize>,
        device: &Device,
    ) -> Result<Self, BackboneError> {
        if width == 0 {
            return Err(BackboneError::Config(
                "resnet width must be positive".into(),
            ));
        }
        let mut c_in = width;
        let mut stages: Vec<Vec<Block>> = Vec::with_capacity(4);
        for (i, &n) in depth.blocks().iter().enumerate() {
            let planes = width << i;
            let stride = if i == 0 { 1 } else { 2 };
            let stage = (0..n)
                .map(|b| {
                    let block =
                        Block::new(depth, c_in, planes, if b == 0 { stride } else { 1 }, device);
                    c_in = planes * depth.expansion();
                    block
                })
                .collect();
            stages.push(stage);
        }
        let feature_dim = c_in;
        let [layer1, layer2, layer3, layer4]: [Vec<Block>; 4] =
            stages.try_into().expect("four stages");
        Ok(ResNet {
            conv1: Conv2dConfig::new([3, width], [7, 7])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .with_bias(false)
                .init(device),
            bn1: bn(width, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            fc: classes.map(|c| LinearConfig::new(feature_dim, c).init(device)),
            pooling,
            feature_dim,
        })
    }

    /// Stages of partial fine-tuning: the stem (`conv1`, `bn1`, max-pool) and `layer1`–`layer4`.
    pub const NUM_STAGES: usize = 5;

    /// Runs stages `stages` (0 = stem, 1–4 = `layer1`–`layer4`) on `x`, the output of the stage
    /// before `stages.start` (the image batch for 0).
    pub fn forward_stages(&self, mut x: Tensor<4>, stages: Range<usize>) -> Tensor<4> {
        assert!(
            stages.end <= Self::NUM_STAGES,
            "ResNet has {} stages",
            Self::NUM_STAGES
        );
        for s in stages {
            x = match s {
                0 => self
                    .maxpool
                    .forward(relu(self.bn1.forward(self.conv1.forward(x)))),
                _ => {
                    let layer = [&self.layer1, &self.layer2, &self.layer3, &self.layer4][s - 1];
                    layer.iter().fold(x, |x, block| block.forward(x))
                }
            };
        }
        x
    }

    /// The last stage's feature map, `n × C × h/32 × w/32`.
    pub fn forward_map(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_stages(x, 0..Self::NUM_STAGES)
    }

    /// Global pooling of a last-stage feature map.
    pub fn pool(&self, map: Tensor<4>) -> Tensor<2> {
        self.pooling.pool(map)
    }

    /// Pooled features, `n × feature_dim`.
    pub fn forward_features(&self, x: Tensor<4>) -> Tensor<2> {
        self.pooling.pool(self.forward_map(x))
    }

    /// Classifier logits (`None` without an `fc` layer).
    pub fn forward_logits(&self, x: Tensor<4>) -> Option<Tensor<2>> {
        let fc = self.fc.as_ref()?;
        Some(fc.forward(self.forward_features(x)))
    }

    /// Dimension of the pooled features.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Drops the classifier (embedding models do not use it).
    pub fn without_classifier(mut self) -> Self {
        self.fc = None;
        self
    }

    pub(crate) fn batch_norms_mut(&mut self) -> Vec<&mut BatchNorm> {
        let mut out = vec![&mut self.bn1];
        for block in self
            .layer1
            .iter_mut()
            .chain(self.layer2.iter_mut())
            .chain(self.layer3.iter_mut())
            .chain(self.layer4.iter_mut())
        {
            out.push(&mut block.bn1);
            out.push(&mut block.bn2);
            if let Some(bn3) = block.bn3.as_mut() {
                out.push(bn3);
            }
            if let Some(ds) = block.downsample.as_mut() {
                out.push(&mut ds.bn);
            }
        }
        out
    }
}
