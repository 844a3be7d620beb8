//! Serialising command-line values (architectures, devices, …) by their textual form, so that
//! result files show what the user typed.

/// Serialises `v` with its `Display` form.
pub fn display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serialises `Some(v)` with its `Display` form, `None` as null.
pub fn display_opt<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}
