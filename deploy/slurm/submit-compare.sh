#!/usr/bin/env bash
# Submits a comparison as a Slurm array of SHARDS tasks and its merge as a job that starts when
# every task has succeeded; prints the two job ids.
#
#   SHARDS=8 deploy/slurm/submit-compare.sh compare.toml runs/cmp [extra sbatch options…]
set -euo pipefail
config=$(realpath "${1:?comparison TOML}")
out=$(realpath -m "${2:?output folder}")
shift 2
here=$(cd "$(dirname "$0")" && pwd)
shards=${SHARDS:-4}
mkdir -p "$out"
array=$(CONFIG="$config" OUT="$out" sbatch --parsable --export=ALL --chdir="$out" \
  --array="0-$((shards - 1))" "$@" "$here/compare.sbatch")
merge=$(OUT="$out" sbatch --parsable --export=ALL --chdir="$out" \
  --dependency="afterok:${array%%;*}" "$here/merge.sbatch")
echo "array ${array%%;*} ($shards shards), merge $merge; results in $out/merged"
