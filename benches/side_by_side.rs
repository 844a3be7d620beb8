//! synfed's half of the side-by-side comparison with PyTorch (issue 5): the five workloads of
//! `bench/pytorch_reference.py`, with its protocol, so that the two print comparable lines.
//!
//! Each workload runs in its own process (this program re-executed with `--one`), so that its
//! peak resident memory can be read: 3 warm-up repetitions, then `--repeats` (default 20)
//! timed ones; one JSON object per workload with the median and quartiles in ms and the peak
//! RSS in MiB. Workloads: the CIFAR `mlp` training step (batch 8), ResNet20's training step
//! (batch 8), one gradient-inversion iteration on ResNet20 (batch 8 and 1) and on ConvNet
//! (batch 1), all untrained, f32, on the CPU.
//!
//! With `--device cuda` (a build with `--features cuda`) the GPU workloads run instead: the
//! training step and the attack iteration of ResNet20 at batch 8 and of ConvNet at batch 1,
//! each step followed by a device synchronisation, so that the wall time covers the GPU's work.
//!
//!     cargo bench --bench side_by_side [-- --repeats 20]
//!     python3 bench/pytorch_reference.py --threads 2
//!     side_by_side --device cuda            (scripts/gpu-check.sh runs both sides)

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use std::process::Command;
use std::time::Instant;
use synfed_attack::inversion::{evaluate, InversionConfig, Target};
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_synapse::kernels::backward_final;
use synfed_synapse::{on_worker, MethodSet, Mode, SynapticSgd};

/// The binary's allocator and process settings (one copy, shared with `crates/cli/main.rs`).
#[path = "../crates/cli/process.rs"]
mod process;

const WORKLOADS: [(&str, &str, usize); 5] = [
    ("mlp", "train", 8),
    ("resnet20", "train", 8),
    ("resnet20", "attack", 8),
    ("resnet20", "attack", 1),
    ("convnet", "attack", 1),
];
const GPU_WORKLOADS: [(&str, &str, usize); 4] = [
    ("resnet20", "train", 8),
    ("resnet20", "attack", 8),
    ("convnet", "train", 1),
    ("convnet", "attack", 1),
];
const CIFAR: InputShape = InputShape::new(3, 32, 32);

fn uniform(n: usize, seed: u64, device: &Device) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * CIFAR.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(v, (n, 3, 32, 32), device).expect("images")
}

/// Peak resident set of this process in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The processor's model name (`/proc/cpuinfo`, what `lscpu` prints as "Model name"), recorded
/// beside every figure.
fn processor() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().replace('"', "'"))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Sorted wall times of `repeats` steps (each followed by `sync`) after `warmups`, and sorted
/// host times: until the step returned, before `sync` waited for the device. On a GPU, a
/// host time close to the wall time means the step is bound by launching its kernels.
fn measure(
    mut step: impl FnMut(),
    sync: impl Fn(),
    warmups: usize,
    repeats: usize,
) -> (Vec<f64>, Vec<f64>) {
    for _ in 0..warmups {
        step();
        sync();
    }
    let (mut times, mut host): (Vec<f64>, Vec<f64>) = (0..repeats)
        .map(|_| {
            let t = Instant::now();
            step();
            let launched = t.elapsed().as_secs_f64() * 1e3;
            sync();
            (t.elapsed().as_secs_f64() * 1e3, launched)
        })
        .unzip();
    times.sort_by(f64::total_cmp);
    host.sort_by(f64::total_cmp);
    (times, host)
}

/// Python's `statistics.quantiles(n=4)` (exclusive method) and the median, of sorted data.
fn quartiles(sorted: &[f64]) -> (f64, f64, f64) {
    let at = |p: f64| {
        let n = sorted.len();
        let h = (n as f64 + 1.0) * p;
        let (lo, frac) = (h.floor() as usize, h - h.floor());
        let lo = lo.clamp(1, n);
        let hi = (lo + 1).min(n);
        sorted[lo - 1] + frac * (sorted[hi - 1] - sorted[lo - 1])
    };
    (at(0.25), at(0.5), at(0.75))
}

