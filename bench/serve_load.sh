#!/usr/bin/env bash
# Service latency under a bounded loopback load: `simlearn serve` on the SOP-shaped vectors
# (bench/ann_vs_faiss.py gen), as an exact and as an HNSW index (M 32, efConstruction 200,
# efSearch 2048: recall@10 0.991 in bench/ann_vs_faiss.py), hit by the serve_load bench
# binary with a fixed number of POST /search requests at several concurrencies, then stopped
# with SIGTERM. Prints one JSON object per index: latency percentiles, requests/s, status
# counts, the server's peak RSS, and the status of one oversized body (413 expected).
#   bench/serve_load.sh [REQUESTS=2000] [CONCURRENCY=1,4,16,64]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${ANN_DATA:-/work/data/bench/ann}"
REQUESTS="${1:-2000}"
LEVELS="${2:-1,4,16,64}"
BIN="$ROOT/target/release/simlearn"
LOAD="$(ls -t "$ROOT"/target/release/deps/serve_load-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
[ -x "$BIN" ] || { echo "error: $BIN missing: cargo build --release" >&2; exit 1; }
[ -n "$LOAD" ] || { echo "error: cargo bench -p simlearn-index --bench serve_load --no-run first" >&2; exit 1; }
[ -f "$DATA/sop_base.npy" ] || { echo "error: $DATA/sop_base.npy missing: python bench/ann_vs_faiss.py gen" >&2; exit 1; }
W="$(mktemp -d)"
trap '[ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; rm -rf "$W"' EXIT
"$BIN" index build --embeddings "$DATA/sop_base.npy" --out "$W/exact" > /dev/null
"$BIN" index build --embeddings "$DATA/sop_base.npy" --kind hnsw --m 32 --ef-construction 200 \
  --ef-search 2048 --out "$W/hnsw" > /dev/null
PORT=18181
for kind in exact hnsw; do
  "$BIN" serve --index "$W/$kind" --addr "127.0.0.1:$PORT" --concurrency 64 > "$W/serve.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break; sleep 0.1; done
  result="$("$LOAD" --addr "127.0.0.1:$PORT" --queries "$DATA/sop_query.npy" \
    --requests "$REQUESTS" --concurrency "$LEVELS" --k 10)"
  # 9 MB of JSON against the default 8 MiB body limit.
  big="$(head -c 9000000 /dev/zero | tr '\0' ' ' | curl -s -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/json' --data-binary @- "http://127.0.0.1:$PORT/search")"
  rss="$(awk '/VmHWM/ {print $2}' "/proc/$SERVER/status")"
  kill -TERM "$SERVER"; wait "$SERVER" || true; SERVER=
  echo "{\"index\": \"$kind\", \"server_peak_rss_mb\": $((rss / 1024)), \"oversized_body_status\": $big, \"load\": $result}"
  PORT=$((PORT + 1))
done
