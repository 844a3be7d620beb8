//! Keeping a CUDA device usable from every thread that touches its tensors.
//!
//! candle computes on a CUDA device through a driver-API context (cudarc's), and a context is
//! *current* per thread. cudarc makes it current before allocations, copies and kernel
//! launches, but not when a buffer is freed: a tensor dropped on a thread where the context
//! is not current fails its `cuMemFreeAsync`, cudarc records that error in the context, and
//! the next operation on *any* thread returns `CUDA_ERROR_INVALID_CONTEXT` (seen on an H200:
//! FedSGD clients' tasks on tokio's threads, and the attack after a federation, failed this
//! way). A synfed process computes on one device, so that device is registered once
//! ([`register`]; [`crate::Builder::new`] does it for every model built on a GPU) and made
//! current on each thread that computes or drops tensors: the rayon worker of every
//! computation ([`crate::on_worker`]), the threads of synfed's tokio runtimes and the
//! comparison's cell threads when they start ([`bind_registered`]). Binding is a no-op for the
//! CPU and in builds without the `cuda` feature.

use crate::error::Result;
use candle_core::Device;
use std::sync::Mutex;

/// The process's GPU, once a model or a command has opened one.
static REGISTERED: Mutex<Option<Device>> = Mutex::new(None);

/// Registers `device` as the one the process computes on (only a CUDA device is kept), and
/// makes it current on the calling thread.
pub fn register(device: &Device) -> Result<()> {
    if device.is_cuda() {
        if let Ok(mut slot) = REGISTERED.lock() {
            *slot = Some(device.clone());
        }
        bind(device)?;
    }
    Ok(())
}

/// Makes `device`'s context current on the calling thread (nothing for the CPU).
pub fn bind(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(gpu) = device {
        gpu.cuda_stream()
            .context()
            .bind_to_thread()
            .map_err(|e| candle_core::Error::Msg(format!("binding the CUDA context: {e:?}")))?;
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
    Ok(())
}

/// Makes the registered device current on the calling thread, if a GPU was registered; for
/// thread-start hooks.
pub fn bind_registered() -> Result<()> {
    let device = REGISTERED.lock().ok().and_then(|slot| slot.clone());
    match device {
        Some(device) => bind(&device),
        None => Ok(()),
    }
}

/// [`bind_registered`] for hooks that cannot return an error: a failure is logged to stderr
/// (the next CUDA operation on this thread then reports it too).
pub fn bind_registered_or_warn() {
    if let Err(e) = bind_registered() {
        eprintln!("warning: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_never_registered_and_binding_it_does_nothing() {
        register(&Device::Cpu).unwrap();
        assert!(REGISTERED.lock().unwrap().is_none());
        bind(&Device::Cpu).unwrap();
        bind_registered().unwrap();
    }
}
