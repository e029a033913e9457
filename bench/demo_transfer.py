#!/usr/bin/env python3
"""Research script for `simlearn demo` (issue #3): which training recipe makes heads trained on
digits 0-4 transfer to the unseen classes 5-9 (MAP@R, leave-one-out, cosine)?

Mirrors the demo: train = alternate half of classes 0-4 (452 images), (a) = the other half
(validation), (b) = classes 5-9 (896 images). Heads, losses (contextual hybrid from
bench/contextual_torch.py, margin contrastive 0.9/0.6), the m-per-class sampler (80 = 5 x 16,
11 batches an epoch) and Adam with coupled weight decay 1e-4 follow the Rust configs. Variants add
label-preserving augmentation of the 8 x 8 images (random affine + stroke thickness), other heads
and other schedules. This script looks at (b) for every variant: it is for choosing a recipe,
the shipped demo selects checkpoints on (a) only.

Usage: /opt/tvenv/bin/python bench/demo_transfer.py --recipe NAME [NAME ...] [--seeds 0 1 2]
       [--loss contextual contrastive] [--set '{"epochs": 60}']

Measured (b) MAP@R, mean over seeds 0-2 unless noted (PyTorch init; untrained head 0.53-0.556,
pixels 0.606), contextual / contrastive, checkpoint picked on (a):

  base (plain 5 classes, 10 epochs, the old demo)          0.286 / 0.365
  aug (affine jitter) / augt (+ stroke thickness)          0.363 / 0.485, 0.394 / 0.464
  augt, 30 epochs / hidden 1024 + dropout 0.3               0.312 / 0.474, 0.291 (ctx)
  residual head near identity (untrained = pixels 0.606)    0.324 / 0.483; + augt 0.420 / 0.495
  + standardize                                             0.436 / 0.498
  linear head + augt                                        0.499 / 0.467
  augt + m- 0.3 / m+ 0.5 / weight decay 1e-2                0.292 / 0.419, 0.314 / 0.552, 0.290 / 0.440
  contrastive m+/m- 0.5/0.3, 0.4/0.2, 0.6/0.4 (augt)        0.488, 0.497, 0.497
  residual + contrastive m+ 0.5 + augt                      0.591 (contrastive; below its untrained 0.606)
  contextual lambda 0.2, k 2, lr 3e-4 / 10 epochs           0.413, 0.311, 0.472
  instance classes (4 jittered views of each image)         0.557 / 0.521; m+ 0.5: 0.553 / 0.536
  instance, residual head                                   0.582 / 0.571 (untrained 0.606)
  k-means sub-classes (10 per class) + augt                 0.537 / 0.513
  rotations as classes (20) / dihedral classes (40)         0.465 / 0.427, 0.510 / 0.532
  dihedral + augt, 7 fixed copies, 30 ep (seeds 0-4)        0.553 / 0.559
  same, 60 epochs (seeds 0-4)                               0.558 / 0.583
  same, 5 classes x 4 a batch (seeds 0-4)                   0.572 / 0.317;  5 x 16: 0.529 / 0.431
  + 40 fixed (a, b, cut) chimeras of the 5 classes          0.576 / 0.599
  + 600 chimeras of the 40 dihedral classes (shipped)       0.584 / 0.616
  diagnostic: instance classes trained on 5-9 themselves    0.606-0.639 (so jitter invariance is weak)

The shipped Rust demo (dihedral + 600 chimeras + 3 jittered copies, 20 classes x 4 a batch,
contextual 100 epochs, contrastive 60) is measured with the binary in the README.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as fn

sys.path.insert(0, os.path.dirname(__file__))
from contextual_torch import contextual_terms  # noqa: E402

torch.set_num_threads(1)
ROOT = os.path.join(os.path.dirname(__file__), "..")


def load_digits():
    with gzip.open(os.path.join(ROOT, "crates/simlearn/data/digits.csv.gz"), "rt") as f:
        rows = [list(map(float, l.split(","))) for l in f if l.strip()]
    a = np.array(rows, dtype=np.float32)
    return a[:, :64] / 16.0, a[:, 64].astype(np.int64)


def splits():
    x, y = load_digits()
    seen = np.where(y < 5)[0]
    unseen = np.where(y >= 5)[0]
    cnt = {}
    tr, va = [], []
    for i in seen:
        c = cnt.get(y[i], 0)
        (tr if c % 2 == 0 else va).append(i)
        cnt[y[i]] = c + 1
    t = lambda idx: (torch.tensor(x[idx]), torch.tensor(y[idx]))
    return t(np.array(tr)), t(np.array(va)), t(unseen)


def map_at_r(emb: torch.Tensor, y: torch.Tensor) -> float:
    e = fn.normalize(emb, dim=1)
    s = e @ e.T
    s.fill_diagonal_(-float("inf"))
    n = len(y)
    order = s.argsort(dim=1, descending=True)
    rel = (y[order] == y[:, None]).float()
    r = (y[None, :] == y[:, None]).sum(1) - 1
    tot = 0.0
    for i in range(n):
        ri = int(r[i])
        rr = rel[i, :ri]
        prec = rr.cumsum(0) / torch.arange(1, ri + 1)
        tot += float((prec * rr).sum() / ri)
    return tot / n


# ----------------------------------------------------------------------------------------------
# augmentation


def augment(x: torch.Tensor, g: torch.Generator, cfg: dict) -> torch.Tensor:
    """Random affine (rotation, scale, shear, shift) by bilinear sampling, zero background, then
    optionally stroke thickening / thinning. x: n x 64 in [0, 1]."""
    n = x.shape[0]
    img = x.view(n, 1, 8, 8)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)
    rot = u(-cfg["rot"], cfg["rot"]) * math.pi / 180
    sc = u(1 - cfg["scale"], 1 + cfg["scale"])
    sh = u(-cfg["shear"], cfg["shear"])
    tx = u(-cfg["shift"], cfg["shift"]) * 2 / 8  # pixels -> normalised coords
    ty = u(-cfg["shift"], cfg["shift"]) * 2 / 8
    c, s = torch.cos(rot), torch.sin(rot)
    # output -> input coordinates: inverse of (rotation * shear * scale)
    a11 = c / sc
    a12 = (s + c * sh) / sc
    a21 = -s / sc
    a22 = (c - s * sh) / sc
    theta = torch.stack([torch.stack([a11, a12, tx], 1), torch.stack([a21, a22, ty], 1)], 1)
    grid = fn.affine_grid(theta, (n, 1, 8, 8), align_corners=False)
    out = fn.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.get("thick", 0) > 0:
        p = torch.rand(n, generator=g)
        dil = fn.max_pool2d(fn.pad(out, (0, 1, 0, 1)), 2, stride=1)
        ero = -fn.max_pool2d(fn.pad(-out, (0, 1, 0, 1), value=-1), 2, stride=1)
        w = torch.rand(n, generator=g)[:, None, None, None] * cfg["thick"]
        thick = p[:, None, None, None] < 1 / 3
        thin = (p[:, None, None, None] >= 1 / 3) & (p[:, None, None, None] < 2 / 3)
        out = torch.where(thick, out + w * (dil - out), out)
        out = torch.where(thin, out + w * (ero - out), out)
    return out.reshape(n, 64).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# heads and losses


class Head(nn.Module):
    def __init__(self, hidden, out_dim, dropout=0.0, residual=False, standardize=False):
        super().__init__()
        dims = [64] + hidden + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropout = dropout
        self.residual = residual
        self.standardize = standardize
        if residual:
            assert out_dim == 64
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)

    def forward(self, x):
        if self.standardize:
            x = (x - x.mean(1, keepdim=True)) / (x.var(1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        h = x
        for i, l in enumerate(self.layers):
            h = l(h)
            if i < len(self.layers) - 1:
                h = torch.relu(h)
                if self.dropout > 0:
                    h = fn.dropout(h, self.dropout, self.training)
        if self.residual:
            h = x + h
        return fn.normalize(h, dim=1)


def contrastive(s, same, m_pos, m_neg):
    lp = torch.relu(m_pos - s) * same
    ln = torch.relu(s - m_neg) * (1.0 - same)
    cp = (lp > 0).sum().clamp(min=1).to(s.dtype)
    cn = (ln > 0).sum().clamp(min=1).to(s.dtype)
    return lp.sum() / cp + ln.sum() / cn


def loss_fn(name, z, y, cfg):
    same = (y[:, None] == y[None, :]).to(z.dtype)
    s = z @ z.T
    if name == "contrastive":
        return contrastive(s, same, cfg.get("m_pos", 0.9), cfg.get("m_neg", 0.6))
    l_ctx, _ = contextual_terms(s, same, k=cfg.get("k", 4), eps=0.05)
    l_con = contrastive(s, same, cfg.get("hm_pos", 0.75), cfg.get("hm_neg", 0.6))
    l_reg = (s.mean() - 0.25) ** 2
    lam, gam = cfg.get("lam", 0.4), cfg.get("gam", 0.1)
    return lam * l_ctx + gam * l_reg + (1 - lam - gam) * l_con


def batches(y: torch.Tensor, g: torch.Generator, per_class=16, n_batches=11, bs=80):
    classes_per_batch = bs // per_class
    cls = sorted(set(y.tolist()))
    idx = {c: torch.where(y == c)[0] for c in cls}
    out = []
    for _ in range(n_batches):
        chosen = [cls[i] for i in torch.randperm(len(cls), generator=g)[:classes_per_batch].tolist()]
        b = []
        for c in chosen:
            p = idx[c][torch.randperm(len(idx[c]), generator=g)[:per_class]]
            b.append(p)
        out.append(torch.cat(b))
    return out


def subclasses(x, y, per_class, seed):
    """k-means (Lloyd, 20 iterations, seeded) inside each class: labels class * per_class + cluster."""
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(y)
    for c in sorted(set(y.tolist())):
        idx = torch.where(y == c)[0]
        xc = x[idx]
        cent = xc[torch.randperm(len(idx), generator=g)[:per_class]].clone()
        for _ in range(20):
            a = torch.cdist(xc, cent).argmin(1)
            for j in range(per_class):
                if (a == j).any():
                    cent[j] = xc[a == j].mean(0)
        out[idx] = c * per_class + torch.cdist(xc, cent).argmin(1)
    return out


def d4(x: torch.Tensor, t: int) -> torch.Tensor:
    """Element t (0..7) of the dihedral group of the square applied to n x 64 images."""
    img = x.view(-1, 8, 8)
    if t >= 4:
        img = img.transpose(1, 2)
    img = torch.rot90(img, t % 4, dims=(1, 2))
    return img.reshape(-1, 64)


def new_classes(x, y, transforms):
    """Every (class, transform) pair becomes a class of its own (the Omniglot rotation trick)."""
    xs, ys = [], []
    for j, t in enumerate(transforms):
        xs.append(d4(x, t))
        ys.append(y * len(transforms) + j)
    return torch.cat(xs), torch.cat(ys)


def chimeras(x, y, per_class, seed):
    """Top half of a class-a image over the bottom half of a class-b image (and left / right):
    classes (a, b, orientation); a == b keeps the class a."""
    g = torch.Generator().manual_seed(2000 + seed)
    cls = sorted(set(y.tolist()))
    idx = {c: torch.where(y == c)[0] for c in cls}
    xs, ys = [x], [y.clone()]
    nxt = max(cls) + 1
    for o in range(2):
        for a in cls:
            for b in cls:
                if a == b:
                    continue
                ia = idx[a][torch.randint(len(idx[a]), (per_class,), generator=g)]
                ib = idx[b][torch.randint(len(idx[b]), (per_class,), generator=g)]
                A, B = x[ia].view(-1, 8, 8), x[ib].view(-1, 8, 8)
                m = torch.zeros(8, 8)
                if o == 0:
                    m[:4] = 1
                else:
                    m[:, :4] = 1
                xs.append((A * m + B * (1 - m)).reshape(-1, 64))
                ys.append(torch.full((per_class,), nxt))
                nxt += 1
    return torch.cat(xs), torch.cat(ys)


def chimeras_random(x, y, n_pairs, per_class, seed):
    """n_pairs random (a, b, orientation) chimera classes over the classes of y (a != b)."""
    g = torch.Generator().manual_seed(3000 + seed)
    cls = sorted(set(y.tolist()))
    idx = {c: torch.where(y == c)[0] for c in cls}
    xs, ys = [x], [y.clone()]
    nxt = max(cls) + 1
    seen = set()
    while len(seen) < n_pairs:
        a, b = [cls[i] for i in torch.randint(len(cls), (2,), generator=g).tolist()]
        o = int(torch.randint(2, (1,), generator=g))
        if a == b or (a, b, o) in seen:
            continue
        seen.add((a, b, o))
        ia = idx[a][torch.randint(len(idx[a]), (per_class,), generator=g)]
        ib = idx[b][torch.randint(len(idx[b]), (per_class,), generator=g)]
        A, B = x[ia].view(-1, 8, 8), x[ib].view(-1, 8, 8)
        m = torch.zeros(8, 8)
        if o == 0:
            m[:4] = 1
        else:
            m[:, :4] = 1
        xs.append((A * m + B * (1 - m)).reshape(-1, 64))
        ys.append(torch.full((per_class,), nxt))
        nxt += 1
    return torch.cat(xs), torch.cat(ys)


def run(recipe: dict, loss_name: str, seed: int, data):
    (xtr, ytr), (xva, yva), (xun, yun) = data
    if recipe.get("chimera"):
        xtr, ytr = chimeras(xtr, ytr, recipe["chimera"], seed)
    if recipe.get("d4"):
        xtr, ytr = new_classes(xtr, ytr, recipe["d4"])
    if recipe.get("chim2"):
        xtr, ytr = chimeras_random(xtr, ytr, recipe["chim2"][0], recipe["chim2"][1], seed)
    if recipe.get("offline"):
        # fixed pool: the originals plus `offline` augmented copies of each, drawn once
        g0 = torch.Generator().manual_seed(1000 + seed)
        copies = [augment(xtr, g0, recipe["aug"]) for _ in range(recipe["offline"])]
        xtr = torch.cat([xtr] + copies)
        ytr = ytr.repeat(recipe["offline"] + 1)
        recipe = dict(recipe, aug=None)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    head = Head(recipe.get("hidden", [256]), recipe.get("dim", 64), recipe.get("dropout", 0.0),
                recipe.get("residual", False), recipe.get("standardize", False))
    head.eval()
    with torch.no_grad():
        before = (map_at_r(head(xva), yva), map_at_r(head(xun), yun))
    opt = torch.optim.Adam(head.parameters(), lr=recipe.get("lr", 1e-3), weight_decay=recipe.get("wd", 1e-4))
    epochs = recipe.get("epochs", 10)
    eval_every = recipe.get("eval_every", 5)
    aug = recipe.get("aug")
    per_class = recipe.get("per_class", 16)
    nb = recipe.get("batches", 11)
    best = (-1, None, None)
    hist = []
    sub = subclasses(xtr, ytr, recipe["sub"], seed) if recipe.get("sub") else None
    for ep in range(epochs):
        head.train()
        for b in batches(ytr, g, per_class, nb, recipe.get("bs", 80)):
            yb = ytr[b]
            if recipe.get("instance"):
                # instance discrimination: `views` augmented views of batch/views images
                views = recipe["instance"]
                inst = torch.randperm(len(ytr), generator=g)[: recipe.get("bs", 80) // views]
                b = inst.repeat_interleave(views)
                yb = b
            elif recipe.get("sub"):
                yb = sub[b]
            xb = xtr[b]
            if aug:
                xb = augment(xb, g, aug)
            loss = loss_fn(loss_name, head(xb), yb, recipe)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if (ep + 1) % eval_every == 0 or ep + 1 == epochs:
            head.eval()
            with torch.no_grad():
                va = map_at_r(head(xva), yva)
                un = map_at_r(head(xun), yun)
            hist.append((ep + 1, round(va, 3), round(un, 3)))
            if va > best[0]:
                best = (va, un, ep + 1)
    return {"before": [round(v, 3) for v in before], "val": round(best[0], 3), "unseen": round(best[1], 3),
            "epoch": best[2], "hist": hist}


AUG = {"rot": 15, "scale": 0.1, "shear": 0.2, "shift": 1.0, "thick": 0.0}
AUGT = dict(AUG, thick=1.0)
RECIPES = {
    "d4_chim2": {"d4": list(range(8)), "chim2": [600, 24], "epochs": 60, "eval_every": 10, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 3},
    "d4_chim2_bs20": {"d4": list(range(8)), "chim2": [600, 24], "epochs": 60, "eval_every": 10, "per_class": 4, "bs": 20, "batches": 60, "aug": AUGT, "offline": 3},
    "chim_d4off_bs20": {"chimera": 90, "d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 4, "bs": 20, "batches": 60, "aug": AUGT, "offline": 3},
    "chim_d4off_e120": {"chimera": 90, "d4": list(range(8)), "epochs": 120, "eval_every": 20, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 3},
    "chim_d4off": {"chimera": 90, "d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 3},
    "chim_off": {"chimera": 90, "epochs": 60, "eval_every": 10, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 7},
    "d4off_e60_pc16": {"d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 16, "batches": 30, "aug": AUGT, "offline": 7},
    "d4off_e60_bs20": {"d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 4, "bs": 20, "batches": 60, "aug": AUGT, "offline": 7},
    "d4off_e60": {"d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 7},
    "d4off_e60_pc8": {"d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 8, "batches": 30, "aug": AUGT, "offline": 7},
    "d4off_e60_lr3e4": {"d4": list(range(8)), "epochs": 60, "eval_every": 10, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 7, "lr": 3e-4},
    "d4off": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 7},
    "d4off_m5": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30, "aug": AUGT, "offline": 7, "hm_pos": 0.5, "m_pos": 0.5},
    "ctx_aug_k2_hm5": {"aug": AUGT, "epochs": 30, "k": 2, "hm_pos": 0.5},
    "ctx_aug_hm5_e10": {"aug": AUGT, "epochs": 10, "hm_pos": 0.5, "eval_every": 2},
    "d4aug_m5": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30, "aug": AUGT, "hm_pos": 0.5, "m_pos": 0.5},
    "inst4_bs160": {"aug": AUGT, "instance": 4, "epochs": 30, "bs": 160},
    "inst4_big": {"aug": dict(AUGT, rot=20, scale=0.15, shear=0.3), "instance": 4, "epochs": 30},
    "inst4_noth": {"aug": AUG, "instance": 4, "epochs": 30},
    "inst4_lr3e4": {"aug": AUGT, "instance": 4, "epochs": 30, "lr": 3e-4},
    "ctx_aug_e10_lr3e4": {"aug": AUGT, "epochs": 10, "lr": 3e-4, "eval_every": 2},
    "ctx_aug_lam2": {"aug": AUGT, "epochs": 30, "lam": 0.2, "hm_pos": 0.5},
    "ctx_d4aug_hm5": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30, "aug": AUGT, "hm_pos": 0.5},
    "ctx_aug_wide": {"aug": AUGT, "epochs": 30, "hidden": [1024], "dim": 128, "dropout": 0.5},
    "inst4_m5": {"aug": AUGT, "instance": 4, "epochs": 30, "m_pos": 0.5, "hm_pos": 0.5},
    "d4": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30},
    "d4_aug": {"d4": list(range(8)), "epochs": 30, "per_class": 4, "batches": 30, "aug": AUGT},
    "d4_8": {"d4": list(range(8)), "epochs": 30, "per_class": 8, "batches": 30},
    "rot4": {"d4": [0, 1, 2, 3], "epochs": 30, "per_class": 4, "batches": 30},
    "c_55_30": {"aug": AUGT, "epochs": 30, "m_pos": 0.5, "m_neg": 0.3},
    "c_40_20": {"aug": AUGT, "epochs": 30, "m_pos": 0.4, "m_neg": 0.2},
    "c_60_40": {"aug": AUGT, "epochs": 30, "m_pos": 0.6, "m_neg": 0.4},
    "c_50_60_noaug": {"epochs": 30, "m_pos": 0.5},
    "inst8": {"aug": AUGT, "instance": 8, "epochs": 30},
    "inst2": {"aug": AUGT, "instance": 2, "epochs": 30, "k": 2},
    "inst4_res": {"aug": AUGT, "instance": 4, "epochs": 30, "residual": True},
    "inst4": {"aug": AUGT, "instance": 4, "epochs": 30},
    "inst4_e60": {"aug": AUGT, "instance": 4, "epochs": 60, "eval_every": 10},
    "sub10": {"aug": AUGT, "sub": 10, "epochs": 30},
    "augt_mpos5": {"aug": AUGT, "epochs": 30, "m_pos": 0.5, "hm_pos": 0.5},
    "augt_wd1e2": {"aug": AUGT, "epochs": 30, "wd": 1e-2},
    "base": {},
    "aug": {"aug": AUG},
    "augt": {"aug": AUGT},
    "augt_e30": {"aug": AUGT, "epochs": 30},
    "augt_e60": {"aug": AUGT, "epochs": 60, "eval_every": 10},
    "augt_1024_do": {"aug": AUGT, "hidden": [1024], "dropout": 0.3, "epochs": 30},
    "res": {"residual": True, "dim": 64, "hidden": [256]},
    "res_augt": {"residual": True, "dim": 64, "hidden": [256], "aug": AUGT, "epochs": 30},
    "res_std_augt": {"residual": True, "standardize": True, "dim": 64, "hidden": [256], "aug": AUGT, "epochs": 30},
    "lin": {"hidden": []},
    "lin_augt": {"hidden": [], "aug": AUGT, "epochs": 30},
    "augt_lr3e4": {"aug": AUGT, "epochs": 30, "lr": 3e-4},
    "augt_mneg3": {"aug": AUGT, "epochs": 30, "m_neg": 0.3, "hm_neg": 0.3},
    "augt_d128": {"aug": AUGT, "epochs": 30, "dim": 128, "hidden": [512]},
    "augt_big": {"aug": dict(AUGT, rot=20, scale=0.15, shear=0.3, shift=1.0), "epochs": 30},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", nargs="+", default=["base"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--loss", nargs="+", default=["contextual", "contrastive"])
    ap.add_argument("--set", default="{}", help="JSON overrides merged into the recipe")
    args = ap.parse_args()
    data = splits()
    with torch.no_grad():
        print("pixels (b)", round(map_at_r(data[2][0], data[2][1]), 3), "(a)", round(map_at_r(data[1][0], data[1][1]), 3))
    for rn in args.recipe:
        recipe = dict(RECIPES[rn], **json.loads(args.set))
        for ln in args.loss:
            t = time.time()
            res = [run(recipe, ln, s, data) for s in args.seeds]
            un = [r["unseen"] for r in res]
            print(json.dumps({"recipe": rn, "loss": ln, "unseen_mean": round(float(np.mean(un)), 3),
                              "unseen": un, "val": [r["val"] for r in res], "before_unseen": [r["before"][1] for r in res],
                              "epoch": [r["epoch"] for r in res], "hist0": res[0]["hist"], "s": round(time.time() - t, 1)}),
                  flush=True)


if __name__ == "__main__":
    main()
