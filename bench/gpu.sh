#!/usr/bin/env bash
# bench/gpu.sh: backbone training images/s on a GPU, simlearn (burn wgpu, and burn CUDA when it
# builds) side by side with PyTorch CUDA on the same card. Prints ONE JSON object on stdout;
# progress goes to stderr. See bench/README.md.
#
#   bash bench/gpu.sh > gpu.json              # NVIDIA GPU: about 6-8 min, cargo cache warm
#   GPU_BENCH_QUICK=1 bash bench/gpu.sh       # fewer runs, no CUDA-backend build (about 3 min)
#   GPU_BENCH_ALLOW_CPU=1 bash bench/gpu.sh   # smoke mode without a GPU (see below)
#
# Workload (the same on both sides): ResNet-50 and EfficientNet-Lite0, both at 224 px (the
# paper fine-tunes at 224), batch 64 = 16 classes x 4, random init, frozen BatchNorm
# statistics, average pooling, Adam; training step with the contrastive loss and with the
# contextual hybrid loss (simlearn: fused and graph kernels), plus inference. simlearn runs
# `cargo bench -p simlearn --bench backbone_step` (crates/simlearn/benches/backbone_step.rs),
# PyTorch runs bench/gpu_torch.py.
#
# Without a GPU (no device in `nvidia-smi -L`, no /dev/nvidia0, no non-CPU Vulkan adapter) it
# prints one line on stderr and exits 3 before installing or building anything. Exit code 1:
# no benchmark produced a result; 0 otherwise (failed or skipped steps are listed in the JSON).
#
# Environment:
#   GPU_BENCH_QUICK=1      3 timed runs after 2 warm-ups instead of 10 after 3; skips the
#                          CUDA-backend build.
#   GPU_BENCH_ALLOW_CPU=1  smoke mode for machines without a GPU: no GPU check, wgpu runs on
#                          whatever Vulkan adapter there is (Mesa lavapipe on a CPU), PyTorch on
#                          --device cpu, tiny shapes (batch 8, 64 px, 2 runs after 1 warm-up).
#                          Its numbers check the script, not any GPU.
#   GPU_BENCH_PYTHON       a python whose torch sees CUDA (default: python3 if it does, else a
#                          venv under target/gpu-bench-venv with torch + torchvision from PyPI).
#   GPU_BENCH_BIN          a prebuilt `backbone_step` bench binary built with --features wgpu
#                          (skips cargo; for machines without Rust: build it elsewhere with
#                          `cargo bench -p simlearn --bench backbone_step --features wgpu --no-run`).
#   GPU_BENCH_CUDA_BIN     the same, built with --features cuda.
#   GPU_BENCH_CUDA=0       do not try the CUDA-backend build.
#   GPU_BENCH_MODELS       default "resnet50 lite0"; GPU_BENCH_BATCH, GPU_BENCH_SIZE,
#                          GPU_BENCH_RUNS, GPU_BENCH_WARMUP override the shapes and counts.
#   GPU_BENCH_BUDGET_S     wall-clock budget of everything after the wgpu build (default 420):
#                          steps that would not fit are skipped and say so in the JSON. The
#                          build itself takes seconds with a warm cargo cache, minutes cold.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf 'bench/gpu.sh: %s\n' "$*" >&2; }

SMOKE="${GPU_BENCH_ALLOW_CPU:-0}"
QUICK="${GPU_BENCH_QUICK:-0}"
BUDGET="${GPU_BENCH_BUDGET_S:-420}"
T0=$SECONDS # reset after the wgpu build
left() { echo $((BUDGET - SECONDS + T0)); }

# ---------------------------------------------------------------------------------------------
# 1. Is there a GPU? (before anything is installed or built)
GPU_KIND=""
GPU_NAME=""
NV_REASON=""
if command -v nvidia-smi >/dev/null 2>&1; then
    if nvidia-smi -L 2>/dev/null | grep '^GPU ' >/dev/null; then
        GPU_KIND=nvidia
        GPU_NAME="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"
        [ -n "$GPU_NAME" ] || GPU_NAME="$(nvidia-smi -L | head -1)"
    else
        NV_REASON="nvidia-smi found no device"
    fi
