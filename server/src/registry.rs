//! Who is registered: a bounded, expiring table of clients, each bound to a session secret.
//!
//! Without tokens anyone who reaches the server may register, so the table must hold against a
//! peer that registers without end or under someone else's name:
//!
//! - it never holds more than `limits.max_clients` entries (a Register beyond gets
//!   `RESOURCE_EXHAUSTED`);
//! - an entry not seen (no call of its client) for `limits.registration_ttl_s` is forgotten
//!   the next time the table is touched;
//! - every registration gets a fresh, unpredictable session secret, which every later call of
//!   that client must present; a second Register under a live name is refused unless it
//!   presents that secret (a client that reconnects keeps its name and its secret) or a valid
//!   token of that name.
//!
//! The secrets come from the operating system's randomness through `rand`'s thread generator:
//! they decide who may speak for a name, never anything a run computes, so runs stay
//! deterministic.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A registered client.
pub(crate) struct ClientEntry {
    /// The training examples it claimed at registration.
    pub examples: u64,
    /// Its last call.
    pub last_seen: Instant,
    secret: String,
}

/// Why a Register was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum RegisterRefusal {
    /// The table holds `max` clients already.
    Full { max: usize },
    /// The name is registered and live, and the caller proved no right to it.
    Taken,
}

/// Why a call was refused.
#[derive(Debug, PartialEq)]
pub(crate) enum SessionRefusal {
    /// The name is not registered (or its registration expired).
    Unknown,
    /// The name is registered, but the call did not present its session secret.
    WrongSecret,
}

/// The clients of a run, bounded in number and in time.
pub(crate) struct Registry {
    clients: BTreeMap<String, ClientEntry>,
    /// secret → name
    by_secret: HashMap<String, String>,
    max_clients: usize,
    ttl: Duration,
}

