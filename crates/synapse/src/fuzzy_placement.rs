//! Where fuzzy learning rates (I) act in a federation: a run option (`training.fuzzy_at`).
//!
//! The paper defines η̂ as a property of the network: every synapse steps by η · ∇w ⊙ η̂. In a
//! federation that leaves a choice, and it decides what an honest-but-curious server sees:
//!
//! - [`FuzzyPlacement::Server`] (the default): the factors belong to the global model (drawn
//!   from the model's seed) and scale the *server's* step. A FedSGD client sends the plain
//!   gradient, so I cannot hide anything from a gradient-inversion attacker; with FedAvg every
//!   client steps with the global factors, which the server knows.
//! - [`FuzzyPlacement::Client`]: each client draws its *own* factors η̂_c once, from a seed the
//!   server is never told, and applies them as a gradient hook: a FedSGD client sends
//!   g ⊙ η̂_c, a FedAvg client trains locally with η̂_c. The server steps without factors (its
//!   copy holds ones, so its step is the plain SGD step on the mean of the scaled gradients),
//!   and an attacker who does not know η̂_c replays the update as if the factors were their
//!   mean, one.
//!
//! The client's seed: `synfed join --fuzzy-seed` (a secret the client keeps), otherwise
//! [`client_seed`] derives one from the run's seed and the client's name — deterministic, so
//! that simulations repeat bit for bit, but computable by anyone who knows both; the attacker
//! code never computes it.

use crate::error::{Result, SynapseError};
use crate::fuzzy;
use crate::param::ParamStore;
use crate::rng;
use candle_core::{Device, Tensor};

/// Stream of a client's private fuzzy factors (independent of the model's own streams).
pub const STREAM_CLIENT_FUZZY: u64 = 3;

/// Where the fuzzy learning-rate factors (I) act: the server's step or each client's gradient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FuzzyPlacement {
    /// The global model's factors scale the server's step; clients send plain gradients.
    #[default]
    Server,
    /// Each client scales its own gradient by private factors; the server steps without.
    Client,
}

impl FuzzyPlacement {
    /// The text form: `server` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            FuzzyPlacement::Server => "server",
            FuzzyPlacement::Client => "client",
        }
    }
}

impl std::fmt::Display for FuzzyPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FuzzyPlacement {
    type Err = SynapseError;

    /// `server` or `client` (any case, surrounding whitespace ignored).
    fn from_str(input: &str) -> Result<Self> {
        match input.trim().to_ascii_lowercase().as_str() {
            "server" => Ok(FuzzyPlacement::Server),
            "client" => Ok(FuzzyPlacement::Client),
            _ => Err(SynapseError::BadFuzzyPlacement(input.to_string())),
        }
    }
}