elif [ -e /dev/nvidia0 ]; then
    GPU_KIND=nvidia
    GPU_NAME="NVIDIA GPU (/dev/nvidia0; nvidia-smi not installed)"
else
    NV_REASON="no nvidia-smi and no /dev/nvidia0"
fi
VK_GPU=""
VK_CPU=""
if command -v vulkaninfo >/dev/null 2>&1; then
    VK_SUMMARY="$(vulkaninfo --summary 2>/dev/null || true)"
    # deviceType comes before deviceName in each adapter's block.
    VK_GPU="$(awk '/deviceType/ {gpu = ($0 !~ /CPU/)} /deviceName/ && gpu {sub(/.*= /, ""); print; exit}' <<<"$VK_SUMMARY")"
    VK_CPU="$(awk '/deviceType/ {cpu = ($0 ~ /CPU/)} /deviceName/ && cpu {sub(/.*= /, ""); print; exit}' <<<"$VK_SUMMARY")"
fi
if [ -z "$GPU_KIND" ] && [ -n "$VK_GPU" ]; then
    GPU_KIND=vulkan
    GPU_NAME="$VK_GPU"
fi
if [ -z "$GPU_KIND" ]; then
    if [ "$SMOKE" != 1 ]; then
        say "no GPU visible (${NV_REASON}; no non-CPU Vulkan adapter); this benchmark needs one (GPU_BENCH_ALLOW_CPU=1 runs a CPU smoke pass)"
        exit 3
    fi
    GPU_KIND=none
    GPU_NAME="none (smoke mode; Vulkan adapter: ${VK_CPU:-none found})"
fi
say "GPU: $GPU_NAME"

MODELS="${GPU_BENCH_MODELS:-resnet50 lite0}"
if [ "$SMOKE" = 1 ]; then
    BATCH="${GPU_BENCH_BATCH:-8}" SIZE="${GPU_BENCH_SIZE:-64}"
    RUNS="${GPU_BENCH_RUNS:-2}" WARMUP="${GPU_BENCH_WARMUP:-1}"
    TORCH_DEVICE=cpu
elif [ "$QUICK" = 1 ]; then
    BATCH="${GPU_BENCH_BATCH:-64}" SIZE="${GPU_BENCH_SIZE:-224}"
    RUNS="${GPU_BENCH_RUNS:-3}" WARMUP="${GPU_BENCH_WARMUP:-2}"
    TORCH_DEVICE=cuda
else
    BATCH="${GPU_BENCH_BATCH:-64}" SIZE="${GPU_BENCH_SIZE:-224}"
    RUNS="${GPU_BENCH_RUNS:-10}" WARMUP="${GPU_BENCH_WARMUP:-3}"
    TORCH_DEVICE=cuda
fi
THREADS="$(nproc 2>/dev/null || echo 2)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/simlearn-gpu-bench.XXXXXX")"
: >"$WORK/simlearn_wgpu.jsonl"
: >"$WORK/simlearn_cuda.jsonl"
: >"$WORK/torch.jsonl"
: >"$WORK/status.tsv" # key <TAB> one-line status, read by the summary
status() { printf '%s\t%s\n' "$1" "$(printf '%s' "$2" | tr '\n\t' '  ' | cut -c1-300)" >>"$WORK/status.tsv"; }
last_line() { grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -1 | cut -c1-240; }

# ---------------------------------------------------------------------------------------------
# 2. Vulkan loader (the NVIDIA driver ships its own Vulkan ICD; Mesa is not installed here).
vulkan_ok=1
# (grep without -q reads its whole input: no SIGPIPE for pipefail to see)
if ! ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing libvulkan1 (apt)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvulkan1; } >"$WORK/apt.log" 2>&1; then
            say "apt-get install libvulkan1 failed: $(last_line "$WORK/apt.log")"
        fi
        ldconfig 2>/dev/null || true
    fi
    ldconfig -p 2>/dev/null | grep 'libvulkan\.so\.1' >/dev/null || vulkan_ok=0
