//! Client tokens: who may take part, under which name.
//!
//! A TOML file with one table, `[clients]`, mapping each client's name to its secret token:
//!
//! ```toml
//! [clients]
//! hospital-a = "3f0c…"
//! hospital-b = "9a71…"
//! ```
//!
//! Clients send `authorization: Bearer <token>` with every call. Tokens are compared in
//! constant time and never logged; a missing or unknown token is `UNAUTHENTICATED`.

use crate::error::{Result, ServerError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// The metadata key carrying the token.
pub const AUTHORIZATION: &str = "authorization";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    clients: BTreeMap<String, String>,
}

/// The clients allowed in a run.
#[derive(Clone)]
pub struct Tokens {
    by_name: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.by_name.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens")
            .field("clients", &names)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads a tokens file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            path: path.to_path_buf(),
            action: "read the tokens file",
            source,
        })?;
        Self::from_toml(&text).map_err(|reason| ServerError::Tokens {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// The token of client `name`, if the file names it (a simulation hands each of its
    /// clients its own).
    pub fn token_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, token)| std::str::from_utf8(token).ok())
    }

    /// Parses the TOML text of a tokens file.
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        for (name, token) in &file.clients {
            if token.len() < 16 {
                return Err(format!(
                    "the token of `{name}` is shorter than 16 characters"
                ));
            }
            if !seen.insert(token.as_str()) {
                return Err(format!("the token of `{name}` is also another client's"));
            }
        }
        if file.clients.is_empty() {
            return Err("no clients in [clients]".into());
        }
        Ok(Self {
            by_name: file
                .clients
                .into_iter()
                .map(|(n, t)| (n, t.into_bytes()))
                .collect(),
        })
    }

    /// The name of the client holding `token`, comparing against every token in constant time.
    pub fn name_of(&self, token: &str) -> Option<&str> {
        let mut found = None;
        for (name, expected) in &self.by_name {
            if constant_time_eq(expected, token.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The client name a request's metadata authenticates, or `UNAUTHENTICATED`.
    pub fn authenticate(&self, metadata: &MetadataMap) -> std::result::Result<&str, Status> {
        let token =
            bearer(metadata).ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        self.name_of(token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

/// The bearer token of `metadata`, if any.
pub fn bearer(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret (tokens are ≥ 16 characters); the bytes are.
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[clients]\nalice = \"aaaaaaaaaaaaaaaa\"\nbob = \"bbbbbbbbbbbbbbbbbb\"\n";

    #[test]
    fn maps_tokens_to_names() {
        let tokens = Tokens::from_toml(FILE).unwrap();
        assert_eq!(tokens.name_of("aaaaaaaaaaaaaaaa"), Some("alice"));
        assert_eq!(tokens.name_of("bbbbbbbbbbbbbbbbbb"), Some("bob"));
        assert_eq!(tokens.name_of("aaaaaaaaaaaaaaab"), None);
        assert_eq!(tokens.name_of(""), None);
        assert_eq!(tokens.token_of("bob"), Some("bbbbbbbbbbbbbbbbbb"));
        assert_eq!(tokens.token_of("carol"), None);
        assert!(
            !format!("{tokens:?}").contains("aaaa"),
            "tokens must not be printed"
        );
    }

    #[test]
    fn authenticates_bearer_metadata() {
        let tokens = Tokens::from_toml(FILE).unwrap();
        let mut md = MetadataMap::new();
        assert_eq!(
            tokens.authenticate(&md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert(
            AUTHORIZATION,
            "Bearer wrongwrongwrongwrong".parse().unwrap(),
        );
        assert_eq!(
            tokens.authenticate(&md).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        md.insert(AUTHORIZATION, "Bearer bbbbbbbbbbbbbbbbbb".parse().unwrap());
        assert_eq!(tokens.authenticate(&md).unwrap(), "bob");
    }

    #[test]
    fn rejects_weak_or_shared_tokens() {
        assert!(Tokens::from_toml("[clients]\na = \"short\"")
            .unwrap_err()
            .contains("shorter"));
        let shared = "[clients]\na = \"xxxxxxxxxxxxxxxx\"\nb = \"xxxxxxxxxxxxxxxx\"";
        assert!(Tokens::from_toml(shared).unwrap_err().contains("another"));
        assert!(Tokens::from_toml("[clients]\n").is_err());
    }
}
