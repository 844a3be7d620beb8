#!/usr/bin/env bash
# synfed against PyTorch CPU, each workload's two programs back to back (which one goes first
# alternates by round), so that each pair sees the machine in the same state; one JSON line
# per program, workload and round, each naming the processor (`lscpu`'s model name).
#
# Training steps: `cargo bench --bench side_by_side -- --one W` against
# `bench/pytorch_reference.py --one W` (median of 20 steps after 3 warm-ups).
# Attacks: the whole loop as a user runs it, `synfed attack --model M --data demo-cifar10
# --batch-size B --iterations N` (bench/synfed_attack.py reads the command's own report of its
# loop) against `bench/pytorch_reference.py --loop N` (the same loop in PyTorch): milliseconds
# per iteration over N iterations, the first ones included.
# With KERNELS=1 the bare attack iterations of the criterion bench are compared as well.
#
# Usage: bench/side_by_side.sh [ROUNDS] > results.jsonl   (needs `torch` for python3)
#        THREADS=N sets both programs' threads (default 2); FEATURES=avx512 builds synfed with
#        gemm's AVX-512 kernels (see README, Speed).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
threads=${THREADS:-2}
features=()
[[ -n ${FEATURES:-} ]] && features=(--features "$FEATURES")
cargo build --release --bin synfed "${features[@]}" >&2
cargo bench --bench side_by_side --no-run "${features[@]}" >&2
tag() { sed -n "s/^{/{\"round\": $1, /p"; }
# workload and attack-loop iterations (about 5–10 s of loop per program)
loops="resnet20:attack:8=100 resnet20:attack:1=300 convnet:attack:1=40 convnet:attack:1:eval=40"
for r in $(seq "$rounds"); do
  for w in mlp:train:8 resnet20:train:8; do
    ours() { RAYON_NUM_THREADS=$threads cargo bench -q --bench side_by_side "${features[@]}" -- --one "$w" --repeats 20 2>/dev/null | tag "$r"; }
    theirs() { python3 bench/pytorch_reference.py --threads "$threads" --repeats 20 --one "$w" 2>/dev/null | tag "$r"; }
    if (( r % 2 )); then ours; theirs; else theirs; ours; fi
  done
  for spec in $loops; do
    w=${spec%=*} n=${spec#*=}
    mode=train; [[ $w == *:eval ]] && mode=eval
    ours() { python3 bench/synfed_attack.py --threads "$threads" --loop "$n" --bn-mode "$mode" --one "${w%:eval}" | tag "$r"; }
    theirs() { python3 bench/pytorch_reference.py --threads "$threads" --loop "$n" --one "$w" 2>/dev/null | tag "$r"; }
    if (( r % 2 )); then ours; theirs; else theirs; ours; fi
    if [[ ${KERNELS:-0} == 1 && $mode == train ]]; then
      RAYON_NUM_THREADS=$threads cargo bench -q --bench side_by_side "${features[@]}" -- --one "$w" --repeats 20 2>/dev/null | tag "$r"
      python3 bench/pytorch_reference.py --threads "$threads" --repeats 20 --one "$w" 2>/dev/null | tag "$r"
    fi
  done
done