/// A fresh session secret: 128 random bits as hex.
fn new_secret() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Registry {
    pub fn new(max_clients: usize, ttl: Duration) -> Self {
        Self {
            clients: BTreeMap::new(),
            by_secret: HashMap::new(),
            max_clients,
            ttl,
        }
    }

    fn live(&self, entry: &ClientEntry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_seen) <= self.ttl
    }

    /// Forgets every client not seen for longer than the time to live; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, e)| !self.live(e, now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &expired {
            self.remove(name);
        }
        expired
    }

    /// Registers `name`, or renews its registration when the caller proved its right to the
    /// name (`presented` is its current secret, or `token_proven`). Returns the session secret
    /// and whether the name was registered before.
    pub fn register(
        &mut self,
        name: &str,
        examples: u64,
        presented: Option<&str>,
        token_proven: bool,
        now: Instant,
    ) -> Result<(String, bool), RegisterRefusal> {
        self.expire(now);
        if let Some(entry) = self.clients.get_mut(name) {
            let same_session = presented.is_some_and(|p| p == entry.secret);
            if !(same_session || token_proven) {
                return Err(RegisterRefusal::Taken);
            }
            entry.examples = examples;
            entry.last_seen = now;
            if !same_session {
                // the token holder starts a new session: the old secret stops working
                let fresh = new_secret();
                self.by_secret.remove(&entry.secret);
                self.by_secret.insert(fresh.clone(), name.to_string());
                entry.secret = fresh;
            }
            return Ok((entry.secret.clone(), true));
        }
        if self.clients.len() >= self.max_clients {
            return Err(RegisterRefusal::Full {
                max: self.max_clients,
            });
        }
        let secret = new_secret();
        self.by_secret.insert(secret.clone(), name.to_string());
        self.clients.insert(
            name.to_string(),
            ClientEntry {
                examples,
                last_seen: now,
                secret: secret.clone(),
            },
        );
        Ok((secret, false))
    }

    /// Checks that `presented` is the session secret of the live registration of `name`, and
    /// marks the client seen.
    pub fn check(
        &mut self,
        name: &str,
        presented: Option<&str>,
        now: Instant,
    ) -> Result<(), SessionRefusal> {
        let live = self.clients.get(name).map(|e| self.live(e, now));
        match live {
            None => return Err(SessionRefusal::Unknown),
            Some(false) => {
                self.remove(name);
                return Err(SessionRefusal::Unknown);
            }
            Some(true) => {}
        }
        let entry = self.clients.get_mut(name).ok_or(SessionRefusal::Unknown)?;
        if presented != Some(entry.secret.as_str()) {
            return Err(SessionRefusal::WrongSecret);
        }
        entry.last_seen = now;
        Ok(())
    }

    /// The name whose live registration holds the session secret `presented`.
    pub fn name_of(&self, presented: &str, now: Instant) -> Option<&str> {
        let name = self.by_secret.get(presented)?;
        let entry = self.clients.get(name)?;
        self.live(entry, now).then_some(name.as_str())
    }

    /// Marks `name` seen (a call whose session was checked before, such as a long-poll).
    pub fn touch(&mut self, name: &str, now: Instant) {
        if let Some(entry) = self.clients.get_mut(name) {
            entry.last_seen = now;
        }
    }

    /// The registration of `name`, if any (live or not yet expired by [`expire`](Self::expire)).
    pub fn get(&self, name: &str) -> Option<&ClientEntry> {
        self.clients.get(name)
    }

    /// Forgets `name` (it left, or its registration expired).
    pub fn remove(&mut self, name: &str) {
        if let Some(entry) = self.clients.remove(name) {
            self.by_secret.remove(&entry.secret);
        }
    }

    /// The registered names, in order.
    pub fn names(&self) -> Vec<String> {
        self.clients.keys().cloned().collect()
    }

    /// Number of registered clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.clients.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize, ttl_ms: u64) -> Registry {
        Registry::new(max, Duration::from_millis(ttl_ms))
    }

    #[test]
    fn the_table_never_grows_past_its_limit() {
        let now = Instant::now();
        let mut r = registry(3, 60_000);
        for k in 0..3 {
            r.register(&format!("c{k}"), 1, None, false, now).unwrap();
        }
        assert_eq!(
            r.register("c3", 1, None, false, now),
            Err(RegisterRefusal::Full { max: 3 })
        );
        assert_eq!(r.len(), 3);
        // a slot freed by a leave is taken again
        r.remove("c1");
        r.register("c3", 1, None, false, now).unwrap();
        assert_eq!(r.names(), ["c0", "c2", "c3"]);
    }

    #[test]
    fn a_live_name_is_kept_by_its_secret_or_token_only() {
        let now = Instant::now();
        let mut r = registry(10, 60_000);
        let (secret, rejoin) = r.register("alice", 5, None, false, now).unwrap();
        assert!(!rejoin);
        assert_eq!(secret.len(), 32);
        assert_eq!(
            r.register("alice", 9, None, false, now),
            Err(RegisterRefusal::Taken)
        );
        assert_eq!(
            r.register("alice", 9, Some("guess"), false, now),
            Err(RegisterRefusal::Taken)
        );
        assert_eq!(r.get("alice").unwrap().examples, 5, "unchanged by refusals");
        // the owner reconnects with its secret: same secret, renewed claim
        assert_eq!(
            r.register("alice", 7, Some(&secret), false, now),
            Ok((secret.clone(), true))
        );
        assert_eq!(r.get("alice").unwrap().examples, 7);
        assert_eq!(r.check("alice", Some(&secret), now), Ok(()));
        assert_eq!(
            r.check("alice", Some("guess"), now),
            Err(SessionRefusal::WrongSecret)
        );
        assert_eq!(
            r.check("alice", None, now),
            Err(SessionRefusal::WrongSecret)
        );
        assert_eq!(r.check("bob", None, now), Err(SessionRefusal::Unknown));
        // a token holder starts a new session, which retires the old secret
        let (fresh, _) = r.register("alice", 7, None, true, now).unwrap();
        assert_ne!(fresh, secret);
        assert_eq!(r.name_of(&fresh, now), Some("alice"));
        assert_eq!(r.name_of(&secret, now), None);
        assert_eq!(
            r.check("alice", Some(&secret), now),
            Err(SessionRefusal::WrongSecret)
        );
    }

    #[test]
    fn a_silent_client_is_forgotten_after_the_time_to_live() {
        let start = Instant::now();
        let mut r = registry(2, 1_000);
        let (old, _) = r.register("quiet", 1, None, false, start).unwrap();
        let (busy, _) = r.register("busy", 1, None, false, start).unwrap();
        let later = start + Duration::from_millis(700);
        r.check("busy", Some(&busy), later).unwrap();
        let after = start + Duration::from_millis(1_200);
        // "quiet" was last seen 1.2 s ago, "busy" 0.5 s ago
        assert_eq!(r.expire(after), ["quiet"]);
        assert_eq!(r.names(), ["busy"]);
        assert_eq!(r.name_of(&old, after), None);
        // its name is free again, and the full table has room
        let (new, rejoin) = r.register("quiet", 1, None, false, after).unwrap();
        assert!(!rejoin);
        assert_ne!(new, old);
        // an expired entry is refused even before a sweep
        let much_later = after + Duration::from_millis(1_500);
        assert_eq!(
            r.check("busy", Some(&busy), much_later),
            Err(SessionRefusal::Unknown)
        );
        assert!(!r.contains("busy"));
    }
}
