//! A host's start as the README writes one: `PackResolver` around `FileResolver` (`.`) and
//! `PackLoader`, importing `main.js` from the working directory.

use bytecode_pack::Cache;
use bytecode_pack::quickjs::{PackLoader, PackResolver};
use rquickjs::convert::Coerced;
use rquickjs::loader::FileResolver;
use rquickjs::{CatchResultExt, Context, Module, Object, Runtime};

/// Imports `main.js` in a new runtime over `cache`: its `result` export as a string (as
/// `String(result)` gives it), or `error: ` and the engine's message on one line. The runtime is dropped before this returns, so what the start
/// compiled and learned is stored by then.
pub fn start_main(cache: &Cache) -> String {
    let runtime = Runtime::new().unwrap();
    runtime.set_loader(
        PackResolver::new(FileResolver::default().with_path("."), cache.clone()),
        PackLoader::new(cache.clone()),
    );
    let context = Context::full(&runtime).unwrap();
    context.with(|ctx| {
        match Module::import(&ctx, "main.js")
            .and_then(|p| p.finish::<Object>())
            .catch(&ctx)
        {
            Ok(namespace) => namespace.get::<_, Coerced<String>>("result").unwrap().0,
            Err(e) => format!("error: {}", e.to_string().replace('\n', " | ")),
        }
    })
}
