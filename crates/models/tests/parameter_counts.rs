//! Parameter counts against independent expectations: every architecture's size derived by
//! hand (or taken from the upstream implementation it reproduces), for every method set, since
//! the mechanisms must never change the number of parameters.

mod common;

use common::*;
use synfed_models::{Arch, InputShape, ModelSpec};
use synfed_synapse::MethodSet;

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