fn one(name: &str, kind: &str, batch: usize, (warmups, repeats): (usize, usize), device: &Device) {
    let arch: Arch = name.parse().expect("architecture");
    let spec = ModelSpec::new(arch, CIFAR, 10, MethodSet::NONE, 1);
    let model = Model::build(&spec, DType::F32, device).expect("model");
    let labels = Tensor::new(vec![3u32; batch], device).expect("labels");
    // the GPU runs asynchronously: a step is over when the device has finished its work
    let sync = || device.synchronize().expect("synchronize");
    let (times, host) = if kind == "train" {
        let x = uniform(batch, 1, device);
        let mut opt = SynapticSgd::new(model.params(), 0.01, 1);
        measure(
            || {
                // on a rayon worker, as `train_epoch` runs a step
                on_worker(|| {
                    let loss = model.loss(&x, &labels, Mode::Train).expect("forward");
                    opt.step(&backward_final(&loss).expect("backward"))
                        .expect("step");
                });
            },
            sync,
            warmups,
            repeats,
        )
    } else {
        let gradient = model
            .gradients(&uniform(batch, 1, device), &labels, Mode::TrainFrozenStats)
            .expect("target gradient");
        let target = Target {
            local_steps: None,
            model: &model,
            gradient,
            labels,
            mode: Mode::TrainFrozenStats,
            bounds: vec![(-2.0, 2.0); 3],
        };
        let config = InversionConfig::default();
        let trial = Var::from_tensor(&uniform(batch, 2, device)).expect("trial");
        measure(
            || {
                evaluate(&target, &config, trial.as_tensor()).expect("iteration");
            },
            sync,
            warmups,
            repeats,
        )
    };
    let (q1, median, q3) = quartiles(&times);
    let (_, host_median, _) = quartiles(&host);
    println!(
        "{{\"workload\": \"{name}/{kind}_b{batch}\", \"median_ms\": {median:.2}, \"q1_ms\": {q1:.2}, \
         \"q3_ms\": {q3:.2}, \"host_ms\": {host_median:.2}, \"peak_rss_mib\": {:.1}, \"threads\": {}, \
         \"device\": \"{}\", \"cpu\": \"{}\", \"synfed\": \"{}\"}}",
        peak_rss_mib(),
        rayon::current_num_threads(),
        if device.is_cuda() { "cuda" } else { "cpu" },
        processor(),
        env!("CARGO_PKG_VERSION")
    );
}

fn main() {
    process::setup();
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let repeats: usize = value("--repeats").map_or(20, |r| r.parse().expect("--repeats N"));
    // 0 for a profiler that should see one step only (scripts/gpu-check.sh)
    let warmups: usize = value("--warmups").map_or(3, |r| r.parse().expect("--warmups N"));
    let device_name = value("--device").unwrap_or_else(|| "cpu".into());
    let device = match device_name.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0).expect("CUDA device 0 (build with --features cuda)"),
        other => panic!("--device {other}: expected cpu or cuda"),
    };
    if let Some(spec) = value("--one") {
        let parts: Vec<&str> = spec.split(':').collect();
        let batch = parts[2].parse().expect("batch");
        one(parts[0], parts[1], batch, (warmups, repeats), &device);
        return;
    }
    let exe = std::env::current_exe().expect("this program");
    let workloads: &[_] = if device.is_cuda() {
        &GPU_WORKLOADS
    } else {
        &WORKLOADS
    };
    for &(name, kind, batch) in workloads {
        let out = Command::new(&exe)
            .args(["--repeats", &repeats.to_string()])
            .args(["--device", &device_name])
            .args(["--one", &format!("{name}:{kind}:{batch}")])
            .output()
            .expect("run a workload");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
