//! The architectures of the zoo, by name.

use crate::error::ModelError;
use std::fmt;
use std::str::FromStr;

/// An architecture of the zoo.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// The paper's MLP (one hidden layer of 1 000 on 28×28, two of 3 000 on 32×32×3).
    Mlp,
    /// A small AlexNet for 28×28 / 32×32 inputs (5 conv + 3 FC).
    AlexNet,
    /// He et al.'s CIFAR ResNet with 3·3 basic blocks.
    ResNet20,
    /// He et al.'s CIFAR ResNet with 3·5 basic blocks.
    ResNet32,
    /// He et al.'s CIFAR ResNet with 3·9 basic blocks.
    ResNet56,
    /// Geiping et al.'s ConvNet, the *Inverting Gradients* benchmark model.
    ConvNet,
    /// The sigmoid LeNet of *Deep Leakage from Gradients*.
    LeNet,
}

impl Arch {
    /// Names accepted by [`FromStr`].
    pub const NAMES: [&'static str; 7] = [
        "mlp", "alexnet", "resnet20", "resnet32", "resnet56", "convnet", "lenet",
    ];

    /// Every architecture.
    pub const ALL: [Arch; 7] = [
        Arch::Mlp,
        Arch::AlexNet,
        Arch::ResNet20,
        Arch::ResNet32,
        Arch::ResNet56,
        Arch::ConvNet,
        Arch::LeNet,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|a| *a == self).unwrap_or(0)]
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == lower)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| ModelError::UnknownArch(s.to_string()))
    }
}

impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert_eq!("ResNet20".parse::<Arch>().unwrap(), Arch::ResNet20);
        let err = "vgg".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("vgg") && err.contains("convnet"), "{err}");
    }
}
