#!/usr/bin/env python3
"""Continuous-label task (b): font weight. Glyphs of the Inter variable font rendered at random continuous weights;
label = the `wght` axis value (100-900, Euclidean label distance, in weight units).

    python scripts/build_fontweight.py                    # -> data/fontweight/

Source: Debian `fonts-inter-variable` (apt-get download + dpkg-deb -x into data/raw/inter when missing),
`Inter-roman.var.ttf`, axis wght 100-900 (see ../shared/specs/datasets.md).

Glyphs: Latin A-Z a-z, digits 0-9, Greek capitals and small letters, Cyrillic U+0410-U+044F. Glyphs the font does not
draw are dropped, and so are glyphs whose weight-400 bitmap equals one already kept (Latin A, Greek Alpha and
Cyrillic A are the same drawing), so that no shape is on both sides of the split. The kept glyphs are shuffled
(numpy PCG64, --seed) and split in halves: train images use one half, test images the other (held-out glyphs;
--split images draws both sets from all glyphs instead, as different images). Each image: one glyph drawn uniformly
from its side's glyphs, weight uniform in [100, 900], rendered white-on-black with Pillow
(`ImageFont.truetype(...).set_variation_by_axes([w])`) at --font-size px and centred by its ink bounding box on a
--size x --size canvas (the fixed font size keeps the stroke width meaningful; glyphs are not rescaled).

Writes train_features.npy (n x size*size float32 in [0, 1]), train_labels.npy (n x 1 float32 weights),
test_features.npy, test_labels.npy, meta.json (glyphs of each side) and contact.png. Needs numpy and Pillow.
"""
import argparse, json, subprocess, sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "data" / "raw"
FONT = RAW / "inter" / "usr" / "share" / "fonts" / "truetype" / "inter-vf" / "Inter-roman.var.ttf"


def fetch_font():
    if not FONT.exists():
        RAW.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "fonts-inter-variable"], cwd=RAW, check=True)
        deb = sorted(RAW.glob("fonts-inter-variable_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(RAW / "inter")], check=True)
    return FONT


def candidates():
    cps = list(range(0x41, 0x5B)) + list(range(0x61, 0x7B)) + list(range(0x30, 0x3A))
    cps += [c for c in range(0x391, 0x3AA) if c != 0x3A2] + list(range(0x3B1, 0x3CA))
    cps += list(range(0x410, 0x450))
    return [chr(c) for c in cps]


def render(font, ch, weight, size):
    font.set_variation_by_axes([float(weight)])
    l, t, r, b = font.getbbox(ch)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.text(((size - (r - l)) / 2 - l, (size - (b - t)) / 2 - t), ch, font=font, fill=255)
    return np.asarray(img, np.float32) / 255.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=3000)
    ap.add_argument("--size", type=int, default=28, help="canvas side in pixels (features = size*size)")
    ap.add_argument("--font-size", type=int, default=20)
    ap.add_argument("--split", choices=["glyphs", "images"], default="glyphs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "fontweight")
    a = ap.parse_args()
    font = ImageFont.truetype(str(fetch_font()), a.font_size)
    axes = font.get_variation_axes()
    if len(axes) != 1 or axes[0]["minimum"] != 100 or axes[0]["maximum"] != 900:
        sys.exit(f"unexpected variation axes {axes}")
    notdef = render(font, "\ue000", 400, a.size)  # a private-use codepoint: the .notdef box
    kept, seen = [], set()
    for ch in candidates():
        bm = render(font, ch, 400, a.size)
        key = (bm > 0.5).tobytes()
        if bm.max() == 0 or np.array_equal(bm, notdef) or key in seen:
            continue
        seen.add(key)
        kept.append(ch)
    rng = np.random.default_rng(a.seed)
    order = rng.permutation(len(kept))
    if a.split == "glyphs":
        half = len(kept) // 2
        train_glyphs = [kept[i] for i in order[:half]]
        test_glyphs = [kept[i] for i in order[half:]]
    else:
        train_glyphs = test_glyphs = kept

    def build(glyphs, n):
        chars = rng.integers(0, len(glyphs), n)
        weights = rng.uniform(100.0, 900.0, n)
        x = np.stack([render(font, glyphs[c], w, a.size).ravel() for c, w in zip(chars, weights)])
        return x.astype(np.float32), weights.astype(np.float32).reshape(n, 1), [glyphs[c] for c in chars]

    xtr, ytr, ctr = build(train_glyphs, a.n_train)
    xte, yte, cte = build(test_glyphs, a.n_test)
    a.out.mkdir(parents=True, exist_ok=True)
    np.save(a.out / "train_features.npy", xtr)
    np.save(a.out / "train_labels.npy", ytr)
    np.save(a.out / "test_features.npy", xte)
    np.save(a.out / "test_labels.npy", yte)
    cols, scale = 8, 3
    sheet = Image.new("L", (cols * a.size * scale, 4 * (a.size * scale + 12)), 255)
    draw = ImageDraw.Draw(sheet)
    for i in range(32):
        im = Image.fromarray((255 - xte[i].reshape(a.size, a.size) * 255).astype(np.uint8))
        x, y = (i % cols) * a.size * scale, (i // cols) * (a.size * scale + 12)
        sheet.paste(im.resize((a.size * scale, a.size * scale), Image.NEAREST), (x, y))
        draw.text((x + 2, y + a.size * scale), f"{yte[i, 0]:.0f}", fill=0)
    sheet.save(a.out / "contact.png")
    meta = {"task": "fontweight", "source": "Debian fonts-inter-variable, Inter-roman.var.ttf", "seed": a.seed,
            "size": a.size, "font_size": a.font_size, "split": a.split,
            "label": "wght axis value, uniform [100, 900]; Euclidean distance in weight units",
            "glyphs_kept": len(kept), "train_glyphs": "".join(train_glyphs), "test_glyphs": "".join(test_glyphs),
            "train_chars": "".join(ctr), "test_chars": "".join(cte)}
    (a.out / "meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    print(f"{a.out}: {len(kept)} distinct glyphs ({len(train_glyphs)} train / {len(test_glyphs)} test, split "
          f"{a.split}); train {xtr.shape} test {xte.shape}")


if __name__ == "__main__":
    main()
