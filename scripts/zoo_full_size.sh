#!/usr/bin/env bash
# Every architecture × every method set at full (published) size on demo-cifar10: one short
# epoch each (100 training images), to check that nothing fails outside the reduced widths the
# test suite uses. Prints one line per run: arch, methods, ok/FAIL, seconds, test accuracy.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
out=${1:-runs/zoo-full-size}
mkdir -p "$out"
for a in mlp alexnet resnet20 resnet32 resnet56 convnet lenet; do
  for m in none III II II+III I I+III I+II I+II+III; do
    start=$(date +%s)
    if ./target/release/synfed train --model "$a" --data demo-cifar10 --methods "$m" --epochs 1 \
        --train-limit 100 --batch-size 50 --eval-batch-size 200 --out "$out/$a-$m" --log warn \
        > "$out/$a-$m.log" 2>&1; then r=ok; else r=FAIL; fi
    echo "$a $m $r $(( $(date +%s) - start ))s"
  done
done
