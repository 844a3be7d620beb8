//! A client's update as named tensors that know what they are.
//!
//! An update has one tensor per model tensor, in parameter-store order: gradients or
//! differences of the trainable parameters, and the change of the BatchNorm running
//! statistics. The parts of the federation treat the two kinds differently — a defence clips,
//! noises and prunes only trainable tensors, the tap captures only those, the server applies
//! trainable gradients through the optimizer and buffer changes directly — so every entry
//! carries its parameter's [`Role`] instead of a separate list of flags that could drift out
//! of step with the tensors.
//!
//! The type lives in the model crate because the role comes from a model's parameters, and
//! the client, the wire formats and the server all depend on this crate. The wire carries
//! names and tensors only; whoever receives an update attaches roles from its own model
//! ([`Update::with_roles_of`]), never from what a peer claims.

use crate::error::{ModelError, Result};
use candle_core::Tensor;
use synfed_synapse::{ParamStore, Role};

/// One tensor of an update: the parameter it belongs to, that parameter's role, the values.
#[derive(Clone, Debug)]
pub struct UpdateEntry {
    pub name: String,
    pub role: Role,
    pub tensor: Tensor,
}

impl UpdateEntry {
    /// Whether the entry belongs to a trainable parameter (not a BatchNorm running statistic).
    pub fn is_trainable(&self) -> bool {
        self.role.is_trainable()
    }
}

/// A client update: one [`UpdateEntry`] per model tensor, in parameter-store order.
#[derive(Clone, Debug, Default)]
pub struct Update {
    entries: Vec<UpdateEntry>,
}

impl Update {
    /// An update of `entries`, kept in the given order.
    pub fn new(entries: Vec<UpdateEntry>) -> Self {
        Self { entries }
    }