fi
if [ "$GPU_KIND" = nvidia ] && [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ]; then
    if ! ls /usr/share/vulkan/icd.d/nvidia*.json /etc/vulkan/icd.d/nvidia*.json >/dev/null 2>&1; then
        for f in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/icd.d/nvidia_icd.json; do
            if [ -f "$f" ]; then
                export VK_DRIVER_FILES="$f"
                say "Vulkan ICD: $f"
                break
            fi
        done
    fi
fi

# ---------------------------------------------------------------------------------------------
# 3. A python with torch (CUDA build on a GPU machine).
torch_ok() { # python, device
    "$1" - "$2" >/dev/null 2>&1 <<'EOF'
import sys
import numpy, torch, torchvision  # noqa: F401
sys.exit(0 if sys.argv[1] == "cpu" or torch.cuda.is_available() else 4)
EOF
}
PY=""
VENV="$ROOT/target/gpu-bench-venv"
for cand in "${GPU_BENCH_PYTHON:-}" python3 "$VENV/bin/python"; do
    if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && torch_ok "$cand" "$TORCH_DEVICE"; then
        PY="$cand"
        break
    fi
done
if [ -z "$PY" ] && [ "$TORCH_DEVICE" = cuda ]; then
    say "installing torch + torchvision (PyPI, CUDA build) into $VENV"
    if { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch torchvision numpy; } >"$WORK/pip.log" 2>&1 &&
        torch_ok "$VENV/bin/python" cuda; then
        PY="$VENV/bin/python"
    else
        status torch "not run: no python with a CUDA torch, and the PyPI install failed: $(last_line "$WORK/pip.log")"
    fi
elif [ -z "$PY" ]; then
    status torch "not run: no python with torch (smoke mode installs nothing; set GPU_BENCH_PYTHON)"
fi
[ -n "$PY" ] && say "python: $PY"

# ---------------------------------------------------------------------------------------------
# 4. The simlearn bench binaries.
build() { # features -> prints the executable's path; log in $WORK/build-<features>.log
    cargo bench -p simlearn --bench backbone_step --features "$1" --no-run --message-format=json \
        2>"$WORK/build-$1.log" |
        sed -n 's/.*"executable":"\([^"]*backbone_step-[^"]*\)".*/\1/p' | tail -1
}
WGPU_BIN="${GPU_BENCH_BIN:-}"
if [ -z "$WGPU_BIN" ] && [ "$vulkan_ok" = 1 ]; then
    if command -v cargo >/dev/null 2>&1; then
        say "building the backbone_step bench with --features wgpu"
        WGPU_BIN="$(build wgpu || true)"
        [ -n "$WGPU_BIN" ] || status simlearn_wgpu "not built: $(last_line "$WORK/build-wgpu.log")"
    else
        status simlearn_wgpu "not built: cargo not found (build the bench elsewhere and set GPU_BENCH_BIN)"
    fi
elif [ -z "$WGPU_BIN" ]; then
    status simlearn_wgpu "not run: no Vulkan loader (libvulkan.so.1) and apt could not install libvulkan1"
fi

T0=$SECONDS

