//! The model zoo against independent expectations: parameter counts derived by hand (or taken
//! from the upstream implementations), every architecture × method set running, seeding,
//! stable tensor names, weight splitting, BatchNorm modes and checkpoints.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use synfed_models::checkpoint::{self, FORMAT, VERSION};
use synfed_models::{Arch, InputShape, Model, ModelError, ModelSpec};
use synfed_synapse::{Hyper, MethodSet, Mode, Role, SynapseError, SynapticSgd};

const CIFAR: InputShape = InputShape::new(3, 32, 32);
const MNIST: InputShape = InputShape::new(1, 28, 28);

fn build(spec: &ModelSpec) -> Model {
    Model::build(spec, DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{} {}: {e}", spec.arch, spec.methods))
}

/// `n` images of `input` with pixels from U(−1, 1), drawn from a seeded ChaCha stream.
fn images(n: usize, input: InputShape, seed: u64, dtype: DType) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f64> = (0..n * input.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    Tensor::from_vec(
        v,
        (n, input.channels, input.height, input.width),
        &Device::Cpu,
    )
    .unwrap()
    .to_dtype(dtype)
    .unwrap()
}

fn labels(n: usize, classes: usize) -> Tensor {
    let v: Vec<u32> = (0..n).map(|i| (i * 7 % classes) as u32).collect();
    Tensor::from_vec(v, n, &Device::Cpu).unwrap()
}

/// The exact bits of a float tensor, so that comparisons are byte-for-byte.
fn bits(t: &Tensor) -> Vec<u64> {
    let flat = t.flatten_all().unwrap();
    match t.dtype() {
        DType::F32 => flat
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(|x| x.to_bits() as u64)
            .collect(),
        DType::F64 => flat
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Every tensor and every fuzzy factor tensor of a model, as bits, by name.
fn snapshot(model: &Model) -> Vec<(String, Vec<u64>)> {
    let mut all: Vec<(String, Vec<u64>)> = model
        .params()
        .tensors()
        .iter()
        .map(|(n, t)| (n.clone(), bits(t)))
        .collect();
    all.extend(
        model
            .params()
            .fuzzy_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t))),
    );
    all
}

