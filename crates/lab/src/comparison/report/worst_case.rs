//! The worst case per image over several attacks: what a user must assume when an attacker
//! may pick whichever attack suits each image. A mechanism that defeats one optimisation
//! attack can still leak everything to another, so a comparison of several attacks reports,
//! per image and per measure, the attacker's best: the highest PSNR and SSIM and the lowest
//! MSE any attack achieved (each measure on its own: the best PSNR and the best SSIM may come
//! from different attacks).
//!
//! The worst case of a batch is a record like an attack's — the per-image bests averaged over
//! the batch as a batch's scores are — so that the very same tables, paired tests and charts
//! read it. Results of older comparisons carry no per-image scores; there the worst case is
//! taken per batch. MSE in the normalised input space and the label accuracy are not kept per
//! image and are taken per batch (lowest MSE, highest accuracy). Ties go to the attack listed
//! first in `attacks`.

use crate::comparison::cell_result::AttackRecord;
use crate::comparison::collect::Located;
use synfed_attack::metrics::ImageScores;
use synfed_attack::AttackKind;

/// The worst case of every cell, and which attack gave it how often.
pub struct WorstCase {
    /// The cells with one worst-case record per batch in place of the attacks' records.
    pub cells: Vec<Located>,
    /// Per attack (the comparison's order): the images (batches, for results without
    /// per-image scores) whose best PSNR, best SSIM and lowest MSE it gave.
    pub wins: Vec<(AttackKind, Wins)>,
}

/// How often an attack gave the attacker's best value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wins {
    pub psnr: usize,
    pub ssim: usize,
    pub mse: usize,
}

/// The worst case over `attacks` (in this order) of every cell of `cells`.
pub fn worst_case(attacks: &[AttackKind], cells: &[Located]) -> WorstCase {
    let mut wins: Vec<(AttackKind, Wins)> = attacks.iter().map(|&a| (a, Wins::default())).collect();
    let mut out = Vec::with_capacity(cells.len());
    for l in cells {
        let mut batches: Vec<(&str, &str)> = Vec::new();
        for a in &l.result.attacks {
            if !batches.contains(&(a.state.as_str(), a.client.as_str())) {
                batches.push((&a.state, &a.client));
            }
        }
        let records = batches
            .iter()
            .filter_map(|&(state, client)| {
                // the batch's records in the order of `attacks`
                let of_batch: Vec<&AttackRecord> = attacks
                    .iter()
                    .flat_map(|k| {
                        l.result
                            .attacks
                            .iter()
                            .find(|a| a.attack == *k && a.state == state && a.client == client)
                    })
                    .collect();
                worst_of_batch(&of_batch, &mut wins)
            })
            .collect();
        let mut result = l.result.clone();
        result.attacks = records;
        out.push(Located {
            result,
            dir: l.dir.clone(),
            state_dirs: l.state_dirs.clone(),
            attack_folder: None,
        });
    }
    WorstCase { cells: out, wins }
}

/// The index of the best of `values` (`better(a, b)`: a beats b); the first of equals wins.
fn best(values: impl Iterator<Item = f64>, better: impl Fn(f64, f64) -> bool) -> Option<usize> {
    let mut found: Option<(usize, f64)> = None;
    for (i, v) in values.enumerate() {
        if v.is_nan() {
            continue;
        }
        match found {
            Some((_, b)) if !better(v, b) => {}
            _ => found = Some((i, v)),
        }
    }
    found.map(|(i, _)| i)
}

/// The worst-case record of one batch from its attacks' records (`None` when there are none),
/// counting each measure's winner in `wins`.
fn worst_of_batch(
    records: &[&AttackRecord],
    wins: &mut [(AttackKind, Wins)],
) -> Option<AttackRecord> {
    let first = *records.first()?;
    let mut win = |attack: AttackKind, measure: fn(&mut Wins) -> &mut usize| {
        if let Some((_, w)) = wins.iter_mut().find(|(a, _)| *a == attack) {
            *measure(w) += 1;
        }
    };
    let higher = |a: f64, b: f64| a > b;
    let lower = |a: f64, b: f64| a < b;
    let images = first.images.len();
    let per_image = images > 0 && records.iter().all(|r| r.images.len() == images);
    let (mse, psnr, ssim, best_images) = if per_image {
        let mut best_images = Vec::with_capacity(images);
        for j in 0..images {
            let pick = |f: fn(&ImageScores) -> f64, better: &dyn Fn(f64, f64) -> bool| {
                best(records.iter().map(|r| f(&r.images[j])), better).unwrap_or(0)
            };
            let (p, s, m) = (
                pick(|i| i.psnr, &higher),
                pick(|i| i.ssim, &higher),
                pick(|i| i.mse, &lower),
            );
            win(records[p].attack, |w| &mut w.psnr);
            win(records[s].attack, |w| &mut w.ssim);
            win(records[m].attack, |w| &mut w.mse);
            best_images.push(ImageScores {
                mse: records[m].images[j].mse,
                psnr: records[p].images[j].psnr,
                ssim: records[s].images[j].ssim,
            });
        }
        let n = images as f64;
        let mean = |f: fn(&ImageScores) -> f64| best_images.iter().map(f).sum::<f64>() / n;
        (
            mean(|i| i.mse),
            mean(|i| i.psnr),
            mean(|i| i.ssim),
            best_images,
        )
    } else {
        let pick = |f: fn(&AttackRecord) -> f64, better: &dyn Fn(f64, f64) -> bool| {
            best(records.iter().map(|r| f(r)), better).unwrap_or(0)
        };
        let (p, s, m) = (
            pick(|r| r.psnr, &higher),
            pick(|r| r.ssim, &higher),
            pick(|r| r.mse, &lower),
        );
        win(records[p].attack, |w| &mut w.psnr);
        win(records[s].attack, |w| &mut w.ssim);
        win(records[m].attack, |w| &mut w.mse);
        (records[m].mse, records[p].psnr, records[s].ssim, Vec::new())
    };
    let batch_best = |f: fn(&AttackRecord) -> f64, better: &dyn Fn(f64, f64) -> bool| {
        best(records.iter().map(|r| f(r)), better)
            .map(|i| f(records[i]))
            .unwrap_or(f64::NAN)
    };
    Some(AttackRecord {
        state: first.state.clone(),
        client: first.client.clone(),
        mse,
        psnr,
        ssim,
        mse_normalized: batch_best(|r| r.mse_normalized, &lower),
        label_accuracy: batch_best(|r| r.label_accuracy, &higher),
        seconds: records.iter().map(|r| r.seconds).sum(),
        final_descent: None,
        converged: None,
        attack: first.attack,
        images: best_images,
    })
}

