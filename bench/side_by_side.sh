#!/usr/bin/env bash
# synfed against PyTorch CPU on the five workloads of `cargo bench --bench side_by_side`: per
# workload the two programs run back to back (which one first alternates by round), so each
# pair sees the machine in the same state; one JSON line per program, workload and round.
# Usage: bench/side_by_side.sh [ROUNDS] > results.jsonl   (needs `torch` for python3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${THREADS:-2}
cargo bench --bench side_by_side --no-run >&2
tag() { sed -n "s/^{/{\"round\": $1, /p"; }
for r in $(seq "$rounds"); do
  for w in mlp:train:8 resnet20:train:8 resnet20:attack:8 resnet20:attack:1 convnet:attack:1; do
    ours() { RAYON_NUM_THREADS=$threads cargo bench -q --bench side_by_side -- --one "$w" --repeats 20 2>/dev/null | tag "$r"; }
    theirs() { python3 bench/pytorch_reference.py --threads "$threads" --repeats 20 --one "$w" 2>/dev/null | tag "$r"; }
    if (( r % 2 )); then ours; theirs; else theirs; ours; fi
  done
done
