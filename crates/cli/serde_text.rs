//! Serialising command-line values (BatchNorm modes, devices, …) by their textual form, so that
//! result files show what the user typed.

/// Serialises `v` with its `Display` form.
pub fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}