fn names(model: &Model) -> Vec<String> {
    model.params().iter().map(|p| p.name.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Parameter counts
// ---------------------------------------------------------------------------------------------

/// Weights (and bias) of a square-kernel convolution.
fn conv_params(cin: usize, cout: usize, k: usize, bias: bool) -> usize {
    cin * cout * k * k + if bias { cout } else { 0 }
}

/// BatchNorm's trainable γ and β (running statistics are buffers, not parameters).
fn bn_params(c: usize) -> usize {
    2 * c
}

fn linear_params(i: usize, o: usize) -> usize {
    i * o + o
}

/// He et al.'s CIFAR ResNet-(6n+2) with torchvision `BasicBlock`s: bias-free 3×3 convolutions
/// each followed by BatchNorm, a 1×1 conv + BN shortcut whenever the channel count changes
/// (option B), global average pooling and a Linear 64 → classes.
fn resnet_params(input_channels: usize, n: usize, classes: usize) -> usize {
    let mut total = conv_params(input_channels, 16, 3, false) + bn_params(16);
    let mut c_in = 16;
    for c in [16, 32, 64] {
        for _ in 0..n {
            total += conv_params(c_in, c, 3, false) + bn_params(c);
            total += conv_params(c, c, 3, false) + bn_params(c);
            if c_in != c {
                total += conv_params(c_in, c, 1, false) + bn_params(c);
            }
            c_in = c;
        }
    }
    total + linear_params(64, classes)
}

/// Published size of `arch` on `input` with 10 classes, checked for every method set: the
/// mechanisms never change the parameter count (§4.1: splitting keeps all N rows).
fn assert_count(arch: Arch, input: InputShape, expected: usize, sets: &[MethodSet]) {
    for &methods in sets {
        let model = build(&ModelSpec::new(arch, input, 10, methods, 0));
        assert_eq!(
            model.num_params(),
            expected,
            "{arch} on {input} with {methods}"
        );
    }
}

#[test]
fn convnet_has_upstream_parameter_count() {
    // inversefed's ConvNet(width=64) on CIFAR-10 reports 2,904,970 parameters. By hand:
    // conv0 3→64: 1 728 + 64, bn 128               →     1 920
    // conv1 64→128: 73 728 + 128, bn 256           →    74 112
    // conv2 128→128: 147 456 + 128, bn 256         →   147 840
    // conv3 128→256: 294 912 + 256, bn 512         →   295 680
    // conv4…7 256→256: 4 × (589 824 + 256 + 512)   → 2 362 368
    // linear 256·3·3 → 10: 23 040 + 10             →    23 050
    //                                         total  2 904 970
    let by_hand = conv_params(3, 64, 3, true)
        + bn_params(64)
        + conv_params(64, 128, 3, true)
        + bn_params(128)
        + conv_params(128, 128, 3, true)
        + bn_params(128)
        + conv_params(128, 256, 3, true)
        + bn_params(256)
        + 4 * (conv_params(256, 256, 3, true) + bn_params(256))
        + linear_params(256 * 3 * 3, 10);
    assert_eq!(by_hand, 2_904_970);
    assert_count(Arch::ConvNet, CIFAR, 2_904_970, &MethodSet::paper_order());
}

#[test]
fn resnets_match_he_et_al_with_projection_shortcuts() {
    // The widely quoted CIFAR ResNet sizes (He et al. Table 6 "0.27M / 0.46M / 0.85M"; the
    // exact figures of the popular option-A implementation, akamaster/pytorch_resnet_cifar10,
    // are 269,722 / 464,154 / 853,018) use parameter-free identity shortcuts (option A). Our
    // torchvision-style blocks add two 1×1 conv + BN projections (option B):
    //   layer2.0.downsample: 16·32 + 2·32 =   576
    //   layer3.0.downsample: 32·64 + 2·64 = 2 176
    // i.e. 2 752 more parameters for every depth. ResNet20 by hand:
    //   conv1 + bn1:                         432 +    32 =     464
    //   layer1: 3 × 2 × (2 304 + 32)                      =  14 016
    //   layer2: 4 608 + 64 + 9 216 + 64 + 576 + 2 × 2 × (9 216 + 64)   =  51 648
    //   layer3: 18 432 + 128 + 36 864 + 128 + 2 176 + 2 × 2 × (36 864 + 128) = 205 696
    //   fc: 640 + 10                                      =     650
    //   total                                             = 272 474 = 269 722 + 2 752
    let projections = conv_params(16, 32, 1, false)
        + bn_params(32)
        + conv_params(32, 64, 1, false)
        + bn_params(64);
    assert_eq!(projections, 2_752);
    for (arch, n, option_a) in [
        (Arch::ResNet20, 3, 269_722),
        (Arch::ResNet32, 5, 464_154),
        (Arch::ResNet56, 9, 853_018),
    ] {
        let expected = resnet_params(3, n, 10);
        assert_eq!(expected, option_a + projections, "{arch}");
        assert_count(arch, CIFAR, expected, &MethodSet::paper_order());
    }
    assert_eq!(resnet_params(3, 3, 10), 272_474);
    // one input channel only changes the stem: 9·16 fewer weights per missing channel
    assert_count(
        Arch::ResNet20,
        MNIST,
        272_474 - 2 * 9 * 16,
        &[MethodSet::NONE, MethodSet::ALL],
    );
}

#[test]
fn mlps_are_the_papers() {
    // §4.1: 784-1000-10 on MNIST, 3072-3000-3000-10 on CIFAR.
    assert_count(
        Arch::Mlp,
        MNIST,
        784 * 1000 + 1000 + 1000 * 10 + 10,
        &MethodSet::paper_order(),
    );
    assert_eq!(784 * 1000 + 1000 + 1000 * 10 + 10, 795_010);
    let cifar = 3072 * 3000 + 3000 + 3000 * 3000 + 3000 + 3000 * 10 + 10;
    assert_eq!(cifar, 18_252_010);
    // 18 M parameters: the none / I+II+III ends of the table are enough here, the other sets
    // are covered at reduced width below.
    assert_count(Arch::Mlp, CIFAR, cifar, &[MethodSet::NONE, MethodSet::ALL]);
}

#[test]
fn lenet_is_dlgs() {
    // DLG's LeNet: three 5×5 convolutions of 12 channels with bias (strides 2, 2, 1; 32 → 16
    // → 8 → 8) and Linear(12·8·8 = 768 → 10).
    let cifar = (3 * 12 * 25 + 12) + 2 * (12 * 12 * 25 + 12) + (768 * 10 + 10);
    assert_eq!(cifar, 15_826);
    assert_count(Arch::LeNet, CIFAR, cifar, &MethodSet::paper_order());
    // 28 → 14 → 7 → 7: Linear(12·7·7 = 588 → 10)
    let mnist = (12 * 25 + 12) + 2 * (12 * 12 * 25 + 12) + (588 * 10 + 10);
    assert_count(Arch::LeNet, MNIST, mnist, &MethodSet::paper_order());
}

#[test]
fn alexnet_matches_its_architecture_doc() {
    // alexnet.rs: convs 64-192-384-256-256 with kernels 5, 5, 3, 3, 3 ("same" padding, bias),
    // three 2×2 pools (32 → 4), then Linear 256·4·4 → 1024 → 1024 → 10.
    //   conv1   3·64·25 + 64      =     4 864
    //   conv2  64·192·25 + 192    =   307 392
    //   conv3 192·384·9 + 384     =   663 936
    //   conv4 384·256·9 + 256     =   884 992
    //   conv5 256·256·9 + 256     =   590 080
    //   fc1  4096·1024 + 1024     = 4 195 328
    //   fc2  1024·1024 + 1024     = 1 049 600
    //   fc3  1024·10 + 10         =    10 250
    //   total                     = 7 706 442
    assert_eq!(
        4_864 + 307_392 + 663_936 + 884_992 + 590_080 + 4_195_328 + 1_049_600 + 10_250,
        7_706_442
    );
    assert_count(Arch::AlexNet, CIFAR, 7_706_442, &MethodSet::paper_order());
    // on 28×28 the pools floor 28 → 14 → 7 → 3: fc1 takes 256·3·3 = 2 304 features, and the
    // first convolution sees one channel.
    let mnist = 7_706_442 - 2 * 64 * 25 - (4096 - 2304) * 1024;
    assert_count(
        Arch::AlexNet,
        MNIST,
        mnist,
        &[MethodSet::NONE, MethodSet::ALL],
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Every architecture × every method set runs
// ---------------------------------------------------------------------------------------------

fn small_width(arch: Arch) -> usize {
    match arch {
        Arch::Mlp => 8,
        _ => 4,
    }
}

#[test]
fn every_architecture_and_method_set_gives_finite_logits() {
    let batch = 3;
    for input in [CIFAR, MNIST] {
        let x = images(batch, input, 1, DType::F32);
        for arch in Arch::ALL {
            for methods in MethodSet::paper_order() {
                let spec =
                    ModelSpec::new(arch, input, 10, methods, 3).with_width(small_width(arch));
                let model = build(&spec);
                for mode in [Mode::Train, Mode::TrainFrozenStats, Mode::Eval] {
                    let logits = model
                        .forward(&x, mode)
                        .unwrap_or_else(|e| panic!("{arch} {methods} on {input} in {mode:?}: {e}"));
                    assert_eq!(logits.dims(), &[batch, 10], "{arch} {methods} {input}");
                    let v = values(&logits);
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "{arch} {methods} on {input} in {mode:?}: {v:?}"
                    );
                    // the logits depend on the input: not a constant row
                    assert!(
                        v[..10] != v[10..20],
                        "{arch} {methods} on {input}: identical logits for different images"
                    );
                }
                let loss = model
                    .loss(&x, &labels(batch, 10), Mode::TrainFrozenStats)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(loss.is_finite() && loss > 0.0, "{arch} {methods}: {loss}");
            }
        }
    }
}

#[test]
fn a_batch_of_the_wrong_shape_is_a_typed_error() {
    for arch in Arch::ALL {
        let spec = ModelSpec::new(arch, CIFAR, 10, MethodSet::ALL, 3).with_width(small_width(arch));
        let model = build(&spec);
        let wrong = [
            images(2, MNIST, 1, DType::F32),
            images(2, InputShape::new(3, 28, 28), 1, DType::F32),
            images(2, InputShape::new(1, 32, 32), 1, DType::F32),
            // a flattened batch and a single image without batch dimension
            images(2, CIFAR, 1, DType::F32).flatten_from(1).unwrap(),
            images(1, CIFAR, 1, DType::F32).squeeze(0).unwrap(),
        ];
        for x in wrong {
            for mode in [Mode::Train, Mode::Eval] {
                match model.forward(&x, mode) {
                    Err(ModelError::BatchShape { got, want }) => {
                        assert_eq!(got, x.dims());
                        assert_eq!(want, CIFAR);
                    }
                    Err(other) => panic!("{arch} {:?}: wrong error {other}", x.dims()),
                    Ok(y) => panic!("{arch} accepted {:?}, gave {:?}", x.dims(), y.dims()),
                }
            }
        }
        // a right-shaped batch of another size is fine
        let y = model
            .forward(&images(5, CIFAR, 2, DType::F32), Mode::Eval)
            .unwrap();
        assert_eq!(y.dims(), &[5, 10]);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Determinism
// ---------------------------------------------------------------------------------------------

fn small(arch: Arch, methods: MethodSet, seed: u64) -> ModelSpec {
    ModelSpec::new(arch, CIFAR, 10, methods, seed).with_width(small_width(arch))
}

#[test]
fn the_same_spec_gives_the_same_bytes() {
    for arch in Arch::ALL {
        for methods in MethodSet::paper_order() {
            let a = snapshot(&build(&small(arch, methods, 11)));
            let b = snapshot(&build(&small(arch, methods, 11)));
            assert!(!a.is_empty());
            assert_eq!(a, b, "{arch} {methods}");
            assert_eq!(
                a.iter().filter(|(n, _)| n.ends_with(".fuzzy")).count() > 0,
                methods.fuzzy,
                "{arch} {methods}"
            );
        }
    }
}

#[test]
fn another_seed_gives_other_weights_and_factors() {
    for arch in Arch::ALL {
        let a = build(&small(arch, MethodSet::ALL, 11));
        let b = build(&small(arch, MethodSet::ALL, 12));
        for (p, q) in a.params().iter().zip(b.params().iter()) {
            assert_eq!(p.name, q.name);
            let (x, y) = (bits(p.var.as_tensor()), bits(q.var.as_tensor()));
            match p.role {
                // randomly initialised: every tensor differs
                Role::SynapticWeight | Role::Bias => {
                    assert_ne!(x, y, "{arch} {}", p.name);
                    if let (Some(f), Some(g)) = (&p.fuzzy, &q.fuzzy) {
                        assert_ne!(bits(f), bits(g), "{arch} {} fuzzy", p.name);
                    }
                }
                // constants (BatchNorm): the seed does not matter
                _ => assert_eq!(x, y, "{arch} {}", p.name),
            }
        }
    }
}

#[test]
fn method_sets_share_the_initial_weights_and_fuzzy_factors() {
    for arch in Arch::ALL {
        let base = build(&small(arch, MethodSet::NONE, 5));
        let base_tensors: Vec<_> = base
            .params()
            .tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect();
        let fuzzy_only = build(&small(
            arch,
            MethodSet {
                fuzzy: true,
                ..MethodSet::NONE
            },
            5,
        ));
        let factors: Vec<_> = fuzzy_only
            .params()
            .fuzzy_tensors()
            .iter()
            .map(|(n, t)| (n.clone(), bits(t)))
            .collect();
        for methods in MethodSet::paper_order() {
            let m = build(&small(arch, methods, 5));
            let tensors: Vec<_> = m
                .params()
                .tensors()
                .iter()
                .map(|(n, t)| (n.clone(), bits(t)))
                .collect();
            assert_eq!(tensors, base_tensors, "{arch} {methods}");
            if methods.fuzzy {
                let f: Vec<_> = m
                    .params()
                    .fuzzy_tensors()
                    .iter()
                    .map(|(n, t)| (n.clone(), bits(t)))
                    .collect();
                assert_eq!(f, factors, "{arch} {methods}");
            }
        }
    }
}

#[test]
fn fuzzy_factors_exist_exactly_for_synaptic_weights_and_span_their_range() {
    for tau in [0.09, 0.5] {
        for arch in Arch::ALL {
            for methods in MethodSet::paper_order() {
                let mut spec = small(arch, methods, 21);
                spec.hyper = Hyper {
                    tau,
                    ..Hyper::default()
                };
                let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
                let (lo, hi) = (1.0 - tau / 2.0, 1.0 + tau / 2.0);
                let mut all = Vec::new();
                for p in model.params().iter() {
                    let should = methods.fuzzy && p.role == Role::SynapticWeight;
                    assert_eq!(p.fuzzy.is_some(), should, "{arch} {methods} {}", p.name);
                    if let Some(f) = &p.fuzzy {
                        assert_eq!(f.dims(), p.var.dims(), "{arch} {}", p.name);
                        let v = values(f);
                        assert!(
                            v.iter().all(|x| (lo..=hi).contains(x)),
                            "{arch} {} τ = {tau}: factor outside [{lo}, {hi}]",
                            p.name
                        );
                        all.extend(v);
                    }
                }
                if methods.fuzzy {
                    // the whole interval is used (not U(1 ± τ/4), not a constant)
                    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    assert!(
                        min < 1.0 - 0.45 * tau && max > 1.0 + 0.45 * tau,
                        "{arch} τ = {tau}: factors in [{min}, {max}]"
                    );
                } else {
                    assert!(model.params().fuzzy_tensors().is_empty());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Stable names
// ---------------------------------------------------------------------------------------------

#[test]
fn resnet20_uses_torchvision_names() {
    let model = build(&ModelSpec::new(
        Arch::ResNet20,
        CIFAR,
        10,
        MethodSet::NONE,
        0,
    ));
    let names = names(&model);
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.2.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer3.0.downsample.0.weight",
        "layer3.2.bn2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(names.iter().any(|n| n == name), "no `{name}` in {names:?}");
    }
    // no bias on convolutions, no downsample where the shape is kept, no fourth block
    for absent in [
        "conv1.bias",
        "layer1.0.conv1.bias",
        "layer1.0.downsample.0.weight",
        "layer2.1.downsample.0.weight",
        "layer1.3.conv1.weight",
    ] {
        assert!(!names.iter().any(|n| n == absent), "unexpected `{absent}`");
    }
    let get = |n: &str| model.params().get(n).unwrap();
    assert_eq!(get("conv1.weight").var.dims(), &[16, 3, 3, 3]);
    assert_eq!(
        get("layer2.0.downsample.0.weight").var.dims(),
        &[32, 16, 1, 1]
    );
    assert_eq!(get("layer3.2.bn2.weight").var.dims(), &[64]);
    assert_eq!(get("fc.weight").var.dims(), &[10, 64]);
    assert_eq!(get("bn1.running_mean").role, Role::RunningMean);
    // 1 stem conv + 18 block convs + 2 projections + fc = 22 synaptic weights
    let weights = model
        .params()
        .iter()
        .filter(|p| p.role == Role::SynapticWeight)
        .count();
    assert_eq!(weights, 22);
}

#[test]
fn convnet_has_eight_conv_layers_named_from_zero() {
    let model = build(&ModelSpec::new(Arch::ConvNet, CIFAR, 10, MethodSet::NONE, 0).with_width(4));
    let names = names(&model);
    for i in 0..8 {
        for suffix in ["weight", "bias"] {
            let n = format!("conv{i}.{suffix}");
            assert!(names.contains(&n), "no `{n}` in {names:?}");
        }
        let n = format!("bn{i}.running_var");
        assert!(names.contains(&n), "no `{n}`");
    }
    assert!(names.contains(&"linear.weight".to_string()));
    assert!(names.contains(&"linear.bias".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("conv8") || n.starts_with("bn8")),
        "{names:?}"
    );
    // the Linear takes 4w·3·3 features
    assert_eq!(
        model.params().get("linear.weight").unwrap().var.dims(),
        &[10, 4 * 4 * 3 * 3]
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Splitting on ResNet
// ---------------------------------------------------------------------------------------------

fn splitting() -> MethodSet {
    MethodSet {
        splitting: true,
        ..MethodSet::NONE
    }
}

#[test]
fn splitting_a_resnet_of_odd_width_names_the_layer() {
    let spec = ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 0).with_width(3);
    match Model::build(&spec, DType::F32, &Device::Cpu) {
        Err(ModelError::Synapse(SynapseError::NotSplittable {
            layer,
            units,
            gamma,
        })) => {
            assert_eq!((layer.as_str(), units, gamma), ("conv1", 3, 2));
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("width 3 split by Γ = 2 was accepted"),
    }
    let msg = Model::build(&spec, DType::F32, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("conv1") && msg.contains('3'), "{msg}");
    // without splitting the same width is fine
    build(&spec.clone().with_methods(MethodSet {
        splitting: false,
        ..MethodSet::ALL
    }));
}

#[test]
fn the_classifier_is_never_split() {
    // Γ = 3 divides every hidden width (3, 6, 12) but neither 10 nor 7 classes: it builds only
    // because fc is left alone.
    for classes in [10, 7] {
        let mut spec = ModelSpec::new(Arch::ResNet20, CIFAR, classes, splitting(), 4).with_width(3);
        spec.hyper.gamma = 3;
        let model = build(&spec);
        let logits = model
            .forward(&images(4, CIFAR, 9, DType::F32), Mode::Eval)
            .unwrap();
        assert_eq!(logits.dims(), &[4, classes]);
    }
    // a split classifier would tile its outputs: logit k would equal logit k + K/Γ
    let model = build(&ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 4).with_width(4));
    let v = values(
        &model
            .forward(&images(2, CIFAR, 9, DType::F32), Mode::Eval)
            .unwrap(),
    );
    assert_ne!(v[..5], v[5..10], "{v:?}");
}

#[test]
fn splitting_ties_replica_units_of_hidden_layers() {
    // Hidden layers are split: the two rows k and k + N/2 of conv1 feed the same sum, so they
    // receive identical gradients; the classifier's rows do not.
    let model = Model::build(
        &ModelSpec::new(Arch::ResNet20, CIFAR, 10, splitting(), 4).with_width(4),
        DType::F64,
        &Device::Cpu,
    )
    .unwrap();
    let x = images(3, CIFAR, 2, DType::F64);
    let grads = model
        .loss(&x, &labels(3, 10), Mode::TrainFrozenStats)
        .unwrap()
        .backward()
        .unwrap();
    let grad_rows = |name: &str| -> Vec<Vec<f64>> {
        let p = model.params().get(name).unwrap();
        let g = grads.get(p.var.as_tensor()).unwrap();
        let rows = g.dims()[0];
        (0..rows)
            .map(|r| values(&g.narrow(0, r, 1).unwrap()))
            .collect()
    };
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * (1.0 + x.abs()))
    };
    let conv1 = grad_rows("conv1.weight");
    assert_eq!(conv1.len(), 4);
    assert!(close(&conv1[0], &conv1[2]), "{conv1:?}");
    assert!(close(&conv1[1], &conv1[3]), "{conv1:?}");
    assert!(!close(&conv1[0], &conv1[1]), "{conv1:?}");
    let ds = grad_rows("layer3.0.downsample.0.weight");
    assert_eq!(ds.len(), 16);
    assert!(close(&ds[0], &ds[8]) && close(&ds[7], &ds[15]));
    assert!(!close(&ds[0], &ds[1]));
    let fc = grad_rows("fc.weight");
    assert!(!close(&fc[0], &fc[5]), "{fc:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. BatchNorm modes
// ---------------------------------------------------------------------------------------------

fn running_stats(model: &Model) -> Vec<(String, Vec<u64>)> {
    model
        .params()
        .iter()
        .filter(|p| matches!(p.role, Role::RunningMean | Role::RunningVar))
        .map(|p| (p.name.clone(), bits(p.var.as_tensor())))
        .collect()
}

#[test]
fn only_train_mode_updates_running_statistics() {
    let input = InputShape::new(3, 8, 8);
    let spec = ModelSpec::new(Arch::ResNet20, input, 10, MethodSet::NONE, 8).with_width(4);
    let model = Model::build(&spec, DType::F64, &Device::Cpu).unwrap();
    let (b, c) = (3, 4);
    let x = images(b, input, 4, DType::F64);
    let initial = running_stats(&model);
    assert_eq!(initial.len(), 2 * (1 + 18 + 2));

    let frozen = model.forward(&x, Mode::TrainFrozenStats).unwrap();
    assert_eq!(
        running_stats(&model),
        initial,
        "TrainFrozenStats moved the statistics"
    );
    let eval = model.forward(&x, Mode::Eval).unwrap();
    assert_eq!(running_stats(&model), initial, "Eval moved the statistics");
    let train = model.forward(&x, Mode::Train).unwrap();
    let after = running_stats(&model);
    for ((name, before), (_, now)) in initial.iter().zip(&after) {
        assert_ne!(before, now, "Train left `{name}` unchanged");
    }
    // Train and TrainFrozenStats compute the same function; Eval uses the (initial) running
    // statistics instead of the batch's.
    assert_eq!(bits(&train), bits(&frozen));
    assert_ne!(bits(&train), bits(&eval));

    // bn1 after one step, computed by hand: conv1 (3×3, padding 1, no bias) by loops, then
    // running = 0.9 · running + 0.1 · batch statistic, with the unbiased variance.
    let w = values(model.params().get("conv1.weight").unwrap().var.as_tensor());
    let xv = values(&x);
    let (h, wd) = (8usize, 8usize);
    let px = |n: usize, ch: usize, i: isize, j: isize| -> f64 {
        if i < 0 || j < 0 || i >= h as isize || j >= wd as isize {
            0.0
        } else {
            xv[((n * 3 + ch) * h + i as usize) * wd + j as usize]
        }
    };
    let mut want_mean = Vec::new();
    let mut want_var = Vec::new();
    for o in 0..c {
        let mut ys = Vec::new();
        for n in 0..b {
            for i in 0..h as isize {
                for j in 0..wd as isize {
                    let mut s = 0.0;
                    for ch in 0..3 {
                        for di in 0..3isize {
                            for dj in 0..3isize {
                                let k = ((o * 3 + ch) * 3 + di as usize) * 3 + dj as usize;
                                s += w[k] * px(n, ch, i + di - 1, j + dj - 1);
                            }
                        }
                    }
                    ys.push(s);
                }
            }
        }
        let m = ys.iter().sum::<f64>() / ys.len() as f64;
        let var = ys.iter().map(|y| (y - m).powi(2)).sum::<f64>() / (ys.len() - 1) as f64;
        want_mean.push(0.1 * m);
        want_var.push(0.9 + 0.1 * var);
    }
    let got_mean = values(
        model
            .params()
            .get("bn1.running_mean")
            .unwrap()
            .var
            .as_tensor(),
    );
    let got_var = values(
        model
            .params()
            .get("bn1.running_var")
            .unwrap()
            .var
            .as_tensor(),
    );
    for o in 0..c {
        assert!(
            (got_mean[o] - want_mean[o]).abs() < 1e-12,
            "{got_mean:?} vs {want_mean:?}"
        );
        assert!(
            (got_var[o] - want_var[o]).abs() < 1e-12,
            "{got_var:?} vs {want_var:?}"
        );
    }

    // Eval now uses the moved statistics: its output changed; frozen/eval still don't move them
    let eval2 = model.forward(&x, Mode::Eval).unwrap();
    assert_ne!(bits(&eval), bits(&eval2));
    model.forward(&x, Mode::TrainFrozenStats).unwrap();
    assert_eq!(running_stats(&model), after);
}

// ---------------------------------------------------------------------------------------------
// 7. Checkpoints
// ---------------------------------------------------------------------------------------------

fn checkpoint_spec() -> ModelSpec {
    ModelSpec::new(
        Arch::ResNet20,
        InputShape::new(3, 8, 8),
        10,
        MethodSet::ALL,
        31,
    )
    .with_width(4)
}

/// A model with all three mechanisms that has moved away from its initial state: three SGD
/// steps in train mode (weights, running statistics, rejuvenation) and fuzzy factors that are
/// not the ones the seed would give.
fn trained_model() -> Model {
    let spec = checkpoint_spec();
    let mut model = build(&spec);
    let name = "layer2.0.conv1.weight";
    let custom = (model.params().get(name).unwrap().fuzzy.clone().unwrap() * 1.01).unwrap();
    model.params_mut().set_fuzzy(name, &custom).unwrap();
    let mut opt = SynapticSgd::new(model.params(), 0.1, 2);
    let x = images(4, spec.input, 3, DType::F32);
    let y = labels(4, 10);
    for _ in 0..3 {
        let grads = model.loss(&x, &y, Mode::Train).unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
    }
    model
}

fn state() -> serde_json::Value {
    serde_json::json!({ "round": 17, "lr": 0.01, "rng": "340282366920938463463374607431768211455",
        "history": [1.5, 2.25] })
}

#[test]
fn checkpoint_round_trip_restores_everything() {
    let model = trained_model();
    let fresh = build(&checkpoint_spec());
    // precondition: the trained state is not what the spec rebuilds
    let trained = snapshot(&model);
    let initial = snapshot(&fresh);
    let differ = |name: &str| {
        let a = &trained.iter().find(|(n, _)| n == name).unwrap().1;
        let b = &initial.iter().find(|(n, _)| n == name).unwrap().1;
        a != b
    };
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.running_mean",
        "layer3.2.bn2.running_var",
        "fc.bias",
        "layer2.0.conv1.weight.fuzzy",
    ] {
        assert!(differ(name), "training did not change `{name}`");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    checkpoint::save(&model, Some(&state()), &path).unwrap();
    let loaded = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.spec(), model.spec());
    assert_eq!(loaded.state, Some(state()));
    assert_eq!(snapshot(&loaded.model), trained);
    // roles and fuzzy presence survive too
    for (p, q) in model.params().iter().zip(loaded.model.params().iter()) {
        assert_eq!(
            (&p.name, p.role, p.fuzzy.is_some()),
            (&q.name, q.role, q.fuzzy.is_some())
        );
    }
    // and the restored model computes the same function
    let x = images(2, checkpoint_spec().input, 8, DType::F32);
    assert_eq!(
        bits(&model.forward(&x, Mode::Eval).unwrap()),
        bits(&loaded.model.forward(&x, Mode::Eval).unwrap())
    );

    // no state, and in memory
    let bytes = std::fs::read(&path).unwrap();
    checkpoint::save(&model, None, &path).unwrap();
    let no_state = checkpoint::load(&path, DType::F32, &Device::Cpu).unwrap();
    assert!(no_state.state.is_none());
    let mem = checkpoint::from_bytes(&bytes, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(snapshot(&mem.model), trained);
    assert_eq!(checkpoint::read_spec(&bytes).unwrap(), checkpoint_spec());
    // no partial file is left behind
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1);
}

/// Decodes a checkpoint into its tensors and the fields of its `synfed` header, each as JSON
/// text (`format` as the bare string).
fn decode(bytes: &[u8]) -> (HashMap<String, Tensor>, HashMap<String, String>) {
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let meta = meta.metadata().clone().unwrap_or_default();
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&meta[checkpoint::META_KEY]).unwrap();
    let fields = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    (tensors, fields)
}

/// Encodes tensors and header fields (JSON text, or a bare string) as `decode` returns them.
fn encode(tensors: HashMap<String, Tensor>, fields: Option<HashMap<String, String>>) -> Vec<u8> {
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let meta = fields.map(|fields| {
        let header: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_str(&v).unwrap_or(serde_json::Value::String(v));
                (k, value)
            })
            .collect();
        HashMap::from([(
            checkpoint::META_KEY.to_string(),
            serde_json::Value::Object(header).to_string(),
        )])
    });
    safetensors::serialize(list, meta).unwrap()
}

/// A valid checkpoint's bytes.
fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    checkpoint::save(&trained_model(), Some(&state()), &path).unwrap();
    std::fs::read(&path).unwrap()
}

/// The bytes of the valid checkpoint after `edit`.
fn corrupt(
    valid: &[u8],
    edit: impl FnOnce(&mut HashMap<String, Tensor>, &mut HashMap<String, String>),
) -> Vec<u8> {
    let (mut tensors, mut meta) = decode(valid);
    edit(&mut tensors, &mut meta);
    encode(tensors, Some(meta))
}

/// Loads `bytes` from a file; it must fail with an error whose text contains every `needle`.
fn assert_rejected(bytes: &[u8], needles: &[&str], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let err = match checkpoint::load(&path, DType::F32, &Device::Cpu) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e,
    };
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "{what}: `{msg}` does not mention `{needle}`"
        );
    }
    if let ModelError::Checkpoint { path: p, .. } = &err {
        assert_eq!(p, &path.display().to_string(), "{what}: {msg}");
    }
    assert!(
        checkpoint::from_bytes(bytes, DType::F32, &Device::Cpu).is_err(),
        "{what}: accepted in memory"
    );
}

#[test]
fn checkpoint_loading_rejects_bad_files_without_panicking() {
    let valid = valid_bytes();
    checkpoint::from_bytes(&valid, DType::F32, &Device::Cpu).unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for len in [0usize, 7, 8, 100, 10_000] {
        let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        assert_rejected(&noise, &["checkpoint"], &format!("{len} random bytes"));
    }
    // a header that claims to be JSON but is not
    let mut fake = 16u64.to_le_bytes().to_vec();
    fake.extend_from_slice(b"{not json at all");
    assert_rejected(&fake, &["checkpoint"], "bad header");

    // a valid safetensors file without synfed metadata, and with foreign metadata
    let (tensors, _) = decode(&valid);
    assert_rejected(&encode(tensors.clone(), None), &["format"], "no metadata");
    let mut foreign = HashMap::new();
    foreign.insert("format".to_string(), "pt".to_string());
    assert_rejected(&encode(tensors, Some(foreign)), &["pt"], "foreign format");

    // versions
    let v2 = corrupt(&valid, |_, m| {
        m.insert("version".into(), (VERSION + 1).to_string());
    });
    assert_rejected(&v2, &["version", &(VERSION + 1).to_string()], "version + 1");
    let v0 = corrupt(&valid, |_, m| {
        m.insert("version".into(), "0".into());
    });
    assert_rejected(&v0, &["version"], "version 0");
    let junk = corrupt(&valid, |_, m| {
        m.insert("version".into(), "one".into());
    });
    assert_rejected(&junk, &["version"], "malformed version");
    let none = corrupt(&valid, |_, m| {
        m.remove("version");
    });
    assert_rejected(&none, &["version"], "no version");

    // spec and state
    let spec = corrupt(&valid, |_, m| {
        m.remove("spec");
    });
    assert_rejected(&spec, &["spec"], "no spec");
    let arch = corrupt(&valid, |_, m| {
        let s = m["spec"].replace("resnet20", "vgg11");
        m.insert("spec".into(), s);
    });
    assert_rejected(&arch, &["spec"], "unknown arch");
    // a header that is not JSON
    let (tensors, _) = decode(&valid);
    let broken = HashMap::from([(
        checkpoint::META_KEY.to_string(),
        "{\"format\": ".to_string(),
    )]);
    let mut list: Vec<(String, Tensor)> = tensors.into_iter().collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let st = safetensors::serialize(list, Some(broken)).unwrap();
    assert_rejected(
        &st,
        &["malformed", checkpoint::META_KEY],
        "malformed header",
    );
    // re-encoding without an edit is accepted: the rejections above are due to the edits
    let (_, meta) = decode(&valid);
    assert_eq!(meta["format"], FORMAT);
    checkpoint::from_bytes(&corrupt(&valid, |_, _| {}), DType::F32, &Device::Cpu).unwrap();

    // tensors: missing (a weight, a buffer, fuzzy factors), wrong shape, unexpected extra
    for name in [
        "layer1.1.conv2.weight",
        "bn1.running_var",
        "fc.weight.fuzzy",
    ] {
        let b = corrupt(&valid, |t, _| {
            assert!(t.remove(name).is_some(), "{name}");
        });
        assert_rejected(&b, &["missing", name], &format!("missing {name}"));
    }
    let wrong = corrupt(&valid, |t, _| {
        t.insert(
            "layer2.0.conv1.weight".into(),
            Tensor::zeros((8, 4, 3, 2), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(&wrong, &["layer2.0.conv1.weight", "shape"], "wrong shape");
    let wrong_fuzzy = corrupt(&valid, |t, _| {
        t.insert(
            "fc.weight.fuzzy".into(),
            Tensor::ones((10, 15), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(
        &wrong_fuzzy,
        &["fc.weight"],
        "fuzzy factors of the wrong shape",
    );
    let extra = corrupt(&valid, |t, _| {
        t.insert(
            "layer4.0.conv1.weight".into(),
            Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(
        &extra,
        &["unexpected", "layer4.0.conv1.weight"],
        "extra tensor",
    );
    // fuzzy factors for a tensor that has none (a bias)
    let extra_fuzzy = corrupt(&valid, |t, _| {
        t.insert(
            "fc.bias.fuzzy".into(),
            Tensor::ones(10, DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_rejected(&extra_fuzzy, &["fc.bias.fuzzy"], "fuzzy factors of a bias");

    // non-finite values, in a weight, a buffer and fuzzy factors
    for (name, value) in [
        ("layer3.1.conv1.weight", f32::NAN),
        ("bn1.running_var", f32::INFINITY),
        ("conv1.weight.fuzzy", f32::NAN),
    ] {
        let b = corrupt(&valid, |t, _| {
            let old = &t[name];
            let mut v: Vec<f32> = old.flatten_all().unwrap().to_vec1().unwrap();
            let last = v.len() - 1;
            v[last] = value;
            let new = Tensor::from_vec(v, old.dims(), &Device::Cpu).unwrap();
            t.insert(name.to_string(), new);
        });
        assert_rejected(&b, &[name, "NaN"], &format!("{value} in {name}"));
    }

    // truncated files: in the header, in the data, one byte short
    for keep in [4, 40, valid.len() / 2, valid.len() - 1] {
        assert_rejected(
            &valid[..keep],
            &["checkpoint"],
            &format!("first {keep} bytes"),
        );
    }
    // a missing file
    let dir = tempfile::tempdir().unwrap();
    let err = checkpoint::load(
        &dir.path().join("nope.safetensors"),
        DType::F32,
        &Device::Cpu,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn degenerate_specs_are_rejected_not_built() {
    for arch in Arch::ALL {
        for (input, classes, width) in [
            (CIFAR, 10, 0usize),
            (CIFAR, 0, 4),
            (InputShape::new(0, 32, 32), 10, 4),
            (InputShape::new(3, 0, 0), 10, 4),
            (InputShape::new(1, 28, 0), 10, 4),
        ] {
            let spec = ModelSpec::new(arch, input, classes, MethodSet::ALL, 0).with_width(width);
            match Model::build(&spec, DType::F32, &Device::Cpu) {
                Err(ModelError::BadInput { arch: a, .. }) => assert_eq!(a, arch),
                Err(other) => panic!("{arch} {input} {classes} {width}: wrong error {other}"),
                Ok(_) => panic!("{arch} {input} {classes} classes width {width}: built"),
            }
        }
    }
    // a checkpoint whose spec is degenerate is an error too, not a panic
    let valid = valid_bytes();
    for (key, value) in [("width", 0), ("classes", 0)] {
        let bytes = corrupt(&valid, |_, m| {
            let mut spec: serde_json::Value = serde_json::from_str(&m["spec"]).unwrap();
            spec[key] = value.into();
            spec["arch"] = "lenet".into();
            m.insert("spec".into(), spec.to_string());
        });
        assert!(
            checkpoint::from_bytes(&bytes, DType::F32, &Device::Cpu).is_err(),
            "{key} = {value}"
        );
    }
    let bytes = corrupt(&valid, |_, m| {
        let mut spec: serde_json::Value = serde_json::from_str(&m["spec"]).unwrap();
        spec["input"]["height"] = 0.into();
        spec["arch"] = "lenet".into();
        m.insert("spec".into(), spec.to_string());
    });
    assert_rejected(&bytes, &["lenet", "0"], "lenet on 0-pixel images");
}
