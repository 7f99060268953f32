//! The engine side's only `unsafe`: handing verified bytecode to `Module::load`, loading a
//! module graph without evaluating it, and keeping the runtime's source maps in its userdata.
//! (The storage side's is in `unsafe_io`.)

use std::sync::Arc;

use super::stack::{RuntimeMaps, SourceMaps};
use crate::entry::Hit;

// SAFETY: `RuntimeMaps` holds no value tied to a runtime (no `'js` lifetime anywhere in it),
// so it is the same type under every lifetime, as rquickjs's own impls for `String` or
// `Arc<T>` declare.
unsafe impl<'js> rquickjs::JsLifetime<'js> for RuntimeMaps {
    type Changed<'to> = RuntimeMaps;
}

/// The source maps of `ctx`'s runtime, made on first use; `None` if they cannot be kept (the
/// host holds a borrow of the runtime's userdata across the import).
pub(crate) fn runtime_maps(ctx: &rquickjs::Ctx<'_>) -> Option<Arc<SourceMaps>> {
    if let Some(maps) = existing_runtime_maps(ctx) {
        return Some(maps);
    }
    let maps = Arc::new(SourceMaps::default());
    ctx.store_userdata(RuntimeMaps(Arc::clone(&maps))).ok()?;
    Some(maps)
}

/// The source maps of `ctx`'s runtime, if any module registered one.
pub(crate) fn existing_runtime_maps(ctx: &rquickjs::Ctx<'_>) -> Option<Arc<SourceMaps>> {
    ctx.userdata::<RuntimeMaps>()
        .map(|maps| Arc::clone(&maps.0))
}

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

/// Loads, through the runtime's resolver and loader, every module the module `source`
/// (compiled as `name`) imports, and theirs, without evaluating any of them: QuickJS's
/// `JS_ResolveModule` on a compile-only module. On failure the exception is pending in `ctx`.
pub(crate) fn load_imports_of(
    ctx: &rquickjs::Ctx<'_>,
    name: &std::ffi::CStr,
    source: &std::ffi::CStr,
) -> bool {
    use rquickjs::qjs;
    let raw = ctx.as_raw().as_ptr();
    let flags = (qjs::JS_EVAL_TYPE_MODULE | qjs::JS_EVAL_FLAG_COMPILE_ONLY) as i32;
    let len = source.to_bytes().len();
    // SAFETY: `raw` is the live context `ctx` borrows for the call. QuickJS's parser reads
    // `source` up to and including the NUL after its `len` bytes (a `CStr` has it), and `name`
    // to its NUL; both outlive the call, which only reads them. Compile-only evaluation
    // returns the module (or the exception marker) and runs nothing.
    let module = unsafe { qjs::JS_Eval(raw, source.as_ptr(), len as _, name.as_ptr(), flags) };
    // SAFETY: reads the tag of the value just returned.
    if unsafe { qjs::JS_IsException(module) } {
        return false;
    }
    // SAFETY: `module` is the module value `JS_Eval` returned for `raw`. Resolving loads its
    // imports through the runtime's loader (this crate's `PackLoader`), links nothing and
    // evaluates nothing; it leaves any exception pending in the context.
    let resolved = unsafe { qjs::JS_ResolveModule(raw, module) } >= 0;
    // SAFETY: releases the one reference `JS_Eval` returned, once; the module stays listed in
    // the context (as every loaded module does) until the context is freed.
    unsafe { qjs::JS_FreeValue(raw, module) };
    resolved
}
