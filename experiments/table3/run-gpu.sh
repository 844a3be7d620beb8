#!/usr/bin/env bash
# Runs cells of experiments/table3 on a GPU machine (the `device` tool's H200), one process per
# shard, for at most LIMIT seconds, and copies the finished cells (without the trained weights)
# to $OUT as table3-gpu.tar.gz. Needs the CUDA build of scripts/build-cuda.sh in .gpu/synfed.gz
# and CIFAR-100's test.bin.gz in .gpu/data/ (both carried there; .gpu is ignored).
#
#   [MODELS=mlp] [SHARDS=15] [LIMIT=500] experiments/table3/run-gpu.sh
#
# The cells whose processes finish in time are complete (cell.json is written last); the
# others are left for a later run (a rerun skips finished cells) or for the CPU.
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
out="${OUT:-$repo/runs/table3-gpu-out}"
mkdir -p "$out"
exec > >(tee -a "$out/run-gpu.log") 2>&1
models=${MODELS:-mlp}
shards=${SHARDS:-15}
limit=${LIMIT:-500}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CANDLE_GRAD_DO_NOT_DETACH=1
bin="$(mktemp -d)/synfed"
gunzip -c .gpu/synfed.gz > "$bin" && chmod +x "$bin"
# the configuration names ../shared/data (relative to the repository root)
mkdir -p ../shared/data/cifar100
[[ -e ../shared/data/cifar100/test.bin.gz ]] || cp .gpu/data/test.bin.gz ../shared/data/cifar100/
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nproc
runs="$repo/runs/table3-gpu"
mkdir -p "$runs"
echo "== $(date +%T) $shards shards of the $models cells, $limit s"
pids=()
for ((i = 0; i < shards; i++)); do
  timeout "$limit" "$bin" --log info compare --config experiments/table3/table3.toml \
    --out "$runs/shard-$i" --models "$models" --shard "$i/$shards" --device cuda \
    > "$runs/shard-$i.log" 2>&1 &
  pids+=($!)
done
# the shards by pid: a bare `wait` would also wait for the `tee` of the exec line above, which
# only ends with this script
wait "${pids[@]}"
echo "== $(date +%T) done"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
find "$runs" -name cell.json | sort
grep -h -E "ERROR|error|panicked" "$runs"/shard-*.log | head -20
tar -C "$runs" --exclude='*.safetensors' -czf "$out/table3-gpu.tar.gz" .
ls -l "$out"
