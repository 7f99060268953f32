//! Deterministic faults for the fault-injection tests.
//!
//! With the `fault-injection` feature, a process whose `BYTECODE_PACK_CRASH_AT` names a point
//! aborts there, as a `kill -9` at that instant would leave things; one whose
//! `BYTECODE_PACK_PRETEND_CTIME_SETTABLE` is set takes every filesystem for one whose ctime is
//! not the kernel's (as FAT's is not), which no test machine can mount. Without the feature
//! these compile to nothing.

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

/// Whether this process takes every filesystem for one whose ctime a user can set.
#[cfg(feature = "fault-injection")]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn pretend_ctime_settable() -> bool {
    use std::sync::OnceLock;
    static PRETEND: OnceLock<bool> = OnceLock::new();
    *PRETEND.get_or_init(|| std::env::var_os("BYTECODE_PACK_PRETEND_CTIME_SETTABLE").is_some())
}

#[cfg(not(feature = "fault-injection"))]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
#[inline(always)]
pub(crate) fn pretend_ctime_settable() -> bool {
    false
}
