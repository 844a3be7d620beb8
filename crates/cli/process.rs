//! Process-wide settings synfed's programs apply before their first thread: the allocator,
//! its memory policy, and candle's environment.
//!
//! They belong to a program, not to a library: they set environment variables, which is only
//! sound while one thread exists, and choose the global allocator, which a process has one of.
//! The `synfed` binary and the benches (`benches/*.rs`, which include this file with
//! `#[path]`) share this one copy, so that what is measured is what runs.
//!
//! candle reads two environment variables once: `CANDLE_GRAD_DO_NOT_DETACH`, at each thread's
//! first backward pass — without it the gradient of a gradient (the attack's objective) is
//! silently wrong — and `CANDLE_BARRIER_POOL_SPIN_LIMIT`, when its element-wise worker pool
//! starts. That pool's workers spin 25,000 rounds after every large element-wise op by
//! default; on a 2-core machine the spinning worker takes a core from the `gemm` threads of
//! the next convolution (a ResNet20 forward pass took 42 ms with spinning, 31 ms without).
//! Even without spinning, handing an element-wise op to that pool costs a wake-up and a
//! `sched_yield` loop per op; what candle still computes element-wise here (mostly the
//! backward pass's gradient sums) is memory-bound and short, so synfed gives the pool no
//! workers (`CANDLE_NUM_THREADS=1`): those ops run on the calling thread, and the heavy
//! kernels (`synfed_synapse::kernels`) use rayon's threads. Batch-8 ResNet20 attack iteration ~10 %
//! faster, ConvNet's ~8 %.

/// mimalloc, keeping freed memory ([`keep_allocator_memory`]).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Applies every setting. Call at the very start of `main` (or of a benchmark), before any
/// runtime or thread exists: setting environment variables is not thread-safe.
pub fn setup() {
    configure_candle();
    keep_allocator_memory();
}

/// Sets candle's variables (the pool's spin limit and size only where the user has not chosen
/// them).
fn configure_candle() {
    std::env::set_var("CANDLE_GRAD_DO_NOT_DETACH", "1");
    for (name, value) in [
        ("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0"),
        ("CANDLE_NUM_THREADS", "1"),
    ] {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

/// mimalloc v3's `mi_option_purge_delay` (its option enum has no Rust constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// That option's default in mimalloc v3 (milliseconds): the check that the index is right.
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Has mimalloc keep freed memory for reuse instead of returning it to the kernel.
///
/// Training steps and attack iterations allocate and free tensors of megabytes to tens of
/// megabytes every time. The system allocator unmaps such blocks on free and page-faults them
/// in again on the next allocation (the CIFAR MLP's training step: 183 ms with it, 90 ms with
/// mimalloc). mimalloc still returns idle memory after a delay ("purging"), which a ConvNet
/// attack iteration pays for again (900 ms per iteration with purging, 715 ms without). The
/// option is changed only while it holds mimalloc v3's default, so a mimalloc that numbers its
/// options differently is left alone.
fn keep_allocator_memory() {
    // SAFETY: mimalloc's option reads and writes are plain accesses to its option table,
    // valid at any time from any thread.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        }
    }
}