/// Serialised as its text form, read through [`FromStr`](std::str::FromStr) so that a bad
/// value in a file gets the same message as on the command line.
impl serde::Serialize for FuzzyPlacement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FuzzyPlacement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The seed of client `name`'s private factors when the client is given none: the run's
/// seed mixed with a 64-bit FNV-1a hash of the name (splitmix64 finaliser), so that clients
/// differ from each other and from the model's own streams.
pub fn client_seed(run_seed: u64, name: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in name.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = run_seed ^ hash.rotate_left(17) ^ 0x5f5f_6675_7a7a_7921;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A client's private factors: one tensor per synaptic weight of `store` (in store order,
/// named as the weight), drawn from U(1 − τ/2, 1 + τ/2) like the model's own (τ of the store)
/// from [`STREAM_CLIENT_FUZZY`] of `seed`. Empty when the store has no fuzzy factors (I off).
pub fn client_factors(store: &ParamStore, seed: u64) -> Result<Vec<(String, Tensor)>> {
    let mut rng = rng::stream(seed, STREAM_CLIENT_FUZZY);
    let tau = store.hyper().tau;
    let mut out = Vec::new();
    for param in store.iter().filter(|p| p.fuzzy.is_some()) {
        let shape = param.var.dims().to_vec();
        let values = fuzzy::draw_factors(shape.iter().product(), tau, &mut rng);
        let tensor = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?
            .to_dtype(param.var.dtype())?
            .to_device(param.var.device())?;
        out.push((param.name.clone(), tensor));
    }
    Ok(out)
}

/// Replaces every fuzzy factor of `store` by `factors` (from [`client_factors`] of the same
/// model). Create optimizers afterwards: they keep a copy of the store.
pub fn install(store: &mut ParamStore, factors: &[(String, Tensor)]) -> Result<()> {
    for (name, tensor) in factors {
        store.set_fuzzy(name, tensor)?;
    }
    Ok(())
}

/// Sets every fuzzy factor of `store` to one: the server's copy under
/// [`FuzzyPlacement::Client`] (it steps without factors) and the attacker's best guess of
/// factors it does not know (their mean).
pub fn neutralise(store: &mut ParamStore) -> Result<()> {
    let ones: Vec<(String, Tensor)> = store
        .iter()
        .filter(|p| p.fuzzy.is_some())
        .map(|p| Ok((p.name.clone(), p.var.as_tensor().ones_like()?)))
        .collect::<Result<_>>()?;
    install(store, &ones)
}

/// The gradient hook of [`FuzzyPlacement::Client`]: `grad ⊙ factor` for a synaptic weight
/// `name` that has factors, `grad` itself otherwise.
pub fn scale_gradient(factors: &[(String, Tensor)], name: &str, grad: &Tensor) -> Result<Tensor> {
    match factors.iter().find(|(n, _)| n == name) {
        Some((_, f)) if f.dims() == grad.dims() => Ok(grad.mul(&f.to_dtype(grad.dtype())?)?),
        Some((_, f)) => Err(SynapseError::BadParameter {
            name: name.to_string(),
            problem: format!(
                "its gradient has shape {:?}, its private fuzzy factors {:?}",
                grad.dims(),
                f.dims()
            ),
        }),
        None => Ok(grad.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Builder, Hyper, LayerOptions, MethodSet, Role};
    use candle_core::DType;

    fn build(methods: &str) -> ParamStore {
        let mut b = Builder::new(
            4,
            methods.parse::<MethodSet>().unwrap(),
            Hyper::default(),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        b.linear("fc1", 6, 5, LayerOptions::default()).unwrap();
        b.linear("fc2", 5, 3, LayerOptions::classifier()).unwrap();
        b.finish()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn text_round_trips_and_a_bad_value_is_named() {
        for (text, p) in [
            ("server", FuzzyPlacement::Server),
            ("client", FuzzyPlacement::Client),
        ] {
            assert_eq!(text.parse::<FuzzyPlacement>().unwrap(), p);
            assert_eq!(p.to_string(), text);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<FuzzyPlacement>(&json).unwrap(), p);
        }
        assert_eq!(FuzzyPlacement::default(), FuzzyPlacement::Server);
        let err = "clients".parse::<FuzzyPlacement>().unwrap_err().to_string();
        assert!(err.contains("`clients`") && err.contains("server"), "{err}");
    }

    #[test]
    fn client_factors_are_private_draws_in_range_and_differ_from_the_models() {
        let store = build("I");
        let tau = store.hyper().tau;
        let a = client_factors(&store, client_seed(1, "client-0")).unwrap();
        let b = client_factors(&store, client_seed(1, "client-1")).unwrap();
        let again = client_factors(&store, client_seed(1, "client-0")).unwrap();
        // one tensor per synaptic weight (fc1.weight, fc2.weight), none for biases
        let names: Vec<&str> = a.iter().map(|(n, _)| n.as_str()).collect();
        let weights: Vec<&str> = store
            .iter()
            .filter(|p| p.role == Role::SynapticWeight)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, weights);
        for ((_, x), (_, y)) in a.iter().zip(&b) {
            assert_ne!(values(x), values(y), "two clients draw different factors");
        }
        for ((_, x), (_, y)) in a.iter().zip(&again) {
            assert_eq!(values(x), values(y), "the same seed draws the same factors");
        }
        for ((name, x), p) in a.iter().zip(store.iter().filter(|p| p.fuzzy.is_some())) {
            let own = values(p.fuzzy.as_ref().unwrap());
            assert_ne!(values(x), own, "{name}: not the model's own factors");
            for v in values(x) {
                let v = f64::from(v);
                assert!((1.0 - tau / 2.0 - 1e-6..=1.0 + tau / 2.0 + 1e-6).contains(&v));
            }
        }
        assert!(client_factors(&build("none"), 3).unwrap().is_empty());
    }

    #[test]
    fn the_client_stream_is_none_of_the_models_streams() {
        for own in [
            rng::STREAM_INIT,
            rng::STREAM_FUZZY,
            rng::STREAM_REJUVENATION,
        ] {
            assert_ne!(STREAM_CLIENT_FUZZY, own);
        }
    }

    #[test]
    fn client_seeds_differ_by_name_and_run_seed() {
        let seeds = [
            client_seed(1, "client-0"),
            client_seed(1, "client-1"),
            client_seed(2, "client-0"),
            client_seed(1, ""),
        ];
        for i in 0..seeds.len() {
            for j in i + 1..seeds.len() {
                assert_ne!(seeds[i], seeds[j]);
            }
        }
        assert_eq!(client_seed(1, "client-0"), seeds[0]);
    }

    #[test]
    fn install_neutralise_and_the_gradient_hook() {
        let mut s = build("I");
        let factors = client_factors(&s, 11).unwrap();
        install(&mut s, &factors).unwrap();
        for (name, f) in &factors {
            let p = s.get(name).unwrap();
            assert_eq!(values(p.fuzzy.as_ref().unwrap()), values(f));
        }
        // g ⊙ η̂ element by element, computed by hand
        let (name, f) = &factors[0];
        let g = Tensor::arange(0f32, 30., &Device::Cpu)
            .unwrap()
            .reshape((5, 6))
            .unwrap();
        let scaled = values(&scale_gradient(&factors, name, &g).unwrap());
        let expected: Vec<f32> = values(&g)
            .iter()
            .zip(values(f))
            .map(|(g, f)| g * f)
            .collect();
        assert_eq!(scaled, expected);
        // a tensor without factors (a bias) passes unchanged; a wrong shape is named
        let bias = Tensor::ones(5, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(
            values(&scale_gradient(&factors, "fc1.bias", &bias).unwrap()),
            vec![1.0; 5]
        );
        let err = scale_gradient(&factors, name, &bias)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name.as_str()), "{err}");
        neutralise(&mut s).unwrap();
        for p in s.iter().filter(|p| p.fuzzy.is_some()) {
            assert!(values(p.fuzzy.as_ref().unwrap()).iter().all(|&v| v == 1.0));
        }
    }
}
