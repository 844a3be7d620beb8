//! The paper's learning-speed measure (§4.1): train for a fixed number of epochs, then
//! retrospectively find "the epoch where accuracy was not increasing for five following
//! consecutive epochs" (early stopping) and report that epoch and the accuracy there.

/// Index of the early-stopping epoch in `accuracies` (one entry per epoch, in order): the best
/// epoch so far at the first moment it has been followed by `patience` epochs without a strict
/// improvement; if that never happens, the (first) epoch of maximum accuracy. `None` when empty.
pub fn early_stopping_epoch(accuracies: &[f64], patience: usize) -> Option<usize> {
    let mut best = 0;
    let mut since = 0;
    for (i, &acc) in accuracies.iter().enumerate().skip(1) {
        if acc > accuracies[best] {
            best = i;
            since = 0;
        } else {
            since += 1;
            if since >= patience {
                return Some(best);
            }
        }
    }
    (!accuracies.is_empty()).then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        // best at index 2, then five epochs without exceeding 0.8 → stop at index 2, even
        // though a later epoch (index 8) is higher
        let acc = [0.5, 0.7, 0.8, 0.79, 0.8, 0.75, 0.78, 0.8, 0.9];
        assert_eq!(early_stopping_epoch(&acc, 5), Some(2));
        // with a patience of 6 the run reaches index 8
        assert_eq!(early_stopping_epoch(&acc, 6), Some(8));
    }

    #[test]
    fn without_a_plateau_it_is_the_maximum() {
        assert_eq!(early_stopping_epoch(&[0.1, 0.3, 0.2, 0.4], 5), Some(3));
        assert_eq!(early_stopping_epoch(&[0.4, 0.4, 0.4], 5), Some(0));
        assert_eq!(early_stopping_epoch(&[], 5), None);
    }
}