# ---------------------------------------------------------------------------------------------
# 5. The runs. Each is held to what is left of the budget, keeping 90 s for what follows.
run_simlearn() { # binary, device, output file, model
    local t=$(($(left) - 90))
    if [ "$t" -lt 20 ]; then
        status "$2_$4" "skipped: time budget"
        return 0
    fi
    say "simlearn $2 $4 (batch $BATCH, $SIZE px; at most ${t}s)"
    if ! timeout "$t" "$1" --device "$2" --model "$4" --batch "$BATCH" --size "$SIZE" \
        --runs "$RUNS" --warmup "$WARMUP" --threads "$THREADS" \
        --loss contrastive,contextual --kernel fused,graph >>"$3" 2>"$WORK/run-$2-$4.log"; then
        status "$2_$4" "failed: $(last_line "$WORK/run-$2-$4.log")"
    fi
}
if [ -n "$PY" ]; then
    for m in $MODELS; do
        t=$(($(left) - 120))
        if [ "$t" -lt 20 ]; then
            status "torch_$m" "skipped: time budget"
            continue
        fi
        say "torch $TORCH_DEVICE $m (batch $BATCH, $SIZE px; at most ${t}s)"
        if ! timeout "$t" "$PY" bench/gpu_torch.py --device "$TORCH_DEVICE" --model "$m" \
            --batch "$BATCH" --size "$SIZE" --runs "$RUNS" --warmup "$WARMUP" \
            >>"$WORK/torch.jsonl" 2>"$WORK/torch-$m.log"; then
            status "torch_$m" "failed: $(last_line "$WORK/torch-$m.log")"
        fi
    done
fi
if [ -n "$WGPU_BIN" ]; then
    for m in $MODELS; do run_simlearn "$WGPU_BIN" wgpu "$WORK/simlearn_wgpu.jsonl" "$m"; done
fi

# The CUDA backend: its build script downloads an LLVM bundle (cubecl's CPU runtime), so it
# builds only where that download works; a failure is recorded, not fatal.
CUDA_BIN="${GPU_BENCH_CUDA_BIN:-}"
if [ -z "$CUDA_BIN" ]; then
    if [ "${GPU_BENCH_CUDA:-1}" = 0 ] || [ "$QUICK" = 1 ] || [ "$SMOKE" = 1 ]; then
        status cuda "not built: skipped (GPU_BENCH_CUDA=0, GPU_BENCH_QUICK=1 or smoke mode)"
    elif [ "$GPU_KIND" != nvidia ]; then
        status cuda "not built: no NVIDIA device"
    elif ! command -v cargo >/dev/null 2>&1; then
        status cuda "not built: cargo not found (set GPU_BENCH_CUDA_BIN)"
    elif [ $(($(left) - 150)) -lt 60 ]; then
        status cuda "not built: time budget"
    else
        say "trying the build with --features cuda (at most $(($(left) - 150))s)"
        CUDA_BIN="$(timeout $(($(left) - 150)) bash -c "$(declare -f build); WORK='$WORK' build cuda" || true)"
        if [ -z "$CUDA_BIN" ]; then
            # e.g. "error: failed to run custom build command for `tracel-llvm-bundler ...`"
            # and, under it, the download's error.
            reason="$(grep -m1 '^error' "$WORK/build-cuda.log" | cut -c1-160 || true)"
            cause="$(grep -m1 -E 'Result::unwrap|failed to lookup|Connection|timed out' "$WORK/build-cuda.log" |
                sed 's/^ *//' | cut -c1-200 || true)"
            status cuda "not built: ${reason:-$(last_line "$WORK/build-cuda.log")}${cause:+ ($cause)}"
        fi
    fi
fi
if [ -n "$CUDA_BIN" ]; then
    for m in $MODELS; do run_simlearn "$CUDA_BIN" cuda "$WORK/simlearn_cuda.jsonl" "$m"; done
fi

# ---------------------------------------------------------------------------------------------
# 6. One JSON object.
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ "$COMMIT" != unknown ] && ! git diff --quiet HEAD -- crates bench 2>/dev/null; then COMMIT="$COMMIT+dirty"; fi
SUMMARY_PY="${PY:-python3}"
G_WORK="$WORK" G_MODELS="$MODELS" G_BATCH="$BATCH" G_SIZE="$SIZE" G_RUNS="$RUNS" G_WARMUP="$WARMUP" \
    G_TORCH_DEVICE="$TORCH_DEVICE" G_SMOKE="$SMOKE" G_QUICK="$QUICK" G_GPU="$GPU_NAME" G_KIND="$GPU_KIND" \
    G_COMMIT="$COMMIT" G_THREADS="$THREADS" G_ELAPSED="$SECONDS" "$SUMMARY_PY" - <<'EOF'
