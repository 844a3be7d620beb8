//! Pins the exact bytes of training the model zoo's `mlp` and `resnet20` with all three
//! mechanisms (I fuzzy learning rates, II rejuvenation, III splitting) and without them.
//!
//! The seeded random streams are part of a run's result: a faster SGD step, fuzzy scaling,
//! rejuvenation or splitting must reproduce these digests bit for bit. The mlp is wide enough
//! (2.2 M weights) that rejuvenation's parallel pieces, segments and stream refills all take
//! part; resnet20 has its full width (BatchNorm running statistics included in the digest). The
//! expected values were computed by the step as it was before it was optimised, once per
//! matrix-product path (AVX2+FMA by default, AVX-512 with `--features avx512`).

mod common;

use candle_core::{DType, Tensor};
use common::*;
use synfed_models::{Arch, Model, ModelSpec};
use synfed_synapse::kernels::{backward_final, gemm_path, GemmPath};
use synfed_synapse::{on_worker, MethodSet, Mode, SynapticSgd};

/// FNV-1a over the bytes of `data`, continuing from `h`.
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Digest of every tensor (parameters, buffers, fuzzy factors) by name, in store order.
fn digest(model: &Model) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325;
    let mut all = model.params().tensors();
    all.extend(model.params().fuzzy_tensors());
    for (name, t) in all {
        h = fnv(h, name.as_bytes());
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        for x in v {
            h = fnv(h, &x.to_le_bytes());
        }
    }
    h
}

/// What `steps` training steps left: the weights' digest, the resets of each step, the
/// rejuvenation stream's final position and the bits of every loss.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    digest: u64,
    resets: Vec<usize>,
    position: u128,
    losses: Vec<u32>,
}

fn train(spec: &ModelSpec, batch: usize, steps: usize) -> Outcome {
    let model = build(spec);
    let mut opt = SynapticSgd::new(model.params(), 0.01, spec.seed);
    let (mut resets, mut losses) = (Vec::new(), Vec::new());
    for step in 0..steps {
        let x = images(batch, CIFAR, 100 + step as u64, DType::F32);
        let y = labels(batch, 10);
        let (loss, report) = on_worker(|| {
            let loss: Tensor = model.loss(&x, &y, Mode::Train).unwrap();
            let report = opt.step(&backward_final(&loss).unwrap()).unwrap();
            (loss.to_scalar::<f32>().unwrap(), report)
        });
        losses.push(loss.to_bits());
        resets.push(report.rejuvenated);
    }
    Outcome {
        digest: digest(&model),
        resets,
        position: opt.rng_position(),
        losses,
    }
}

fn mlp(methods: MethodSet) -> Outcome {
    train(
        &ModelSpec::new(Arch::Mlp, CIFAR, 10, methods, 41).with_width(600),
        4,
        3,
    )
}

fn resnet20(methods: MethodSet) -> Outcome {
    train(
        &ModelSpec::new(Arch::ResNet20, CIFAR, 10, methods, 43),
        2,
        2,
    )
}

/// The pinned values of this process's matrix-product path (they differ between gemm's AVX2+FMA
/// and AVX-512 kernels; see `synfed_synapse::kernels::gemm_path`), or `None` where none were
/// computed.
fn pinned() -> Option<Pinned> {
    match gemm_path() {
        GemmPath::Avx2Fma => Some(Pinned {
            mlp_all: Outcome {
                digest: 0xec6685ce92fda967,
                resets: vec![0xf6a3, 0xb721, 0x8b70],
                position: 0x699378,
                losses: vec![0x4016589a, 0x401405dd, 0x4014b48e],
            },
            resnet20_all: Outcome {
                digest: 0x02d5731e81bf1d08,
                resets: vec![0x1ea3, 0x16ae],
                position: 0x8af02,
                losses: vec![0x401b26f8, 0x4013763a],
            },
            mlp_none: 0x35cd587c240124f0,
            resnet20_none: 0xded7795d0964d33a,
        }),
        GemmPath::Avx512 => Some(Pinned {
            mlp_all: Outcome {
                digest: 0xb1dc3a663bd4b77a,
                resets: vec![0xf6a3, 0xb721, 0x8b70],
                position: 0x699378,
                losses: vec![0x40165899, 0x401405dd, 0x4014b48d],
            },
            resnet20_all: Outcome {
                digest: 0x1180926faa437347,
                resets: vec![0x1ea3, 0x16ae],
                position: 0x8af02,
                losses: vec![0x401b26f8, 0x4013763a],
            },
            mlp_none: 0xc6a948ee0ab31cc6,
            resnet20_none: 0x4c9b92d198573933,
        }),
        GemmPath::Other => {
            println!("no bytes pinned for gemm path {}", gemm_path());
            None
        }
    }
}

struct Pinned {
    mlp_all: Outcome,
    resnet20_all: Outcome,
    mlp_none: u64,
    resnet20_none: u64,
}

#[test]
fn mlp_with_all_mechanisms_keeps_its_bytes() {
    let got = mlp(MethodSet::ALL);
    println!("mlp ALL {got:x?} ({})", gemm_path());
    assert!(got.resets.iter().all(|&r| r > 1000), "{:?}", got.resets);
    if let Some(p) = pinned() {
        assert_eq!(got, p.mlp_all);
    }
}

#[test]
fn resnet20_with_all_mechanisms_keeps_its_bytes() {
    let got = resnet20(MethodSet::ALL);
    println!("resnet20 ALL {got:x?} ({})", gemm_path());
    assert!(got.resets.iter().all(|&r| r > 100), "{:?}", got.resets);
    if let Some(p) = pinned() {
        assert_eq!(got, p.resnet20_all);
    }
}

#[test]
fn without_mechanisms_the_bytes_are_kept_too() {
    let (m, r) = (mlp(MethodSet::NONE), resnet20(MethodSet::NONE));
    println!("mlp NONE {m:x?}\nresnet20 NONE {r:x?} ({})", gemm_path());
    assert_eq!((m.position, r.position), (0, 0));
    if let Some(p) = pinned() {
        assert_eq!((m.digest, r.digest), (p.mlp_none, p.resnet20_none));
    }
}
