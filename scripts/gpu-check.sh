#!/usr/bin/env bash
# The GPU check, in one call on a machine with an NVIDIA GPU and CUDA 13 (the `device` tool's
# H200): the binaries of scripts/build-cuda.sh (.gpu/, carried there) against the CPU kernels,
# every command with --device cuda, and a race with PyTorch-CUDA on the same GPU.
#
#   [ROUNDS=3] scripts/gpu-check.sh [tests] [cli] [bench] [torch-profile] [ncu]   (default: all)
#
# tests    .gpu/cuda-tests: forward, parameter gradients, FedAvg update, SGD step (I+II+III) and
#          the attack's image gradient on CUDA against the CPU kernels, every architecture
# cli      train, attack, simulate (CUDA clients over gRPC) and compare with --device cuda
# bench    side_by_side --device cuda and bench/pytorch_reference.py --device cuda, alternating,
#          ROUNDS rounds × 50 timed repetitions: ResNet20 step/attack at batch 8, ConvNet at batch 1
# torch-profile  where PyTorch's time goes (its profiler, the two attack workloads)
# ncu      where synfed's goes: candle's kernels through Nsight Compute (ConvNet batch 1:
#          launches, kernel names and durations), if ncu runs on the machine
#
# Writes to $OUT (the device tool's folder) or runs/gpu-check: gpu-check.log, cuda-tests.log,
# bench.jsonl, cli.tar.gz, profile-torch.txt, profile-ncu.txt. Exit status: non-zero if a test
# or command failed.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out="${OUT:-$repo/runs/gpu-check}"
mkdir -p "$out"
exec > >(tee -a "$out/gpu-check.log") 2>&1
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=(tests cli bench torch-profile ncu)
rounds=${ROUNDS:-3}
wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }
status=0
fail() { echo "FAILED: $*"; status=1; }
stamp() { echo "== $(date +%T) $*"; }