import datetime
import json
import os
from pathlib import Path

env = os.environ
work = Path(env["G_WORK"])


def lines(name):
    return [json.loads(x) for x in (work / name).read_text().splitlines() if x.strip().startswith("{")]


status = {}
for row in (work / "status.tsv").read_text().splitlines():
    key, _, text = row.partition("\t")
    status[key] = text
rows = {"simlearn_wgpu": lines("simlearn_wgpu.jsonl"), "simlearn_cuda": lines("simlearn_cuda.jsonl"),
        "torch": lines("torch.jsonl")}


def ips(side, model, mode, loss=None, kernel=None):
    for r in rows[side]:
        if r["model"] == model and r["mode"] == mode and r.get("loss") == loss and r.get("kernel") == kernel:
            return r["images_per_s"]
    return None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


models = {}
for m in env["G_MODELS"].split():
    entry = {"batch": int(env["G_BATCH"]), "size": int(env["G_SIZE"])}
    torch_side = {"contrastive": ips("torch", m, "train_step", "contrastive"),
                  "contextual": ips("torch", m, "train_step", "contextual"),
                  "inference": ips("torch", m, "inference")}
    entry["torch_" + env["G_TORCH_DEVICE"]] = torch_side
    for side in ("simlearn_wgpu", "simlearn_cuda"):
        if not rows[side]:
            continue
        s = {"contrastive": ips(side, m, "train_step", "contrastive"),
             "contextual_fused": ips(side, m, "train_step", "contextual", "fused"),
             "contextual_graph": ips(side, m, "train_step", "contextual", "graph"),
             "inference": ips(side, m, "inference")}
        dense = [r.get("fused_dense") for r in rows[side] if r["model"] == m and r.get("kernel") == "fused"]
        s["fused_dense_fallback"] = dense[0] if dense else None
        entry[side] = s
        entry["ratio_" + side + "_vs_torch"] = {
            "contrastive": ratio(s["contrastive"], torch_side["contrastive"]),
            "contextual_fused": ratio(s["contextual_fused"], torch_side["contextual"]),
            "contextual_graph": ratio(s["contextual_graph"], torch_side["contextual"]),
            "inference": ratio(s["inference"], torch_side["inference"]),
        }
    models[m] = entry

torch_info = rows["torch"][0] if rows["torch"] else None
print(json.dumps({
    "bench": "gpu",
    "smoke": env["G_SMOKE"] == "1",
    "quick": env["G_QUICK"] == "1",
    "gpu": env["G_GPU"],
    "gpu_kind": env["G_KIND"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "commit": env["G_COMMIT"],
    "host_threads": int(env["G_THREADS"]),
    "runs": int(env["G_RUNS"]),
    "warmup": int(env["G_WARMUP"]),
    "units": "images/s (batch / median step time); ratios = simlearn / torch",
    "torch": {k: torch_info.get(k) for k in ("torch", "cuda", "device", "gpu", "cudnn_tf32", "matmul_tf32")}
    if torch_info else status.get("torch", "not run"),
    "simlearn_wgpu": "ran" if rows["simlearn_wgpu"] else status.get("simlearn_wgpu", "not run"),
    "cuda": "ran" if rows["simlearn_cuda"] else status.get("cuda", "not run"),
    "models": models,
    "problems": {k: v for k, v in status.items() if k not in ("torch", "simlearn_wgpu", "cuda")},
    "elapsed_s": int(env["G_ELAPSED"]),
    "lines": rows,
}, indent=1))
EOF
say "done in ${SECONDS}s (logs: $WORK)"
if [ ! -s "$WORK/simlearn_wgpu.jsonl" ] && [ ! -s "$WORK/simlearn_cuda.jsonl" ] && [ ! -s "$WORK/torch.jsonl" ]; then
    say "no benchmark produced a result (see \"problems\" and the logs)"
    exit 1
fi