    /// An update of `tensors`, one per tensor of `params` in the same order, each named and
    /// given the role of its parameter. Refuses a different count or a shape that is not the
    /// parameter's.
    pub fn with_roles_of(params: &ParamStore, tensors: Vec<Tensor>) -> Result<Self> {
        if tensors.len() != params.len() {
            return Err(ModelError::UpdateLayout(format!(
                "{} update tensors for a model of {} tensors",
                tensors.len(),
                params.len()
            )));
        }
        let entries = params
            .iter()
            .zip(tensors)
            .map(|(p, tensor)| {
                if tensor.dims() != p.var.dims() {
                    return Err(ModelError::UpdateLayout(format!(
                        "the update of `{}` has shape {:?}, the parameter {:?}",
                        p.name,
                        tensor.dims(),
                        p.var.dims()
                    )));
                }
                Ok(UpdateEntry {
                    name: p.name.clone(),
                    role: p.role,
                    tensor,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { entries })
    }

    /// Zeros shaped like every tensor of `params`, with their names and roles: the start of
    /// a sum of updates.
    pub fn zeros_like(params: &ParamStore) -> Result<Self> {
        let entries = params
            .iter()
            .map(|p| {
                Ok(UpdateEntry {
                    name: p.name.clone(),
                    role: p.role,
                    tensor: p.var.as_tensor().zeros_like()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { entries })
    }

    /// Number of tensors (trainable and not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the update has no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in parameter-store order.
    pub fn iter(&self) -> std::slice::Iter<'_, UpdateEntry> {
        self.entries.iter()
    }

    /// Every entry, mutably (to replace tensors in place).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, UpdateEntry> {
        self.entries.iter_mut()
    }

    /// The entries of trainable parameters, in parameter-store order (the order of
    /// [`ParamStore::trainable`]).
    pub fn trainable(&self) -> impl Iterator<Item = &UpdateEntry> {
        self.entries.iter().filter(|e| e.is_trainable())
    }

    /// The entries of trainable parameters, mutably.
    pub fn trainable_mut(&mut self) -> impl Iterator<Item = &mut UpdateEntry> {
        self.entries.iter_mut().filter(|e| e.is_trainable())
    }

    /// The names of every entry, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The tensors of every entry, in order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.entries.iter().map(|e| &e.tensor)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&UpdateEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// `(name, tensor)` of every entry, as the wire encodes them (tensors share storage).
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|e| (e.name.clone(), e.tensor.clone()))
            .collect()
    }

    /// `(name, tensor)` of the trainable entries: what a capture stores.
    pub fn named_trainable(&self) -> Vec<(String, Tensor)> {
        self.trainable()
            .map(|e| (e.name.clone(), e.tensor.clone()))
            .collect()
    }

    /// The tensors, in order, without names and roles (what aggregation sums).
    pub fn into_tensors(self) -> Vec<Tensor> {
        self.entries.into_iter().map(|e| e.tensor).collect()
    }
}

impl<'a> IntoIterator for &'a Update {
    type Item = &'a UpdateEntry;
    type IntoIter = std::slice::Iter<'a, UpdateEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for Update {
    type Item = UpdateEntry;
    type IntoIter = std::vec::IntoIter<UpdateEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, InputShape, Model, ModelSpec};
    use candle_core::{DType, Device};
    use synfed_synapse::MethodSet;

    /// Geiping's ConvNet at width 2: weights, biases, BatchNorm γ/β and running statistics.
    fn batch_norm_model() -> Model {
        let spec = ModelSpec::new(
            Arch::ConvNet,
            InputShape::new(1, 9, 9),
            3,
            MethodSet::NONE,
            4,
        )
        .with_width(2);
        Model::build(&spec, DType::F32, &Device::Cpu).unwrap()
    }

    /// An update whose k-th tensor is filled with k (so entries can be told apart).
    fn numbered(model: &Model) -> Vec<Tensor> {
        model
            .params()
            .iter()
            .enumerate()
            .map(|(k, p)| (p.var.as_tensor().zeros_like().unwrap() + k as f64).unwrap())
            .collect()
    }

    fn first_value(t: &Tensor) -> f32 {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
    }

    #[test]
    fn roles_come_from_the_model_and_stay_with_their_tensors() {
        let model = batch_norm_model();
        let update = Update::with_roles_of(model.params(), numbered(&model)).unwrap();
        assert_eq!(update.len(), model.params().len());
        for (k, (entry, p)) in update.iter().zip(model.params().iter()).enumerate() {
            assert_eq!(entry.name, p.name);
            assert_eq!(entry.role, p.role);
            assert_eq!(first_value(&entry.tensor), k as f32);
        }
        // ConvNet has BatchNorm: both kinds are present.
        let statistics: Vec<&str> = update
            .iter()
            .filter(|e| matches!(e.role, Role::RunningMean | Role::RunningVar))
            .map(|e| e.name.as_str())
            .collect();
        assert!(!statistics.is_empty());
        assert!(
            statistics.iter().all(|n| n.contains("running")),
            "{statistics:?}"
        );
    }

    #[test]
    fn the_trainable_selection_is_in_parameter_order_and_skips_running_statistics() {
        let model = batch_norm_model();
        let update = Update::with_roles_of(model.params(), numbered(&model)).unwrap();
        let expected: Vec<&str> = model
            .params()
            .trainable()
            .map(|p| p.name.as_str())
            .collect();
        let got: Vec<&str> = update.trainable().map(|e| e.name.as_str()).collect();
        assert_eq!(got, expected);
        assert!(got.len() < update.len());
        // each selected entry is the tensor at its parameter's position
        let position: Vec<usize> = model
            .params()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role.is_trainable())
            .map(|(k, _)| k)
            .collect();
        let values: Vec<f32> = update.trainable().map(|e| first_value(&e.tensor)).collect();
        assert_eq!(
            values,
            position.iter().map(|&k| k as f32).collect::<Vec<_>>()
        );
        let named = update.named_trainable();
        assert_eq!(
            named.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            expected
        );
        assert_eq!(update.names().count(), model.params().len());
        assert_eq!(update.into_tensors().len(), model.params().len());
    }

    #[test]
    fn an_update_of_another_layout_is_refused() {
        let model = batch_norm_model();
        let mut short = numbered(&model);
        short.pop();
        let err = Update::with_roles_of(model.params(), short).unwrap_err();
        assert!(matches!(err, ModelError::UpdateLayout(_)), "{err}");
        assert!(err.to_string().contains("tensors"), "{err}");

        let mut reshaped = numbered(&model);
        reshaped[0] = reshaped[0].flatten_all().unwrap();
        let err = Update::with_roles_of(model.params(), reshaped).unwrap_err();
        let first = &model.params().iter().next().unwrap().name;
        assert!(err.to_string().contains(first.as_str()), "{err}");
    }

    #[test]
    fn zeros_have_the_model_layout() {
        let model = batch_norm_model();
        let zeros = Update::zeros_like(model.params()).unwrap();
        assert_eq!(zeros.len(), model.params().len());
        for (e, p) in zeros.iter().zip(model.params().iter()) {
            assert_eq!((e.name.as_str(), e.role), (p.name.as_str(), p.role));
            assert_eq!(e.tensor.dims(), p.var.dims());
            let sum = e
                .tensor
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(sum, 0.0);
        }
    }
}
