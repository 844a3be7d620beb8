//! Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer 2017, "Machine Learning with
//! Adversaries: Byzantine Tolerant Gradient Descent").
//!
//! Each update's score is the sum of its squared L2 distances to its n − f − 2 nearest
//! neighbours among the round's n updates. An update near many others scores low. A Byzantine
//! one must sit close to the honest cluster to score low, and then it cannot pull far. Krum
//! takes the single best-scored update. Multi-Krum averages the m best (weighted by bounded
//! example counts, as the plain mean), which keeps more of the honest batch while still leaving
//! outliers out. The guarantee needs n ≥ 2f + 3. The configuration enforces it through
//! `sampling.min_updates`, and a smaller round is refused here with a typed error. Ties in score
//! go to the earlier update in the round's canonical order, so the choice is deterministic.

use super::mean::weighted_mean;
use super::{common_length, AggregationError};

/// Squared L2 distance.
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Every update's Krum score with `f` Byzantine updates tolerated: the sum of its n − f − 2
/// smallest squared distances to the others. Needs n ≥ 2f + 3.
pub fn scores(updates: &[&[f64]], f: usize) -> Result<Vec<f64>, AggregationError> {
    let n = updates.len();
    let needed = f.saturating_mul(2).saturating_add(3);
    if n < needed {
        return Err(AggregationError::TooFewUpdates {
            rule: "krum",
            needed,
            got: n,
        });
    }
    common_length(updates)?;
    let mut distance = vec![vec![0f64; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let d = squared_distance(updates[i], updates[j]);
            distance[i][j] = d;
            distance[j][i] = d;
        }
    }
    let neighbours = n - f - 2;
    Ok(distance
        .into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            row.remove(i);
            row.sort_by(f64::total_cmp);
            row[..neighbours].iter().sum()
        })
        .collect())
}

/// The indices of the `m` best (smallest) scores, ties to the smaller index, in ascending
/// index order (the canonical order their mean is summed in).
pub fn best(scores: &[f64], m: usize) -> Vec<usize> {
    let mut ranked: Vec<usize> = (0..scores.len()).collect();
    ranked.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    ranked.truncate(m);
    ranked.sort_unstable();
    ranked
}

/// Krum: the best-scored update and its index.
pub fn krum(updates: &[&[f64]], f: usize) -> Result<(Vec<f64>, usize), AggregationError> {
    let scores = scores(updates, f)?;
    let chosen = best(&scores, 1)[0];
    Ok((updates[chosen].to_vec(), chosen))
}

/// Multi-Krum: the `weights`-weighted mean of the `m` best-scored updates (`None`: n − f), and
/// their indices.
pub fn multi_krum(
    updates: &[&[f64]],
    weights: &[f64],
    f: usize,
    m: Option<usize>,
) -> Result<(Vec<f64>, Vec<usize>), AggregationError> {
    let scores = scores(updates, f)?;
    let most = updates.len() - f;
    let m = m.unwrap_or(most);
    if m == 0 || m > most {
        return Err(AggregationError::TooFewUpdates {
            rule: "multi-krum",
            needed: m.saturating_add(f).max(1),
            got: updates.len(),
        });
    }
    let chosen = best(&scores, m);
    let picked: Vec<&[f64]> = chosen.iter().map(|&i| updates[i]).collect();
    let picked_weights: Vec<f64> = chosen.iter().map(|&i| weights[i]).collect();
    Ok((weighted_mean(&picked, &picked_weights)?, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    // a (0,0), b (1,0), c (0,2), d (1,1), e (10,10). Squared distances:
    //   a–b 1, a–c 4, a–d 2, a–e 200, b–c 5, b–d 1, b–e 181, c–d 2, c–e 164, d–e 162.
    // f = 1, n = 5: n − f − 2 = 2 nearest neighbours:
    //   a: 1 + 2 = 3, b: 1 + 1 = 2, c: 2 + 4 = 6, d: 1 + 2 = 3, e: 162 + 164 = 326.
    const POINTS: [&[f64]; 5] = [
        &[0.0, 0.0],
        &[1.0, 0.0],
        &[0.0, 2.0],
        &[1.0, 1.0],
        &[10.0, 10.0],
    ];

    #[test]
    fn krum_scores_of_five_points_by_hand() {
        assert_eq!(scores(&POINTS, 1).unwrap(), vec![3.0, 2.0, 6.0, 3.0, 326.0]);
        // f = 0: three nearest neighbours: a 1+2+4, b 1+1+5, c 2+4+5, d 1+2+2, e 162+164+181
        assert_eq!(
            scores(&POINTS, 0).unwrap(),
            vec![7.0, 7.0, 11.0, 5.0, 507.0]
        );
    }

    #[test]
    fn krum_takes_the_best_and_multi_krum_averages_the_m_best() {
        let (update, chosen) = krum(&POINTS, 1).unwrap();
        assert_eq!((update, chosen), (vec![1.0, 0.0], 1));
        // m = 3: b (2), then a and d (3 each, a first) — e is never chosen
        let weights = [1.0, 2.0, 8.0, 1.0, 100.0];
        let (mean, chosen) = multi_krum(&POINTS, &weights, 1, Some(3)).unwrap();
        assert_eq!(chosen, vec![0, 1, 3]);
        // (1·(0,0) + 2·(1,0) + 1·(1,1)) / 4
        assert_eq!(mean, vec![0.75, 0.25]);
        // default m = n − f = 4: every point but e
        let (mean, chosen) = multi_krum(&POINTS, &[1.0; 5], 1, None).unwrap();
        assert_eq!(chosen, vec![0, 1, 2, 3]);
        assert_eq!(mean, vec![0.5, 0.75]);
    }

    #[test]
    fn ties_go_to_the_earlier_update() {
        let same: [&[f64]; 5] = [&[1.0], &[1.0], &[1.0], &[1.0], &[1.0]];
        assert_eq!(krum(&same, 1).unwrap().1, 0);
        assert_eq!(best(&[3.0, 1.0, 1.0, 0.5], 2), vec![1, 3]);
        assert_eq!(best(&[3.0, 1.0, 1.0, 2.0], 2), vec![1, 2]);
    }

    #[test]
    fn too_few_updates_or_a_bad_m_are_typed_errors() {
        assert!(matches!(
            scores(&POINTS[..4], 1),
            Err(AggregationError::TooFewUpdates {
                needed: 5,
                got: 4,
                ..
            })
        ));
        assert!(scores(&POINTS[..3], 0).is_ok());
        assert!(scores(&POINTS, usize::MAX).is_err());
        assert!(multi_krum(&POINTS, &[1.0; 5], 1, Some(0)).is_err());
        assert!(multi_krum(&POINTS, &[1.0; 5], 1, Some(5)).is_err());
        assert!(scores(&[&[1.0], &[1.0], &[1.0, 2.0]], 0).is_err());
    }
}
