#!/usr/bin/env bash
# Builds synfed with `--features cuda` on a machine without a GPU, and packs what a GPU machine
# needs to run it into .gpu/ (carried there by scripts/gpu-check.sh's caller):
#
#   .gpu/synfed.gz          the synfed binary
#   .gpu/cuda-tests.gz      tests/cuda.rs: CUDA against the CPU kernels, every architecture
#   .gpu/side_by_side.gz    benches/side_by_side.rs: the GPU side of the race with PyTorch
#
#   scripts/build-cuda.sh            (installs the toolchain first if .cuda/ is missing)
#
# Builds in target/cuda, so the CPU build in target/ is left alone. CUDA_COMPUTE_CAP (default 90,
# the H100/H200) picks the GPU generation candle-kernels compiles for; the binaries load the
# GPU machine's own libcuda, libcublas(Lt), libcurand and libnvrtc (CUDA 13) at run time.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[[ -f .cuda/env.sh ]] || scripts/cuda-toolchain.sh
# shellcheck source=/dev/null
source .cuda/env.sh
target="$repo/target/cuda"
cargo=(cargo --quiet)
"${cargo[@]}" build --release --features cuda --target-dir "$target" --bin synfed
# the executables' paths come from cargo's JSON messages (their names carry a hash)
exe_of() {
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$1"
}
tests=$("${cargo[@]}" test --release --features cuda --target-dir "$target" --test cuda --no-run --message-format=json | exe_of cuda)
bench=$("${cargo[@]}" bench --features cuda --target-dir "$target" --bench side_by_side --no-run --message-format=json | exe_of side_by_side)
mkdir -p .gpu   # ignored (.gitignore)
for pair in "synfed:$target/release/synfed" "cuda-tests:$tests" "side_by_side:$bench"; do
  name=${pair%%:*}
  path=${pair#*:}
  strip -o ".gpu/$name" "$path"
  gzip -9 -f ".gpu/$name"
done
ls -l .gpu
