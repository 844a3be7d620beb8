#!/usr/bin/env python3
"""PyTorch-CPU reference timings for synfed's performance goal (issue 5).

Runs the same five workloads, with the same shapes, as synfed's criterion benches
(`cargo bench --bench train_step`, `cargo bench --bench attack_iteration`), so that the two can
be compared side by side on one machine:

  mlp/train_b8         mlp 3072-3000-3000-10 (ReLU), one SGD training step, batch 8
  resnet20/train_b8    ResNet-20 (option-B shortcuts, as inversefed), one training step, batch 8
  resnet20/attack_b8   one Inverting-Gradients iteration: forward, parameter gradients with
  resnet20/attack_b1   create_graph, 1 − cos against a target gradient over all parameters,
  convnet/attack_b1    + 1e-4 · TV, backward to the images (BatchNorm on batch statistics)

and, with --loop N (`--one NAME:attack:B`), the whole attack loop of `synfed attack` instead of
one bare iteration: Inverting Gradients as synfed runs it with its defaults — seeded Gaussian
noise, per iteration the image gradient above, its sign, Adam (lr 0.1, dropped ×0.1 at 3/8,
5/8 and 7/8 of the iterations), the objective read back as a number (synfed checks it and
writes it to its trace) and every channel clamped to its pixel range; after the loop the
final gradient distance that picks the best trial. It prints the loop's milliseconds per
iteration (wall time of the N iterations / N, the first ones included, as a user waits for
them) beside the bare iteration's median.

Each workload runs in its own process (so that its peak RSS can be read), with
torch.set_num_threads(--threads, default: all cores). Prints one JSON object per workload:
median and quartiles of the wall time in ms, the peak RSS in MiB and the processor (`lscpu`'s
model name).

    python3 bench/pytorch_reference.py [--threads 2] [--repeats 20]
    python3 bench/pytorch_reference.py --threads 2 --loop 40 --one convnet:attack:1
    python3 bench/pytorch_reference.py --device cuda [--repeats 50]

With --device cuda the GPU workloads run instead (ResNet-20 training step and attack iteration
at batch 8, ConvNet's at batch 1: those of `side_by_side --device cuda`), in full f32 (TF32
off for cuDNN convolutions and cuBLAS products, as candle computes f32), each step followed
by torch.cuda.synchronize() so that the wall time covers the GPU's work.

Needs PyTorch from PyPI (`pip install torch`).
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def processor():
    """`lscpu`'s model name (the processor every figure is recorded beside)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return "unknown"


# CIFAR-10's normalisation as synfed's data sets apply it: the pixel box is [(0 − m)/s, (1 − m)/s]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def attack_loop(model, params, x_true, y, iterations):
    """synfed attack's Inverting-Gradients loop with its defaults (attack/src/inversion.rs):
    returns (ms per iteration over the loop, seconds of the final distance)."""
    import torch
    import torch.nn.functional as F

    target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x_true), y), params)]
    tn = sum(t.pow(2).sum() for t in target).sqrt()
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    lo, hi = (0 - mean) / std, (1 - mean) / std
    gen = torch.Generator().manual_seed(0)
    trial = torch.randn(x_true.shape, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([trial], lr=0.1)
    drops = [math.floor(f * iterations) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=drops, gamma=0.1)

    def objective(x, create_graph):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=create_graph)
        dot = sum((g * t).sum() for g, t in zip(grads, target))
        gn = sum(g.pow(2).sum() for g in grads).sqrt()
        distance = 1 - dot / (gn * tn)
        tv = (x[:, :, :, :-1] - x[:, :, :, 1:]).abs().mean() + (x[:, :, :-1, :] - x[:, :, 1:, :]).abs().mean()
        return distance, tv

    started = time.perf_counter()
    for i in range(iterations):
        opt.zero_grad(set_to_none=True)
        distance, tv = objective(trial, True)
        total = distance + 1e-4 * tv
        (gx,) = torch.autograd.grad(total, trial)
        # the values synfed checks for divergence and writes to its trace
        values = (total.item(), distance.item(), tv.item())
        if not math.isfinite(values[0]):
            raise RuntimeError(f"diverged at iteration {i}")
        trial.grad = gx.sign()
        opt.step()
        sched.step()
        with torch.no_grad():
            trial.copy_(torch.max(torch.min(trial, hi), lo))
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    objective(trial, False)[0].item()
    return 1e3 * loop_s / iterations, time.perf_counter() - started


