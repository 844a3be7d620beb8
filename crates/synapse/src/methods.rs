//! Which of the paper's mechanisms a model uses: any subset of {I, II, III}.
//!
//! The textual form is the paper's notation (`none`, `I`, `II+III`, `I+II+III`, …); the long
//! names `fuzzy`, `rejuvenation` and `splitting` are accepted too, in any order and case.

use crate::error::{Result, SynapseError};
use std::fmt;
use std::str::FromStr;

/// One of the paper's three synaptic-diversity mechanisms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// (I) fuzzy learning rates, §3.1.
    Fuzzy,
    /// (II) weight rejuvenation, §3.2.
    Rejuvenation,
    /// (III) weight splitting, §3.3.
    Splitting,
}

impl Method {
    /// The paper's roman numeral.
    pub fn numeral(self) -> &'static str {
        match self {
            Method::Fuzzy => "I",
            Method::Rejuvenation => "II",
            Method::Splitting => "III",
        }
    }

    /// The long name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Fuzzy => "fuzzy",
            Method::Rejuvenation => "rejuvenation",
            Method::Splitting => "splitting",
        }
    }
}

/// A subset of the three mechanisms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MethodSet {
    pub fuzzy: bool,
    pub rejuvenation: bool,
    pub splitting: bool,
}

impl MethodSet {
    /// The baseline: no mechanism.
    pub const NONE: MethodSet = MethodSet {
        fuzzy: false,
        rejuvenation: false,
        splitting: false,
    };
    /// All three mechanisms, `I+II+III`.
    pub const ALL: MethodSet = MethodSet {
        fuzzy: true,
        rejuvenation: true,
        splitting: true,
    };

    /// All eight combinations in the order of the paper's Tables 1–3:
    /// none, III, II, II+III, I, I+III, I+II, I+II+III.
    pub fn paper_order() -> [MethodSet; 8] {
        std::array::from_fn(|k| MethodSet {
            fuzzy: k & 4 != 0,
            rejuvenation: k & 2 != 0,
            splitting: k & 1 != 0,
        })
    }

    /// Whether `method` is in the set.
    pub fn contains(self, method: Method) -> bool {
        match method {
            Method::Fuzzy => self.fuzzy,
            Method::Rejuvenation => self.rejuvenation,
            Method::Splitting => self.splitting,
        }
    }

    /// The set with `method` added.
    pub fn with(mut self, method: Method) -> Self {
        match method {
            Method::Fuzzy => self.fuzzy = true,
            Method::Rejuvenation => self.rejuvenation = true,
            Method::Splitting => self.splitting = true,
        }
        self
    }

    /// The methods in the set, in numeral order.
    pub fn methods(self) -> impl Iterator<Item = Method> {
        [Method::Fuzzy, Method::Rejuvenation, Method::Splitting]
            .into_iter()
            .filter(move |m| self.contains(*m))
    }

    /// `true` for the baseline.
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_none() {
            return f.write_str("none");
        }
        let parts: Vec<&str> = self.methods().map(Method::numeral).collect();
        f.write_str(&parts.join("+"))
    }
}

impl FromStr for MethodSet {
    type Err = SynapseError;

    fn from_str(input: &str) -> Result<Self> {
        let bad = |reason: String| SynapseError::BadMethodSet {
            input: input.to_string(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.eq_ignore_ascii_case("none") || trimmed.eq_ignore_ascii_case("baseline") {
            return Ok(Self::NONE);
        }
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut set = Self::NONE;
        for token in trimmed.split('+') {
            let token = token.trim();
            let method = match token.to_ascii_lowercase().as_str() {
                "i" | "fuzzy" => Method::Fuzzy,
                "ii" | "rejuvenation" => Method::Rejuvenation,
                "iii" | "splitting" => Method::Splitting,
                "" => return Err(bad("it has an empty part".into())),
                _ => return Err(bad(format!("`{token}` is not a method"))),
            };
            if set.contains(method) {
                return Err(bad(format!("{} appears twice", method.numeral())));
            }
            set = set.with(method);
        }
        Ok(set)
    }
}

impl serde::Serialize for MethodSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MethodSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_paper_notation_in_table_order() {
        let printed: Vec<String> = MethodSet::paper_order()
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(
            printed,
            ["none", "III", "II", "II+III", "I", "I+III", "I+II", "I+II+III"]
        );
    }

    #[test]
    fn parses_numerals_and_names_in_any_order() {
        for set in MethodSet::paper_order() {
            assert_eq!(set.to_string().parse::<MethodSet>().unwrap(), set);
        }
        let all: MethodSet = "splitting + Fuzzy+rejuvenation".parse().unwrap();
        assert_eq!(all, MethodSet::ALL);
        let two: MethodSet = "iii+I".parse().unwrap();
        assert_eq!(two.to_string(), "I+III");
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for bad in ["", "IV", "I+", "I+I", "none+I", "fuzzy++splitting"] {
            let err = bad.parse::<MethodSet>().unwrap_err().to_string();
            assert!(err.contains("method set"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_uses_the_textual_form() {
        let json = serde_json::to_string(&MethodSet::ALL).unwrap();
        assert_eq!(json, "\"I+II+III\"");
        let back: MethodSet = serde_json::from_str("\"II\"").unwrap();
        assert!(back.rejuvenation && !back.fuzzy && !back.splitting);
        assert!(serde_json::from_str::<MethodSet>("\"V\"").is_err());
    }
}
