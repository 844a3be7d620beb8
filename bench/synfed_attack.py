#!/usr/bin/env python3
"""synfed's half of the attack-loop comparison: runs the real command a user runs,

    synfed attack --model NAME --data demo-cifar10 --batch-size B --iterations N --out DIR

(untrained model, method set `none`, FedSGD in train mode, Inverting Gradients with its
defaults), and prints one JSON object in the shape of `bench/pytorch_reference.py --loop N`:
the loop's milliseconds per iteration as the command reports it (its log line "trial 0: N
iterations in S s, M ms per iteration": wall time of the N iterations / N, the first ones
included), the attack's `seconds` from its metrics.json (setup, loop and final distance),
the process's peak RSS and the processor (`lscpu`'s model name).

    python3 bench/synfed_attack.py --threads 2 --loop 40 --one convnet:attack:1
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_reference import processor  # noqa: E402

LOOP_LINE = re.compile(r"trial 0: (\d+) iterations in ([0-9.]+) s, ([0-9.]+) ms per iteration")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default="target/release/synfed")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--loop", type=int, required=True, metavar="N")
    ap.add_argument("--one", required=True, metavar="NAME:attack:B")
    ap.add_argument("--bn-mode", default="train", choices=["train", "eval"])
    args = ap.parse_args()
    name, kind, batch = args.one.split(":")
    if kind != "attack":
        sys.exit(f"{args.one}: only attack workloads run as a command")
    with tempfile.TemporaryDirectory(prefix="synfed-attack-") as out:
        command = [args.binary, "attack", "--model", name, "--data", "demo-cifar10",
                   "--batch-size", batch, "--iterations", str(args.loop), "--bn-mode", args.bn_mode,
                   "--out", out, "--log", "info"]
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        log = ANSI.sub("", run.stdout + run.stderr)
        if run.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{log}")
        found = LOOP_LINE.search(log)
        if not found:
            sys.exit(f"no loop timing in the log of {' '.join(command)}:\n{log}")
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
    version = subprocess.run([args.binary, "--version"], capture_output=True, text=True).stdout.split()
    workload = f"{name}/{kind}_b{batch}" + ("" if args.bn_mode == "train" else "_eval")
    print(json.dumps({
        "workload": workload,
        "measure": "attack loop",
        "iterations": int(found.group(1)),
        "ms_per_iteration": float(found.group(3)),
        "attack_seconds": round(metrics["seconds"], 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "threads": args.threads,
        "device": "cpu",
        "cpu": processor(),
        "synfed": version[-1] if version else "unknown",
        "command": " ".join(command[:-4]),
    }), flush=True)


if __name__ == "__main__":
    main()
