//! Layers against hand-computed values: weight splitting (Eq. 5) on Linear and Conv2d,
//! identical gradients of split replicas, unchanged parameter counts, BatchNorm arithmetic.

use candle_core::{DType, Device, Tensor};
use synfed_synapse::{Builder, Hyper, LayerOptions, MethodSet, Mode, Role};

fn builder(methods: MethodSet) -> Builder {
    Builder::new(3, methods, Hyper::default(), DType::F64, &Device::Cpu).unwrap()
}

const SPLIT: MethodSet = MethodSet {
    fuzzy: false,
    rejuvenation: false,
    splitting: true,
};

fn set(store: &synfed_synapse::ParamStore, name: &str, t: Tensor) {
    store.set(name, &t).unwrap();
}

#[test]
fn split_linear_matches_eq5_by_hand() {
    let mut b = builder(SPLIT);
    let layer = b.linear("fc", 2, 4, LayerOptions::default()).unwrap();
    let store = b.finish();
    let cpu = &Device::Cpu;
    set(
        &store,
        "fc.weight",
        Tensor::new(&[[1f64, 2.], [3., 4.], [5., 6.], [7., 8.]], cpu).unwrap(),
    );
    set(
        &store,
        "fc.bias",
        Tensor::new(&[0.1f64, 0.2, 0.3, 0.4], cpu).unwrap(),
    );
    let x = Tensor::new(&[[1f64, -1.], [2., 0.5]], cpu).unwrap();
    let y = layer.forward(&x).unwrap().to_vec2::<f64>().unwrap();
    // pre-activations of x0: [-1+0.1, -1+0.2, -1+0.3, -1+0.4] = [-0.9, -0.8, -0.7, -0.6]
    // unit 0 = u0 + u2, unit 1 = u1 + u3, tiled twice
    let x0 = [-1.6, -1.4, -1.6, -1.4];
    // x1: [3+0.1, 8+0.2, 13+0.3, 18+0.4] → [16.4, 26.6]
    let x1 = [16.4, 26.6, 16.4, 26.6];
    for (got, want) in y.iter().zip([x0, x1]) {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }
}

#[test]
fn split_conv_matches_eq5_by_hand() {
    let mut b = builder(SPLIT);
    let conv = b
        .conv2d("conv", 1, 4, 1, 1, 0, LayerOptions::default())
        .unwrap();
    let store = b.finish();
    let cpu = &Device::Cpu;
    // 1×1 kernels: channel c = k_c · x + b_c
    set(
        &store,
        "conv.weight",
        Tensor::new(&[1f64, 10., 100., 1000.], cpu)
            .unwrap()
            .reshape((4, 1, 1, 1))
            .unwrap(),
    );
    set(
        &store,
        "conv.bias",
        Tensor::new(&[1f64, 2., 3., 4.], cpu).unwrap(),
    );
    let x = Tensor::new(&[1f64, 2., 3.], cpu)
        .unwrap()
        .reshape((1, 1, 1, 3))
        .unwrap();
    let y = conv.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 4, 1, 3]);
    let y = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    // channel 0 = (1 + 100)·x + 4, channel 1 = (10 + 1000)·x + 6
    let c0: Vec<f64> = [1., 2., 3.].iter().map(|x| 101. * x + 4.).collect();
    let c1: Vec<f64> = [1., 2., 3.].iter().map(|x| 1010. * x + 6.).collect();
    let want = [c0.clone(), c1.clone(), c0, c1].concat();
    assert_eq!(y, want);
}

