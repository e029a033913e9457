#!/usr/bin/env python3
"""PIL + torchvision counterpart of `cargo bench -p simlearn --bench image_pipeline`, on the same JPEG files.

    IMAGES_DIR=/tmp/imgbench cargo bench -p simlearn --bench image_pipeline   # writes and keeps the JPEGs
    python bench/image_pipeline_torch.py /tmp/imgbench

One process, torch.set_num_threads(1), each image: PIL open + convert('RGB'), then
train: RandomResizedCrop(224, scale=(0.16, 1), ratio=(3/4, 4/3)) + RandomHorizontalFlip + ToTensor + Normalize(ImageNet)
eval:  Resize(256) + CenterCrop(224) + ToTensor + Normalize(ImageNet)
Best of 3 passes over all files; prints images/s per pipeline (one thread, like the Rust bench's "threads 1" rows).
"""
import sys, time
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms as T

torch.set_num_threads(1)
files = sorted(Path(sys.argv[1]).glob("*.jpg"))
norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
pipes = {
    "train: RandomResizedCrop 224 + flip": T.Compose([T.RandomResizedCrop(224, scale=(0.16, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(), norm]),
    "eval: Resize 256 + CenterCrop 224": T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]),
}
print(f"{len(files)} JPEGs, PIL {Image.__version__}, torch {torch.__version__}, 1 thread")
for name, tf in pipes.items():
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for f in files:
            x = tf(Image.open(f).convert("RGB"))
            assert x.shape == (3, 224, 224)
        best = min(best, time.perf_counter() - t)
    print(f"{name:<38} threads  1: {len(files) / best:8.1f} images/s ({best * 1e3 / len(files):.2f} ms/image)")
