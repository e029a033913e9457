#!/usr/bin/env bash
# Makes docs/serve-page.png: the `simlearn serve` page in headless Chromium, on an index of the
# Emoji-10 test classes embedded by a briefly trained Lite0 run (head only, 20 batches: a
# picture of the page, not of a good model). Needs data/emoji10 (scripts/build_emoji10.sh 96),
# target/release/simlearn and Chromium (apt install chromium). About 2 minutes on 2 cores.
#   bench/serve_screenshot.sh [ID=1112] [PORT=18080]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ID="${1:-1112}"
PORT="${2:-18080}"
BIN="$ROOT/target/release/simlearn"
W="$(mktemp -d)"
trap '[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"' EXIT
cd "$ROOT"
sed -e 's/^max_batches = 40/max_batches = 20/' -e 's/^epochs = 2/epochs = 1/' \
    -e 's/^eval_every = 2/eval_every = 1/' -e 's/^val_root.*$//' \
    -e 's/^batch_norm = "frozen_stats"/batch_norm = "frozen_stats"\ntrain_stages = 0/' \
    configs/finetune-emoji10-contextual.toml > "$W/cfg.toml"
"$BIN" train --config "$W/cfg.toml" --out "$W/run" > /dev/null
"$BIN" index build --run "$W/run" --images data/emoji10/test --out "$W/index"
"$BIN" serve --index "$W/index" --addr "127.0.0.1:$PORT" > "$W/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.2; done
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,860 \
  --virtual-time-budget=8000 --screenshot="$ROOT/docs/serve-page.png" \
  "http://127.0.0.1:$PORT/?id=$ID" 2> /dev/null
echo "wrote docs/serve-page.png (query: item $ID)"
