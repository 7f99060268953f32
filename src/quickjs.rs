//! QuickJS glue through rquickjs.

/// The producer part of the ABI tag: QuickJS's own version and the rquickjs series.
pub(crate) fn producer_tag() -> String {
    format!(
        "quickjs-ng{}-rquickjs0.14",
        crate::unsafe_io::quickjs_version()
    )
}
