//! The ABI tag: what must match for bytecode written by one build to be loadable by another.

use std::sync::OnceLock;

use crate::format::FORMAT_VERSION;

/// The rquickjs release series whose `Module::write`/`Module::load` produce and read the
/// bytecode, as Cargo.toml requires it. `tests/layout.rs` checks that the two agree, so the
/// tag cannot drift from the dependency.
#[doc(hidden)]
pub const RQUICKJS_SERIES: &str = "0.14";

/// The producer part of the ABI tag: QuickJS's own version and the rquickjs series; without
/// the `quickjs` feature the crate cannot ask an engine, so entries are only shared with
/// builds that also have no engine linked.
fn producer_tag() -> String {
    #[cfg(feature = "quickjs")]
    {
        format!(
            "quickjs-ng{}-rquickjs{RQUICKJS_SERIES}",
            crate::unsafe_io::quickjs_version()
        )
    }
    #[cfg(not(feature = "quickjs"))]
    {
        "noengine".to_owned()
    }
}

/// The ABI tag of this build: the cache directory's name under the root, folded into every
/// key, and checked in every file header.
///
/// It names the bytecode producer (QuickJS's version from `JS_GetVersion` and the rquickjs
/// series that writes and reads bytecode), this crate's on-disk format version, and the target
/// architecture, endianness and pointer width. Bytecode is only ever loaded by a build whose
/// tag is identical, e.g. `bp2-quickjs-ng0.16.2-rquickjs0.14-x86_64-le-64`.
pub fn abi_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let producer = producer_tag();
        let endian = if cfg!(target_endian = "little") {
            "le"
        } else {
            "be"
        };
        let raw = format!(
            "bp{FORMAT_VERSION}-{producer}-{}-{endian}-{}",
            std::env::consts::ARCH,
            usize::BITS
        );
        // The tag is a directory name: keep it to a portable alphabet whatever the engine says.
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tag_names_format_arch_and_width_and_is_a_plain_file_name() {
        let tag = super::abi_tag();
        assert!(tag.starts_with(&format!("bp{}-", crate::format::FORMAT_VERSION)));
        assert!(tag.contains(std::env::consts::ARCH));
        assert!(tag.ends_with(&format!("-{}", usize::BITS)));
        assert!(
            tag.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        );
    }
}
