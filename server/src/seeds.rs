//! Seeds derived from the run seed, one per purpose, so that each random choice of a run is
//! reproducible on its own: the clients sampled in round r do not depend on what happened in
//! rounds before it, a client's batch in round r depends only on (seed, r, client), and a
//! resumed run draws exactly what an uninterrupted one would.

/// What a derived seed is for.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// Which clients take part in a round.
    Sampling,
    /// A client's batch (and local rejuvenation) in a round.
    Task,
    /// The server's `SynapticSgd` (rejuvenation after a FedSGD step).
    Optimizer,
}

impl Purpose {
    fn tag(self) -> u64 {
        match self {
            Purpose::Sampling => 0x5a4d_504c_0000_0001,
            Purpose::Task => 0x5441_534b_0000_0002,
            Purpose::Optimizer => 0x4f50_5449_0000_0003,
        }
    }
}

/// SplitMix64's finaliser: a bijective mix with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a of a string, to fold client names into seeds.
fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The seed for `purpose` in `round` for `client` (use `""` and 0 where they do not apply).
pub fn derive(seed: u64, purpose: Purpose, round: u64, client: &str) -> u64 {
    let mut h = mix(seed ^ purpose.tag());
    h = mix(h ^ round);
    mix(h ^ hash_str(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_seed() {
        let base = derive(1, Purpose::Task, 3, "a");
        assert_eq!(base, derive(1, Purpose::Task, 3, "a"));
        assert_ne!(base, derive(2, Purpose::Task, 3, "a"));
        assert_ne!(base, derive(1, Purpose::Sampling, 3, "a"));
        assert_ne!(base, derive(1, Purpose::Task, 4, "a"));
        assert_ne!(base, derive(1, Purpose::Task, 3, "b"));
    }
}
