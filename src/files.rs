//! The names of the files in a cache directory, in one place. What each holds is specified in
//! `format` and `FORMAT.md`; who writes and removes each is in `writer`, `compact` and
//! `maintenance`.

/// The published index.
pub(crate) const INDEX_FILE: &str = "index";
/// The writers' `flock(2)` target.
pub(crate) const LOCK_FILE: &str = "lock";
/// The cache directory tag, whose content proves a directory is a cache this crate wrote.
pub(crate) const MARKER_FILE: &str = "CACHEDIR.TAG";
/// Prefix of every temp file; anything carrying it is swept by the next writer.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// The pack file of `generation`: `pack-<16 hex digits>`.
pub(crate) fn pack_file_name(generation: u64) -> String {
    format!("pack-{generation:016x}")
}

/// A base index: `base-<16 hex digits>`.
pub(crate) fn base_file_name(id: u64) -> String {
    format!("base-{id:016x}")
}

/// The id a base file's name carries, if `name` is one.
pub(crate) fn parse_base_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "base-")
}

/// The generation a pack file's name carries, if `name` is one.
pub(crate) fn parse_pack_name(name: &str) -> Option<u64> {
    parse_hex_name(name, "pack-")
}

fn parse_hex_name(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?;
    (hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pack_names_round_trip_and_nothing_else_parses() {
        for g in [0, 1, 0xabc, u64::MAX] {
            assert_eq!(super::parse_pack_name(&super::pack_file_name(g)), Some(g));
            assert_eq!(super::parse_base_name(&super::base_file_name(g)), Some(g));
            assert_eq!(super::parse_pack_name(&super::base_file_name(g)), None);
        }
        for name in [
            "pack-1",
            "pack-",
            "pack-0000000000000001x",
            "index",
            "pack-zzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(super::parse_pack_name(name), None, "{name}");
        }
    }
}
