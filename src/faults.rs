//! Deterministic crash points for the fault-injection tests.
//!
//! With the `fault-injection` feature, a process whose `BYTECODE_PACK_CRASH_AT` names a point
//! aborts there, as a `kill -9` at that instant would leave things. Without the feature the
//! points compile to nothing.

/// The crash points, in the order a write passes them.
pub const CRASH_POINTS: &[&str] = &[
    "write:locked",
    "append:written",
    "compact:half-copied",
    "compact:pack-renamed",
    "publish:linked",
    "merge:start",
    "publish:temp-written",
    "publish:renamed",
];

#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(name: &str) {
    use std::sync::OnceLock;
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT
        .get_or_init(|| std::env::var("BYTECODE_PACK_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_name: &str) {}
