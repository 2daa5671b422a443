//! Rewriting filters and orderings from one API version's field paths to
//! another's, for requests an older (or newer) API version serves by
//! transformation (DESIGN §5).

/// How field paths (and the values compared with them) differ between two
/// API versions of a resource.
pub trait PathTranslation {
    /// `path` (canonical, dot-separated) in the other version. `Err` says why
    /// it has no single counterpart there.
    fn path(&self, path: &str) -> Result<String, String>;

    /// A string literal compared with `path` in the other version; resource
    /// names change shape between versions, most values do not.
    fn string_value(&self, _path: &str, value: &str) -> String {
        value.to_owned()
    }
}