def build(name):
    import torch.nn as nn

    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(3072, 3000), nn.ReLU(),
            nn.Linear(3000, 3000), nn.ReLU(),
            nn.Linear(3000, 10),
        ), (3, 32, 32)

    if name == "resnet20":
        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                self.b1 = nn.BatchNorm2d(cout)
                self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                self.b2 = nn.BatchNorm2d(cout)
                self.down = None
                if stride != 1 or cin != cout:
                    self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

            def forward(self, x):
                h = self.b1(self.c1(x)).relu()
                h = self.b2(self.c2(h))
                return (h + (x if self.down is None else self.down(x))).relu()

        class ResNet20(nn.Module):
            def __init__(self):
                super().__init__()
                self.c1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
                self.b1 = nn.BatchNorm2d(16)
                blocks, cin = [], 16
                for stage, cout in enumerate([16, 32, 64]):
                    for i in range(3):
                        blocks.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1))
                        cin = cout
                self.blocks = nn.Sequential(*blocks)
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                h = self.blocks(self.b1(self.c1(x)).relu())
                return self.fc(h.mean((2, 3)))

        return ResNet20(), (3, 32, 32)

    if name == "convnet":
        # Geiping et al.'s ConvNet as upstream builds it: 6 conv-BN-ReLU, max-pool 3,
        # 2 conv-BN-ReLU, max-pool 3, Linear (width 64: 2,904,970 parameters).
        w = 64
        widths = [3, w, 2 * w, 2 * w, 4 * w, 4 * w, 4 * w, 4 * w, 4 * w]
        layers = []
        for i in range(8):
            layers += [nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1), nn.BatchNorm2d(widths[i + 1]), nn.ReLU()]
            if i in (5, 7):
                layers.append(nn.MaxPool2d(3))
        layers += [nn.Flatten(), nn.Linear(4 * w * 3 * 3, 10)]
        return nn.Sequential(*layers), (3, 32, 32)
    raise ValueError(name)


def workload(spec, repeats, device="cpu", loop=0, bn_eval=False):
    import torch
    import torch.nn.functional as F

    torch.manual_seed(1)
    if device == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    name, kind, batch = spec
    model, shape = build(name)
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device) * 2 - 1
    y = torch.full((batch,), 3, dtype=torch.long, device=device)
    params = [p for p in model.parameters() if p.requires_grad]

    if kind == "train":
        model.train()
        opt = torch.optim.SGD(params, lr=0.01)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
    elif bn_eval:
        # BatchNorm on the running statistics (`synfed attack --bn-mode eval`)
        model.eval()
    else:
        # batch statistics without touching the running ones (synfed's TrainFrozenStats)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
    if kind == "attack":
        if loop:
            ms, final_s = attack_loop(model, params, x, y, loop)
            return {
                "workload": f"{name}/{kind}_b{batch}" + ("_eval" if bn_eval else ""),
                "measure": "attack loop",
                "iterations": loop,
                "ms_per_iteration": round(ms, 2),
                "final_distance_s": round(final_s, 3),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "threads": torch.get_num_threads(),
                "device": device,
                "cpu": processor(),
                "torch": torch.__version__,
            }
        target = [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), y), params)]
        trial = (torch.rand(batch, *shape, device=device) * 2 - 1).requires_grad_(True)

        def step():
            grads = torch.autograd.grad(F.cross_entropy(model(trial), y), params, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(grads, target))
            gn = sum(g.pow(2).sum() for g in grads).sqrt()
            tn = sum(t.pow(2).sum() for t in target).sqrt()
            tv = (trial[:, :, :, :-1] - trial[:, :, :, 1:]).abs().mean() + (trial[:, :, :-1, :] - trial[:, :, 1:, :]).abs().mean()
            objective = 1 - dot / (gn * tn) + 1e-4 * tv
            (gx,) = torch.autograd.grad(objective, trial)
            if device == "cuda":
                torch.cuda.synchronize()
            return gx

    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    q = statistics.quantiles(times, n=4)
    return {
        "workload": f"{name}/{kind}_b{batch}",
        "median_ms": round(statistics.median(times), 2),
        "q1_ms": round(q[0], 2),
        "q3_ms": round(q[2], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": torch.get_num_threads(),
        "device": device,
        "cpu": processor(),
        "torch": torch.__version__,
    }


WORKLOADS = [
    ("mlp", "train", 8),
    ("resnet20", "train", 8),
    ("resnet20", "attack", 8),
    ("resnet20", "attack", 1),
    ("convnet", "attack", 1),
]
GPU_WORKLOADS = [
    ("resnet20", "train", 8),
    ("resnet20", "attack", 8),
    ("convnet", "train", 1),
    ("convnet", "attack", 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--loop", type=int, default=0, metavar="N",
                    help="attack workloads: time synfed attack's whole loop of N iterations")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        name, kind, batch, *mode = args.one.split(":")
        loop = args.loop if kind == "attack" else 0
        bn_eval = mode == ["eval"]
        print(json.dumps(workload((name, kind, int(batch)), args.repeats, args.device, loop, bn_eval)))
        return
    for name, kind, batch in GPU_WORKLOADS if args.device == "cuda" else WORKLOADS:
        out = subprocess.run(
            [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats),
             "--device", args.device, "--loop", str(args.loop), "--one", f"{name}:{kind}:{batch}"],
            check=True, capture_output=True, text=True,
        )
        print(out.stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
