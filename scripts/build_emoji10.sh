#!/usr/bin/env bash
# Builds the Emoji-10 image folder (shared/specs/datasets.md, recommendation b):
#   1. fetches the ten @iconify-json emoji sets at pinned versions with `npm pack` (the npm
#      registry is the only network use) into data/emoji10/raw/<set>/ (tarball unpacked there);
#   2. renders every class drawn in >= MIN_STYLES sets at SIZE px with the Rust renderer
#      (crates/simlearn/examples/build_emoji10.rs, resvg) into
#      data/emoji10/{train,test}/<codepoint key>/<set>.png plus data/emoji10/manifest.tsv.
# Usage: scripts/build_emoji10.sh [SIZE=64] [MIN_STYLES=8]
# Already-downloaded sets are reused; delete data/emoji10/raw to refetch.
set -euo pipefail

SIZE="${1:-64}"
MIN_STYLES="${2:-8}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/data/emoji10"
RAW="$OUT/raw"

# set@version, in the order of datasets.md (sets without a chars table are matched through the
# name tables of the earlier sets).
SETS=(
  noto@1.2.9
  twemoji@1.2.5
  openmoji@1.2.29
  fluent-emoji-flat@1.2.6
  fluent-emoji@1.2.7
  fluent-emoji-high-contrast@1.2.6
  emojione@1.2.3
  emojione-monotone@1.2.1
  emojione-v1@1.2.3
  noto-v1@1.2.5
)

command -v npm >/dev/null || { echo "error: npm is needed (apt-get install npm)" >&2; exit 2; }
mkdir -p "$RAW"
names=()
for entry in "${SETS[@]}"; do
  name="${entry%@*}"
  version="${entry#*@}"
  names+=("$name")
  dir="$RAW/$name"
  if [[ -f "$dir/package/icons.json" && -f "$dir/.version" && "$(cat "$dir/.version")" == "$version" ]]; then
    echo "$name@$version: already unpacked"
    continue
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  echo "$name@$version: npm pack"
  tgz="$(cd "$dir" && npm pack --silent "@iconify-json/$name@$version" | tail -n 1)"
  tar -xzf "$dir/$tgz" -C "$dir"
  rm -f "$dir/$tgz"
  [[ -f "$dir/package/icons.json" ]] || { echo "error: $name: no package/icons.json in the tarball" >&2; exit 1; }
  echo "$version" > "$dir/.version"
done

sets_arg="$(IFS=,; echo "${names[*]}")"
cd "$ROOT"
cargo run --release -p simlearn --example build_emoji10 -- \
  --raw "$RAW" --out "$OUT" --size "$SIZE" --min-styles "$MIN_STYLES" --sets "$sets_arg"