/// The cells of `cells` with only `attack`'s records, showing the pictures of `folder`.
pub fn attack_view(cells: &[Located], attack: AttackKind, folder: Option<String>) -> Vec<Located> {
    cells
        .iter()
        .map(|l| {
            let mut result = l.result.clone();
            result.attacks.retain(|a| a.attack == attack);
            Located {
                result,
                dir: l.dir.clone(),
                state_dirs: l.state_dirs.clone(),
                attack_folder: folder.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(attack: AttackKind, client: &str, images: &[(f64, f64, f64)]) -> AttackRecord {
        let images: Vec<ImageScores> = images
            .iter()
            .map(|&(mse, psnr, ssim)| ImageScores { mse, psnr, ssim })
            .collect();
        let n = images.len() as f64;
        AttackRecord {
            state: "untrained".into(),
            client: client.into(),
            mse: images.iter().map(|i| i.mse).sum::<f64>() / n,
            psnr: images.iter().map(|i| i.psnr).sum::<f64>() / n,
            ssim: images.iter().map(|i| i.ssim).sum::<f64>() / n,
            mse_normalized: 0.0,
            label_accuracy: 1.0,
            seconds: 1.0,
            final_descent: None,
            converged: None,
            attack,
            images,
        }
    }

    #[test]
    fn each_measure_takes_its_own_best_per_image() {
        use AttackKind::{Analytic, Ig};
        // image 0: ig has the better PSNR, analytic the better SSIM and MSE;
        // image 1: analytic is exact (PSNR ∞) and ties ig's SSIM (first listed wins)
        let ig = record(Ig, "client-0", &[(0.01, 20.0, 0.4), (0.02, 17.0, 0.9)]);
        let analytic = record(
            Analytic,
            "client-0",
            &[(0.005, 19.0, 0.6), (0.0, f64::INFINITY, 0.9)],
        );
        let mut wins = vec![(Ig, Wins::default()), (Analytic, Wins::default())];
        let w = worst_of_batch(&[&ig, &analytic], &mut wins).unwrap();
        assert_eq!(
            w.images[0],
            ImageScores {
                mse: 0.005,
                psnr: 20.0,
                ssim: 0.6
            }
        );
        assert_eq!(w.images[1].psnr, f64::INFINITY);
        assert_eq!(w.images[1].ssim, 0.9);
        assert_eq!(w.mse, 0.0025);
        assert_eq!(w.ssim, 0.75);
        assert_eq!(w.psnr, f64::INFINITY);
        assert_eq!(
            wins[0].1,
            Wins {
                psnr: 1,
                ssim: 1,
                mse: 0
            }
        );
        assert_eq!(
            wins[1].1,
            Wins {
                psnr: 1,
                ssim: 1,
                mse: 2
            }
        );
    }

    #[test]
    fn results_without_per_image_scores_take_the_best_batch() {
        use AttackKind::{Dlg, Ig};
        let mut ig = record(Ig, "client-0", &[(0.01, 20.0, 0.4)]);
        let mut dlg = record(Dlg, "client-0", &[(0.03, 15.0, 0.7)]);
        ig.images.clear();
        dlg.images.clear();
        let mut wins = vec![(Ig, Wins::default()), (Dlg, Wins::default())];
        let w = worst_of_batch(&[&ig, &dlg], &mut wins).unwrap();
        assert_eq!((w.mse, w.psnr, w.ssim), (0.01, 20.0, 0.7));
        assert_eq!(
            wins[0].1,
            Wins {
                psnr: 1,
                ssim: 0,
                mse: 1
            }
        );
        assert_eq!(
            wins[1].1,
            Wins {
                psnr: 0,
                ssim: 1,
                mse: 0
            }
        );
    }
}
