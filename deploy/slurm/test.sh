#!/usr/bin/env bash
# synfed's Slurm recipes on a real Slurm: starts a single-node cluster on this machine
# (local-cluster.sh: munged, slurmctld, slurmd), then
#   1. submits a tiny comparison as a 3-task array plus its dependent merge
#      (submit-compare.sh) and checks that the merged results equal an unsharded run's;
#   2. submits a 3-client federation (federation.sbatch: serve + 3 joins as one job) and checks
#      that its rounds and final model equal `synfed simulate` of the same run.
# Needs root and `apt-get install -y slurm-wlm munge`. SYNFED: the binary (default
# target/release/synfed, else target/debug/synfed). Exit status 0 when both checks pass, 2
# when Slurm or synfed is missing, 3 when the cluster cannot start here.
#
#   deploy/slurm/test.sh [WORK_DIR]
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/deploy/slurm"
work=$(realpath -m "${1:-$(mktemp -d)}")
mkdir -p "$work"
synfed=${SYNFED:-}
if [[ -z "$synfed" ]]; then
  for candidate in "$repo/target/release/synfed" "$repo/target/debug/synfed"; do
    [[ -x "$candidate" ]] && { synfed=$candidate; break; }
  done
fi
[[ -x "$synfed" ]] || { echo "build synfed first (cargo build --release) or set SYNFED" >&2; exit 2; }
# the jobs run in their own folders
synfed=$(realpath "$synfed")
export SYNFED=$synfed
command -v sbatch > /dev/null || { echo "Slurm is not installed: apt-get install -y slurm-wlm munge" >&2; exit 2; }
stamp() { echo "== $(date +%T) $*"; }

"$here/local-cluster.sh" start "$work/cluster" || exit $?
trap '"$here/local-cluster.sh" stop "$work/cluster"' EXIT
export SLURM_CONF="$work/cluster/slurm.conf"

# waits for the jobs to leave the queue and fails unless each COMPLETED
await() {
  for job in "$@"; do
    while squeue -h -j "$job" 2> /dev/null | grep -q .; do sleep 2; done
    state=$(scontrol show job "$job" 2> /dev/null | grep -o 'JobState=[A-Z_]*' | head -1)
    echo "job $job: ${state:-gone}"
    [[ "$state" == "JobState=COMPLETED" ]] || return 1
  done
}

stamp "1. a comparison as a Slurm array of 3 shards + merge"
cat > "$work/compare.toml" <<'TOML'
clients = 3
batches = 2
rounds = 1
attack_iterations = 40
eval_limit = 50
methods = ["none", "III"]
lr_factors = []
[[models]]
arch = "mlp"
width = 16
TOML
started=$(date +%s)
ids=$(SHARDS=3 "$here/submit-compare.sh" "$work/compare.toml" "$work/cmp")
echo "$ids"
array=$(echo "$ids" | awk '{print $2}')
merge=$(echo "$ids" | awk '{print $6}' | tr -d ';')
for task in 0 1 2; do await "${array}_$task"; done
await "$merge"
echo "array + merge: $(( $(date +%s) - started )) s"
"$synfed" --log warn compare --config "$work/compare.toml" --out "$work/unsharded"
python3 - "$work/cmp/merged/results.json" "$work/unsharded/results.json" <<'PY'
import json, sys
merged, whole = (json.load(open(p)) for p in sys.argv[1:])
assert merged["rows"] == whole["rows"], "merged rows differ from the unsharded run's"
assert merged["config"] == whole["config"]
print(f"merged results.json equals the unsharded run's ({len(whole['rows'])} rows)")
PY

stamp "2. a federation as one Slurm job: serve + 3 joins"
cat > "$work/run.toml" <<'TOML'
seed = 3
rounds = 3
[model]
arch = "mlp"
width = 16
[data]
name = "demo-mnist"
eval_limit = 100
[sampling]
min_clients = 3
TOML
started=$(date +%s)
job=$(CONFIG="$work/run.toml" OUT="$work/fed" DATA=demo-mnist PARTITION_SEED=3 \
  sbatch --parsable --export=ALL --chdir="$work" --ntasks=4 "$here/federation.sbatch")
await "$job"
echo "federation job: $(( $(date +%s) - started )) s"
cat "$work/synfed-federation-$job.log" | grep -v '^\s*$' | tail -5
"$synfed" --log warn simulate --config "$work/run.toml" --clients 3 --no-attack --out "$work/sim"
python3 - "$work/fed" "$work/sim" <<'PY'
import csv, hashlib, pathlib, sys
fed, sim = (pathlib.Path(p) for p in sys.argv[1:])
def rounds(d):
    rows = list(csv.DictReader(open(d / "rounds.csv")))
    return [{k: v for k, v in r.items() if "seconds" not in k and not k.endswith("_s")} for r in rows]
assert rounds(fed) == rounds(sim), "rounds differ"
digest = lambda d: hashlib.sha256((d / "checkpoint.safetensors").read_bytes()).hexdigest()
assert digest(fed) == digest(sim), "final models differ"
print(f"the Slurm federation equals synfed simulate: {len(rounds(fed))} rounds, checkpoint {digest(fed)[:16]}")
PY
stamp "both Slurm checks passed"
