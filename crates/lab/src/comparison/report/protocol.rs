//! The paragraph of the report that says how its cells were computed: the protocol of the
//! paper's Table 3 (`--kind inversion`) or the federations' (privacy), with every setting a
//! reader needs to rerun it.

use crate::comparison::config::{CompareConfig, Kind};

/// The paragraph that says how the cells were computed.
pub fn protocol(config: &CompareConfig) -> String {
    let values = format!(
        "Values: mean ± 95 % confidence half-width over the K = {} attacked batches \
         (Student's t); the paired tests below say which differences are real. Bold: the most \
         private value per column where it differs significantly from `none`.",
        config.batches
    );
    match config.kind {
        Kind::Inversion => {
            let data = match config.held_out {
                Some(n) => format!(
                    "the test split of `{}` only: its images 0 … {} are held out (attacked and \
                     tested on, never trained on), the rest is the training split",
                    config.data,
                    n - 1
                ),
                None => format!("`{}`", config.data),
            };
            let trained = if config.pretrain_epochs > 0 {
                format!(
                    "and after {} epochs of centralized training (SGD with the variant's \
                     mechanisms, lr {} × the variant's factor, batch {}; **trained**)",
                    config.pretrain_epochs, config.learning.lr, config.learning.batch_size
                )
            } else {
                String::new()
            };
            format!(
                "Protocol of the paper's Table 3 (no federation): data {data}. Each model is \
                 built from seed {} with the variant's methods and attacked freshly \
                 initialised (**untrained**) {trained}: the FedSGD gradient of each of K = {} \
                 consecutive held-out batches of {} images (images 0 … {}) is computed with \
                 BatchNorm in `{}` mode (`eval` = running statistics, the reference attack's \
                 protocol; `train` = batch statistics, what federated clients compute), labels \
                 {}, and inverted ({} iterations, {} restart(s), the reference settings). \
                 Untrained rows that differ from an earlier row only by I, II or the \
                 learning rate reuse that row's attacks: before the first step their model, \
                 gradient and attack are bit-identical (I and II act on optimizer steps). \
                 {values}\n\n",
                config.seed,
                config.batches,
                config.batch_size,
                config.batches * config.batch_size - 1,
                config.bn_mode,
                if config.expose_labels {
                    "given to the attacker"
                } else {
                    "recovered by the attacker"
                },
                config.attack_iterations,
                config.attack_restarts,
            )
        }
        _ => format!(
            "Data `{}`, {} clients ({} split), {} federation, lr {}, batch {}; seed {} for every \
             cell (model initialisation, partition, batches, attacker). Each cell is a \
             federation whose tap captures clients 0 … {} in round 1 (**untrained**){}; \
             clients compute with BatchNorm in `{}` mode; every capture is attacked ({} \
             iterations, {} restart(s)) and scored against the client's true batch. \
             {values}\n\n",
            config.data,
            config.clients,
            config.split,
            config.algorithm,
            config.lr,
            config.batch_size,
            config.seed,
            config.batches - 1,
            trained_capture(config),
            config.bn_mode,
            config.attack_iterations,
            config.attack_restarts,
        ),
    }
}

/// When a privacy comparison captures its trained state (empty without one).
fn trained_capture(config: &CompareConfig) -> String {
    let pretrained = format!(
        "a federation started from the cell's model pretrained for {} centralized epochs (lr \
         {}, batch {}, on the clients' training split)",
        config.pretrain_epochs, config.learning.lr, config.learning.batch_size
    );
    match (config.pretrain_epochs, config.rounds) {
        (0, 0) => String::new(),
        (0, rounds) => format!(
            " and, after {rounds} rounds, in round {} (**trained**)",
            rounds + 1
        ),
        (_, 0) => format!(" and in round 1 of {pretrained} (**trained**)"),
        (_, rounds) => format!(
            " and in round {} of {pretrained}, after {rounds} rounds (**trained**)",
            rounds + 1
        ),
    }
}