bin="$(mktemp -d)"
work="$(mktemp -d)"
for f in .gpu/*.gz; do
  [[ -e "$f" ]] || { echo "no .gpu/*.gz: run scripts/build-cuda.sh and carry .gpu"; exit 2; }
  gunzip -c "$f" > "$bin/$(basename "$f" .gz)"
  chmod +x "$bin/$(basename "$f" .gz)"
done

# CUDA 13 libraries: the machine's toolkit, else PyTorch's NVIDIA wheels.
libdirs=()
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13; do
  found=""
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu \
           $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null | tr ' ' '\n' | sed 's|$|/nvidia/cu13/lib|'); do
    [[ -e "$d/$lib" ]] && { found="$d"; break; }
  done
  [[ -n "$found" ]] || found="$(dirname "$(find / -xdev -name "$lib" 2>/dev/null | head -1)" 2>/dev/null)"
  [[ -n "$found" && "$found" != "." ]] && libdirs+=("$found") || echo "warning: $lib not found"
done
LD_LIBRARY_PATH="$(printf '%s\n' "${libdirs[@]}" | awk '!seen[$0]++' | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
export CANDLE_GRAD_DO_NOT_DETACH=1   # the attack's second-order gradients (synfed's main sets it itself)
stamp "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
nproc
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd "$bin/synfed" | grep -E 'cuda|cublas|curand|nvrtc' || true

if wants tests; then
  stamp "tests: CUDA against the CPU kernels"
  timeout 300 "$bin/cuda-tests" --test-threads 4 --nocapture 2>&1 | tee "$out/cuda-tests.log" \
    || fail "cuda-tests (exit ${PIPESTATUS[0]})"
fi

if wants cli; then
  run() {
    local name=$1; shift
    stamp "cli: $name"
    local t0=$SECONDS
    if timeout 240 "$bin/synfed" "$@" > "$work/$name.log" 2>&1; then
      echo "ok in $((SECONDS - t0)) s"
    else
      fail "synfed $name (exit $?)"; tail -20 "$work/$name.log"
    fi
    # a federation's client tasks and simulate's attacks log failures and carry on
    if grep -aE "WARN.*(failed|error)" "$work/$name.log" | head -5 | grep -q .; then
      fail "synfed $name logged failures:"; grep -aE "WARN.*(failed|error)" "$work/$name.log" | head -5
    fi
  }
  run train train --device cuda --model resnet20 --data demo-cifar10 --methods I+II+III \
    --epochs 2 --batch-size 50 --out "$work/train"
  run attack attack --device cuda --model convnet --data demo-cifar10 --batch-size 1 \
    --iterations 300 --out "$work/attack"
  [[ -n "${CPU_ATTACK:-}" ]] && run attack-cpu attack --device cpu --model convnet \
    --data demo-cifar10 --batch-size 1 --iterations 300 --out "$work/attack-cpu"
  run simulate simulate --device cuda --rounds 3 --attack-iterations 200 --out "$work/simulate"
  cat > "$work/compare.toml" <<'TOML'
data = "demo-mnist"
clients = 2
batches = 2
rounds = 1
attack_iterations = 100
methods = ["none", "III", "I+II+III"]
lr_factors = []
width_matched = false
[[models]]
arch = "mlp"
width = 64
TOML
  run compare compare --device cuda --config "$work/compare.toml" --out "$work/compare"
  for f in "$work"/train/summary.json "$work"/attack/metrics.json "$work"/attack-cpu/metrics.json; do
    [[ -f "$f" ]] && { echo "--- $f"; head -c 1500 "$f"; echo; }
  done
  tar -C "$work" -czf "$out/cli.tar.gz" --exclude='*.safetensors' . || true
fi

if wants bench; then
  stamp "bench: synfed (candle CUDA) and PyTorch on the same GPU"
  : > "$out/bench.jsonl"
  for r in $(seq "$rounds"); do
    for w in resnet20:train:8 resnet20:attack:8 convnet:train:1 convnet:attack:1; do
      ours() { timeout 120 "$bin/side_by_side" --device cuda --one "$w" --repeats 50 | sed "s/^{/{\"round\": $r, \"program\": \"synfed\", /"; }
      theirs() { timeout 120 python3 bench/pytorch_reference.py --device cuda --one "$w" --repeats 50 | sed "s/^{/{\"round\": $r, \"program\": \"pytorch\", /"; }
      if (( r % 2 )); then ours; theirs; else theirs; ours; fi
    done
  done | tee -a "$out/bench.jsonl"
  python3 - "$out/bench.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r["workload"], r["round"]), {})[r["program"]] = r["median_ms"]
print(f"{'workload':22} {'pytorch ms':>10} {'synfed ms':>10} {'ratio':>7}")
host = {}
for r in rows:
    if r["program"] == "synfed" and "host_ms" in r:
        host.setdefault(r["workload"], []).append(r["host_ms"] / r["median_ms"])
for w in dict.fromkeys(k[0] for k in by):
    pairs = [v for (ww, _), v in by.items() if ww == w and len(v) == 2]
    if not pairs:
        continue
    p = statistics.median(v["pytorch"] for v in pairs)
    s = statistics.median(v["synfed"] for v in pairs)
    ratios = sorted(v["synfed"] / v["pytorch"] for v in pairs)
    launch = f"; synfed's host busy launching {100 * statistics.median(host[w]):.0f} % of its time" if w in host else ""
    print(f"{w:22} {p:10.2f} {s:10.2f} {statistics.median(ratios):7.2f}  (rounds: {', '.join(f'{x:.2f}' for x in ratios)}){launch}")
PY
fi

if wants torch-profile; then
  stamp "profile: PyTorch"
  timeout 120 python3 - > "$out/profile-torch.txt" 2>&1 <<'PY' || fail "torch profile"
import sys
sys.path.insert(0, "bench")
import torch
from torch.profiler import profile, ProfilerActivity
import pytorch_reference as ref
for w in [("resnet20", "attack", 8), ("convnet", "attack", 1)]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ref.workload(w, 5, "cuda")
    print("#", w, "(3 warm-ups + 5 repetitions)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))
PY
fi

if wants ncu; then
  if command -v ncu > /dev/null; then
    # ncu serialises and times every kernel (tens of ms each): one short run, no warm-ups
    stamp "profile: synfed's kernels (ncu: ConvNet batch 1, target gradient + 2 attack iterations)"
    timeout "${NCU_TIMEOUT:-200}" ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
      "$bin/side_by_side" --device cuda --one convnet:attack:1 --warmups 0 --repeats 2 \
      > "$work/ncu.csv" 2> "$work/ncu.err" || echo "ncu stopped: $(tail -3 "$work/ncu.err")"
    python3 - "$work/ncu.csv" > "$out/profile-ncu.txt" <<'PY' || echo "no ncu rows"
import csv, collections, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
head, rows = rows[0], rows[1:]
ki, vi = head.index("Kernel Name"), head.index("Metric Value")
tot = collections.Counter(); cnt = collections.Counter()
for r in rows:
    name = r[ki].split("(")[0][:70]
    tot[name] += float(r[vi].replace(",", "")); cnt[name] += 1
all_ns = sum(tot.values())
print(f"{len(rows)} kernel launches, {all_ns/1e6:.2f} ms of kernel time "
      "(model set-up, the target gradient and two attack iterations)")
for k, v in tot.most_common(40):
    print(f"{v/1e6:9.3f} ms {100*v/all_ns:5.1f} % {cnt[k]:6d}x  {k}")
PY
    head -45 "$out/profile-ncu.txt"
  fi
fi
stamp "done (status $status)"
exit $status
