//! Running a whole training step or attack iteration on one of rayon's worker threads.
//!
//! The kernels split their work with rayon. Called from a thread outside rayon's pool (the
//! program's main thread, a tokio blocking thread), every parallel op is a round trip: the job
//! is injected into the pool, a worker is woken, the caller sleeps on a latch until the
//! workers are done and is woken again — hundreds of times per iteration, while the workers
//! spin and yield between ops on the same two cores the caller needs for candle's serial
//! bookkeeping. On a worker, the calling thread takes part in its own parallel ops and the
//! other worker steals halves of them: no hand-over, no third thread. Measured here
//! (interleaved runs): ResNet20 batch-8 attack iteration ~170 → ~155 ms, batch-1 ~41 → ~35 ms,
//! ConvNet ~364 → ~341 ms.
//!
//! While the computation runs, the other workers are kept awake (`stay_awake`): they run the
//! pool's jobs as they appear and spin in between instead of going to sleep after every
//! parallel op, as OpenMP's workers do between parallel regions. Measured here against the same
//! build without it (alternating rounds): ResNet20 training step 20.2 → 18.3 ms, batch-1 attack
//! 16.3 → 13.4 ms, ConvNet 156 → 146 ms, `mlp` step 25.5 → 24.1 ms.
//!
//! A worker waiting for its parallel op may meanwhile run another job of the pool — if another
//! thread has started a computation through [`on_worker`], that whole computation, nested on
//! this thread's stack. synfed keeps per-thread state for a computation (the backward pass's
//! constants and final flag, the parameter substitutions of an unrolled update, the record of
//! BatchNorm inputs), so each computation started here runs with that state reset to the
//! defaults and restores the caller's afterwards: nested computations cannot see or clear each
//! other's.

use crate::{batch_norm_recording, kernels, substitution};
use candle_core::{Tensor, TensorId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f` on a worker of rayon's global pool (directly when already on a rayon worker)
/// with fresh per-thread state, and returns its result; the caller blocks meanwhile.
pub fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        crate::cuda_context::bind_registered_or_warn();
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| stay_awake(&done));
        }
        let _finish = Finish(&done);
        // a computation on the GPU launches and frees on this worker
        crate::cuda_context::bind_registered_or_warn();
        with_fresh_state(f)
    })
}

/// Runs the pool's pending jobs, and spins between them, until `done`: keeps a worker awake
/// while a computation runs on another.
///
/// A computation alternates parallel kernels with short serial stretches (candle's backward
/// bookkeeping, small ops). Left alone, an idle rayon worker yields and then sleeps within
/// microseconds, and every next parallel op must wake it again (a futex call, then the
/// wake-up latency before it steals its half) — hundreds of times per iteration. Spinning
/// here instead is what OpenMP's workers do between parallel regions. The other workers take
/// these jobs first (a steal takes the oldest job), so the computation's own thread never
/// runs one while it waits for a stolen half.
fn stay_awake(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Sets the flag when dropped (also when the computation panics), so that the workers kept
/// awake return and the scope can end.
struct Finish<'a>(&'a AtomicBool);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `f` with this thread's per-computation state reset, and restores it afterwards (also
/// when `f` panics).
fn with_fresh_state<R>(f: impl FnOnce() -> R) -> R {
    let _restore = Restore(Some((
        kernels::backward::take_state(),
        substitution::take_state(),
        batch_norm_recording::take_state(),
    )));
    f()
}

type State = (
    (HashSet<TensorId>, bool),
    Option<HashMap<TensorId, Tensor>>,
    Option<Vec<batch_norm_recording::RecordedInput>>,
);

struct Restore(Option<State>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some((backward, values, recording)) = self.0.take() {
            kernels::backward::restore_state(backward);
            substitution::restore_state(values);
            batch_norm_recording::restore_state(recording);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn runs_on_a_worker_and_returns_the_result() {
        assert!(rayon::current_thread_index().is_none());
        let (index, sum) = on_worker(|| (rayon::current_thread_index(), (1..=10).sum::<i32>()));
        assert!(index.is_some());
        assert_eq!(sum, 55);
        // nested: runs in place
        let nested = on_worker(|| {
            let outer = rayon::current_thread_index();
            on_worker(move || rayon::current_thread_index() == outer)
        });
        assert!(nested);
    }

    /// The workers kept awake during a computation return when it ends — also when it
    /// panics (the panic reaches the caller) — so later computations and plain parallel work
    /// still run on every worker.
    #[test]
    fn workers_kept_awake_are_released_after_a_panic() {
        use rayon::prelude::*;
        let result = std::panic::catch_unwind(|| on_worker(|| panic!("inside the computation")));
        assert!(result.is_err());
        let total: u64 = on_worker(|| (1..=1000u64).into_par_iter().sum());
        assert_eq!(total, 500_500);
        // every worker takes a job again: none is stuck spinning for a finished computation
        let seen: HashSet<usize> = rayon::broadcast(|context| context.index())
            .into_iter()
            .collect();
        assert_eq!(seen.len(), rayon::current_num_threads());
    }

    /// A computation started through `on_worker` sees fresh state even if it lands, nested,
    /// on a thread in the middle of a substitution scope, and leaves that scope intact.
    #[test]
    fn computations_start_with_fresh_state_and_restore_the_callers() {
        let var = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let other = Tensor::new(&[5f32, 6.0], &Device::Cpu).unwrap();
        let values = HashMap::from([(var.as_tensor().id(), other)]);
        rayon::scope(|_| {
            substitution::with_values(values, || {
                // what a job stolen here would run: the body of `on_worker` on this thread
                let inner = with_fresh_state(|| {
                    assert!(!kernels::backward::gradients_are_final());
                    substitution::value(&var).to_vec1::<f32>().unwrap()
                });
                assert_eq!(inner, vec![1.0, 2.0]);
                assert_eq!(
                    substitution::value(&var).to_vec1::<f32>().unwrap(),
                    vec![5.0, 6.0]
                );
            })
        });
    }
}
