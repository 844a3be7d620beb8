//! `--device auto|cpu|cuda[:N]`: which candle device a command computes on.

use anyhow::{bail, Context};
use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// A device as the user names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA device 0 when synfed was built with `--features cuda` and a GPU is present, else CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    /// Opens the device (a GPU is registered as the process's, see
    /// `synfed_synapse::cuda_context`).
    pub fn open(self) -> anyhow::Result<Device> {
        let device = self.open_unregistered()?;
        synfed_synapse::cuda_context::register(&device)
            .with_context(|| format!("making {self} current"))?;
        Ok(device)
    }

    fn open_unregistered(self) -> anyhow::Result<Device> {
        match self {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Auto if candle_core::utils::cuda_is_available() => Device::new_cuda(0)
                .or_else(|e| {
                    tracing::warn!(
                        "CUDA is compiled in but device 0 cannot be opened ({e}); using the CPU"
                    );
                    Ok(Device::Cpu)
                }),
            DeviceChoice::Auto => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!("--device cuda:{n}: this synfed was built without CUDA support (rebuild with `--features cuda`)");
                }
                Device::new_cuda(n).with_context(|| format!("cannot open CUDA device {n}"))
            }
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            _ => lower
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| {
                    format!("`{s}` is not a device (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, want) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:2", DeviceChoice::Cuda(2)),
        ] {
            assert_eq!(text.parse::<DeviceChoice>().unwrap(), want);
        }
        assert_eq!(DeviceChoice::Cuda(3).to_string(), "cuda:3");
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn auto_and_cpu_always_open() {
        DeviceChoice::Cpu.open().unwrap();
        DeviceChoice::Auto.open().unwrap();
    }
}