#[test]
fn replicas_of_a_split_unit_receive_identical_gradients() {
    let mut b = builder(SPLIT);
    let conv = b
        .conv2d("conv", 2, 6, 3, 1, 1, LayerOptions::default())
        .unwrap();
    let fc = b
        .linear("fc", 6 * 4 * 4, 4, LayerOptions::default())
        .unwrap();
    let head = b.linear("head", 4, 3, LayerOptions::classifier()).unwrap();
    let store = b.finish();
    let x = Tensor::randn(0f64, 1., (2, 2, 4, 4), &Device::Cpu).unwrap();
    let h = conv
        .forward(&x)
        .unwrap()
        .relu()
        .unwrap()
        .flatten_from(1)
        .unwrap();
    let h = fc.forward(&h).unwrap().tanh().unwrap();
    let loss = head.forward(&h).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for (name, units) in [
        ("conv.weight", 6),
        ("fc.weight", 4),
        ("conv.bias", 6),
        ("fc.bias", 4),
    ] {
        let g = grads.get(store.get(name).unwrap().var.as_tensor()).unwrap();
        let half = units / 2;
        let first = g.narrow(0, 0, half).unwrap();
        let second = g.narrow(0, half, half).unwrap();
        let diff = (first - &second)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(diff, 0.0, "{name}");
        let size = second
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(size > 0.0, "{name} has no gradient at all");
    }
    // the classifier is not split: its rows differ
    let g = grads
        .get(store.get("head.weight").unwrap().var.as_tensor())
        .unwrap();
    assert_ne!(
        g.get(0).unwrap().to_vec1::<f64>().unwrap(),
        g.get(1).unwrap().to_vec1::<f64>().unwrap()
    );
}

#[test]
fn splitting_keeps_the_parameter_count_and_values() {
    let build = |methods| {
        let mut b = builder(methods);
        b.conv2d("c", 3, 8, 3, 1, 1, LayerOptions::default())
            .unwrap();
        b.linear("f", 8, 10, LayerOptions::classifier()).unwrap();
        b.finish()
    };
    let (plain, split) = (build(MethodSet::NONE), build(MethodSet::ALL));
    assert_eq!(plain.trainable_elem_count(), 3 * 8 * 9 + 8 + 8 * 10 + 10);
    assert_eq!(plain.trainable_elem_count(), split.trainable_elem_count());
    // the seed gives the same initial weights whatever the methods
    for ((_, a), (_, b)) in plain.tensors().iter().zip(split.tensors().iter()) {
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
    }
    // fuzzy factors only on synaptic weights
    for p in split.iter() {
        assert_eq!(
            p.fuzzy.is_some(),
            p.role == Role::SynapticWeight,
            "{}",
            p.name
        );
    }
}

#[test]
fn indivisible_layer_is_a_clear_error() {
    let mut b = builder(SPLIT);
    let err = b
        .scope("block", |b| b.linear("fc", 4, 5, LayerOptions::default()))
        .unwrap_err();
    assert!(err.to_string().contains("block.fc"), "{err}");
    // the classifier is never split, so any width is fine there
    b.linear("head", 4, 5, LayerOptions::classifier()).unwrap();
}

#[test]
fn batch_norm_matches_hand_computation_and_updates_stats_only_in_train_mode() {
    let mut b = builder(MethodSet::NONE);
    let bn = b.batch_norm2d("bn", 1).unwrap();
    let store = b.finish();
    let x = Tensor::new(&[1f64, 2., 3., 6.], &Device::Cpu)
        .unwrap()
        .reshape((2, 1, 1, 2))
        .unwrap();
    let running = |s: &str| {
        store
            .get(s)
            .unwrap()
            .var
            .as_tensor()
            .to_vec1::<f64>()
            .unwrap()[0]
    };
    // mean 3, biased var (4 + 1 + 0 + 9) / 4 = 3.5, unbiased 14/3
    let y = bn
        .forward(&x, Mode::TrainFrozenStats)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let s = (3.5f64 + 1e-5).sqrt();
    let want = [-2. / s, -1. / s, 0., 3. / s];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-12);
    }
    assert_eq!(
        (running("bn.running_mean"), running("bn.running_var")),
        (0.0, 1.0)
    );
    bn.forward(&x, Mode::Train).unwrap();
    assert!((running("bn.running_mean") - 0.3).abs() < 1e-12);
    assert!((running("bn.running_var") - (0.9 + 0.1 * 14. / 3.)).abs() < 1e-12);
    let y = bn
        .forward(&x, Mode::Eval)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let rv = (0.9f64 + 0.1 * 14. / 3. + 1e-5).sqrt();
    assert!((y[3] - (6. - 0.3) / rv).abs() < 1e-12);
}
