//! Pins the exact bytes of training with all three mechanisms (I fuzzy learning rates,
//! II rejuvenation, III splitting): the seeded random streams are part of a run's result, so
//! any change to how the SGD step, fuzzy scaling or rejuvenation consume or apply them must
//! leave these digests unchanged. The expected values were computed before the step was
//! optimised, once per matrix-product path (AVX2+FMA by default, AVX-512 with `--features
//! avx512`); a faster step has to reproduce them bit for bit.

use candle_core::{DType, Device, Tensor};
use synfed_synapse::kernels::{gemm_path, GemmPath};
use synfed_synapse::{Builder, Hyper, LayerOptions, MethodSet, ParamStore, SynapticSgd};

/// FNV-1a over the little-endian bytes of every parameter, in store order.
fn digest(store: &ParamStore) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, t) in store.tensors() {
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        for x in v {
            for b in x.to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

fn input(n: usize, c: usize, hw: usize) -> Tensor {
    let len = n * c * hw * hw;
    let v: Vec<f32> = (0..len)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    Tensor::from_vec(v, (n, c, hw, hw), &Device::Cpu).unwrap()
}

/// Trains a small MLP (48-40-40-10) for `steps` steps and returns the digest and the resets.
fn mlp(methods: MethodSet, steps: usize) -> (u64, usize) {
    let mut b = Builder::new(17, methods, Hyper::default(), DType::F32, &Device::Cpu).unwrap();
    let l1 = b.linear("fc1", 48, 40, LayerOptions::default()).unwrap();
    let l2 = b.linear("fc2", 40, 40, LayerOptions::default()).unwrap();
    let l3 = b.linear("fc3", 40, 10, LayerOptions::classifier()).unwrap();
    let store = b.finish();
    let mut opt = SynapticSgd::new(&store, 0.05, 17);
    let x = input(4, 3, 4).flatten_from(1).unwrap();
    let mut resets = 0;
    for _ in 0..steps {
        let h = l1.forward(&x).unwrap().relu().unwrap();
        let h = l2.forward(&h).unwrap().relu().unwrap();
        let loss = l3.forward(&h).unwrap().sqr().unwrap().mean_all().unwrap();
        resets += opt.step(&loss.backward().unwrap()).unwrap().rejuvenated;
    }
    (digest(&store), resets)
}

/// Trains a small conv net (conv 3→8, conv 8→8, linear) for `steps` steps.
fn conv(methods: MethodSet, steps: usize) -> (u64, usize) {
    let mut b = Builder::new(23, methods, Hyper::default(), DType::F32, &Device::Cpu).unwrap();
    let c1 = b
        .conv2d("conv1", 3, 8, 3, 1, 1, LayerOptions::no_bias())
        .unwrap();
    let c2 = b
        .conv2d("conv2", 8, 8, 3, 1, 1, LayerOptions::default())
        .unwrap();
    let fc = b
        .linear("fc", 8 * 6 * 6, 10, LayerOptions::classifier())
        .unwrap();
    let store = b.finish();
    let mut opt = SynapticSgd::new(&store, 0.05, 23);
    let x = input(2, 3, 6);
    let mut resets = 0;
    for _ in 0..steps {
        let h = c1.forward(&x).unwrap().relu().unwrap();
        let h = c2
            .forward(&h)
            .unwrap()
            .relu()
            .unwrap()
            .flatten_from(1)
            .unwrap();
        let loss = fc.forward(&h).unwrap().sqr().unwrap().mean_all().unwrap();
        resets += opt.step(&loss.backward().unwrap()).unwrap().rejuvenated;
    }
    (digest(&store), resets)
}

const STEPS: usize = 6;

/// (mlp with I+II+III, its resets; conv with I+II+III, its resets; mlp without mechanisms) as
/// pinned for this process's matrix-product path, or `None` where none were computed.
fn pinned() -> Option<((u64, usize), (u64, usize), u64)> {
    match gemm_path() {
        GemmPath::Avx2Fma => Some((
            (0x7c6b10a8d0e687c2, 359),
            (0x32cf4de5eeabb114, 371),
            0xf5429e3ec4eb0b7b,
        )),
        GemmPath::Avx512 => Some((
            (0x9516b2fe82ca0ce9, 359),
            (0xde1b280e9204906e, 371),
            0x811fee303915edd5,
        )),
        GemmPath::Other => {
            println!("no bytes pinned for gemm path {}", gemm_path());
            None
        }
    }
}

#[test]
fn mlp_with_all_mechanisms_keeps_its_bytes() {
    let got = mlp(MethodSet::ALL, STEPS);
    println!("mlp ALL {:#018x} {} ({})", got.0, got.1, gemm_path());
    assert!(got.1 > 0, "rejuvenation must have reset weights");
    if let Some((want, _, _)) = pinned() {
        assert_eq!(got, want);
    }
}

#[test]
fn conv_with_all_mechanisms_keeps_its_bytes() {
    let got = conv(MethodSet::ALL, STEPS);
    println!("conv ALL {:#018x} {} ({})", got.0, got.1, gemm_path());
    assert!(got.1 > 0, "rejuvenation must have reset weights");
    if let Some((_, want, _)) = pinned() {
        assert_eq!(got, want);
    }
}

#[test]
fn mlp_without_mechanisms_keeps_its_bytes() {
    let got = mlp(MethodSet::NONE, STEPS);
    println!("mlp NONE {:#018x} {} ({})", got.0, got.1, gemm_path());
    assert_eq!(got.1, 0);
    if let Some((_, _, want)) = pinned() {
        assert_eq!(got.0, want);
    }
}
