//! The engine side's only `unsafe`: handing verified bytecode to `Module::load`. (The
//! storage side's is in `unsafe_io`.)

use crate::entry::Hit;

/// Hands a hit's bytecode to QuickJS.
pub(crate) fn load_verified_bytecode<'js>(
    ctx: &rquickjs::Ctx<'js>,
    hit: &Hit,
) -> rquickjs::Result<rquickjs::Module<'js, rquickjs::module::Declared>> {
    // SAFETY: `Module::load` trusts its input. A `Hit` only exists for an entry whose segments
    // passed their XXH3-128 checksums in a cache directory, index and pack whose headers carry
    // this build's ABI tag (QuickJS version, arch, endianness, pointer width), and the bytes
    // were produced by `Module::write` of this same engine version. The engine copies what it
    // needs (quickjs-ng ignores JS_READ_OBJ_ROM_DATA), so borrowing the mapping for the call
    // is enough, and the `Hit` keeps the mapping alive for it.
    unsafe { rquickjs::Module::load(ctx.clone(), hit.bytecode()) }
}
