//! The malicious server's imprint (Robbing the Fed) read back by the analytic attack, on a
//! hand-built batch: eight demo-MNIST digits chosen so that each lies alone in its bin of the
//! imprinted layer (bins computed here from the sent biases and the images' mean, independently
//! of the readout). Theory: every image alone in its bin comes back exactly, with or without
//! weight splitting (III): a split unit's replica rows each receive the unit's gradient.

use candle_core::{DType, Device, Tensor};
use synfed_attack::pipeline::{attack_capture, AttackConfig};
use synfed_attack::scoring::score;
use synfed_attack::AttackKind;
use synfed_models::{Arch, InputShape, Model, ModelSpec};
use synfed_server::imprint::{imprint, split_factor, statistic_distribution};
use synfed_synapse::{MethodSet, Mode};
use synfed_wire::{Capture, CaptureMeta};

const BINS: usize = 128;

/// The bin of statistic `s` among thresholds `t` (ascending): the last i with s > t_i.
fn bin_of(s: f64, t: &[f64]) -> Option<usize> {
    t.iter().rposition(|&ti| s > ti)
}

#[test]
fn eight_images_alone_in_their_bins_come_back_exactly() {
    eight_images_alone_in_their_bins(MethodSet::NONE);
}

#[test]
fn weight_splitting_does_not_stop_the_imprint() {
    eight_images_alone_in_their_bins("III".parse().unwrap());
}

fn eight_images_alone_in_their_bins(methods: MethodSet) {
    let splits = synfed_data::load("demo-mnist", None).unwrap();
    let mut spec = ModelSpec::new(Arch::Mlp, InputShape::new(1, 28, 28), 10, methods, 3);
    let gamma = split_factor(&spec);
    assert_eq!(gamma, if methods.splitting { 2 } else { 1 });
    // BINS distinct units: Γ·BINS rows
    spec.width = Some(BINS * gamma);
    let model = Model::build(&spec, DType::F32, &Device::Cpu).unwrap();
    let global = model.params().tensors();
    let statistic = statistic_distribution(&splits.test, &splits.normalization).unwrap();
    let (imprinted, record) =
        imprint(&global, None, &statistic, &splits.normalization, gamma).unwrap();
    assert_eq!(record.bins, BINS);
    for (p, (name, t)) in model.params().iter().zip(&imprinted) {
        assert_eq!(&p.name, name);
        p.var.set(&t.copy().unwrap()).unwrap();
    }
    // thresholds as sent: t_i = −(sum of the biases of unit i's replica rows i + γ·BINS)
    let biases = imprinted[1].1.to_vec1::<f32>().unwrap();
    let thresholds: Vec<f64> = (0..BINS)
        .map(|i| {
            -(0..gamma)
                .map(|g| f64::from(biases[i + g * BINS]))
                .sum::<f64>()
        })
        .collect();
    assert!(thresholds.windows(2).all(|w| w[0] <= w[1]));

    // the first eight training digits whose mean lies in a bin of its own, away from the edges
    let mut chosen: Vec<(usize, usize)> = Vec::new();
    for index in 0..splits.train.len() {
        let (x, _) = splits
            .train
            .batch(&[index], &splits.normalization, &Device::Cpu, DType::F32)
            .unwrap();
        let s = f64::from(x.mean_all().unwrap().to_scalar::<f32>().unwrap());
        let Some(bin) = bin_of(s, &thresholds) else {
            continue;
        };
        let margin = |t: f64| (s - t).abs() > 1e-4;
        let clear = margin(thresholds[bin]) && thresholds.get(bin + 1).is_none_or(|&t| margin(t));
        let wide = thresholds.get(bin + 1).is_none_or(|&t| t > thresholds[bin]);
        if clear && wide && chosen.iter().all(|&(_, b)| b != bin) {
            chosen.push((index, bin));
        }
        if chosen.len() == 8 {
            break;
        }
    }
    assert_eq!(chosen.len(), 8);
    let indices: Vec<usize> = chosen.iter().map(|&(i, _)| i).collect();
    let (x, y) = splits
        .train
        .batch(&indices, &splits.normalization, &Device::Cpu, DType::F32)
        .unwrap();
    let update = model.gradients(&x, &y, Mode::TrainFrozenStats).unwrap();
    let meta = CaptureMeta {
        imprint: Some(record),
        ..CaptureMeta::fedsgd(
            spec.clone(),
            1,
            "client-0",
            8,
            splits.normalization.clone(),
            None,
        )
    };
    let capture = Capture::new(meta, &model, update).unwrap();
    let config = AttackConfig {
        attack: AttackKind::Analytic,
        ..Default::default()
    };
    let attack = attack_capture(&capture, &config, &Device::Cpu, |_, _, _| {}).unwrap();
    let recovered = &attack.reconstruction.best().images;

    // relative error of each true image against its nearest reconstruction
    let rows = |t: &Tensor| -> Vec<Vec<f32>> { t.flatten_from(1).unwrap().to_vec2().unwrap() };
    let (truth, back) = (rows(&x), rows(recovered));
    let norm = |v: &[f32]| v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
    let exact = truth
        .iter()
        .filter(|t| {
            let best = back
                .iter()
                .map(|r| {
                    let d: Vec<f32> = r.iter().zip(t.iter()).map(|(a, b)| a - b).collect();
                    norm(&d) / norm(t)
                })
                .fold(f64::INFINITY, f64::min);
            best <= 1e-4
        })
        .count();
    let labels: Vec<u32> = y.to_vec1().unwrap();
    let scores = score(
        &attack.model,
        Mode::Eval,
        recovered,
        &x,
        &splits.normalization,
        &attack.labels,
        &labels,
    )
    .unwrap();
    let above = scores
        .images
        .iter()
        .filter(|i| i.scores.psnr > 40.0)
        .count();
    println!(
        "imprint, mlp {methods} of {BINS} units, B = 8 in distinct bins {:?}: {exact} of 8 to \
         ≤ 1e-4 relative error, {above} of 8 above 40 dB",
        chosen.iter().map(|&(_, b)| b).collect::<Vec<_>>()
    );
    assert_eq!(exact, 8, "every image alone in its bin comes back exactly");
    assert_eq!(above, 8);
}
