//! The script that maps a context's stacks, installed in two steps. When the context's first
//! module with a map loads, two native accessors take the places of `Error.prototype.stack`'s
//! getter and `Error.prepareStackTrace` (a few native calls), and the built-ins the script
//! uses are taken. The script itself (its bytecode kept in the cache) is loaded and run only
//! when a stack is first read, or when a host sets its own `Error.prepareStackTrace`: a start
//! that reads no stack runs none of it.
//!
//! The native accessors hold no JavaScript value: a reference from Rust is invisible to the
//! engine's cycle collector, and every built-in leads back to its context, so the context
//! would never be freed. What they need (the built-ins the script uses, the engine's own
//! accessors) is kept on the context's marker, the global [`INSTALLED`] object, as read-only
//! properties. They find `Error` as the global of that name when the script runs; a program
//! that replaced it by then has its errors' stacks left unmapped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rquickjs::function::This;
use rquickjs::object::Property;
use rquickjs::{Ctx, Function, Module, Object, Value};

use super::stack::SourceMaps;
use crate::cache::Cache;
use crate::key::Key;

/// The global property a context that maps its stacks carries (not enumerable): the marker
/// [`install`] keeps what it took on.
pub(super) const INSTALLED: &str = "__bytecodePackStackMaps";

/// What the native accessors keep for the script, until it takes their places.
struct Pending {
    maps: Arc<SourceMaps>,
    cache: Option<Cache>,
    /// Whether the script ran, or is running: the accessors then only pass calls on.
    ran: AtomicBool,
    /// Whether a failure to run it was logged.
    warned: AtomicBool,
}

/// What the engine says when a call finds the stack used up: a read made there cannot run
/// the script, and the next read tries again without a warning.
const STACK_OVERFLOW: &str = "Maximum call stack size exceeded";

/// Makes `ctx` map its stacks through `maps` (see the module's docs), keeping what it takes
/// on `marker`. `cache`, if given, keeps the script's bytecode.
pub(super) fn install<'js>(
    ctx: &Ctx<'js>,
    maps: &Arc<SourceMaps>,
    cache: Option<&Cache>,
    marker: &Object<'js>,
) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    let object: Object = globals.get("Object")?;
    let descriptor_of: Function = object.get("getOwnPropertyDescriptor")?;
    let define: Function = object.get("defineProperty")?;
    let error: Object = globals.get("Error")?;
    let proto: Object = error.get("prototype")?;
    let stack: Object = descriptor_of.call((proto.clone(), "stack"))?;
    let slot: Object = descriptor_of.call((error.clone(), "prepareStackTrace"))?;
    let reflect: Object = globals.get("Reflect")?;
    let strings: Object = globals.get::<_, Object>("String")?.get("prototype")?;
    let taken = Object::new(ctx.clone())?;
    taken.prop("apply", Property::from(reflect.get::<_, Value>("apply")?))?;
    for method in ["lastIndexOf", "slice", "split"] {
        taken.prop(method, Property::from(strings.get::<_, Value>(method)?))?;
    }
    taken.prop("defineProperty", Property::from(define.clone()))?;
    taken.prop("stack", Property::from(stack.clone()))?;
    taken.prop("slot", Property::from(slot.clone()))?;
    marker.prop("taken", Property::from(taken))?;
    let pending = Arc::new(Pending {
        maps: Arc::clone(maps),
        cache: cache.cloned(),
        ran: AtomicBool::new(false),
        warned: AtomicBool::new(false),
    });
    // A host's own function, set before: it is given mapped call sites from now on.
    let host: Value = slot
        .get::<_, Function>("get")?
        .call((This(error.clone()),))?;
    if host.is_function() {
        pending.ran.store(true, Ordering::Relaxed);
        return run_script(ctx, &pending);
    }
    let on_read = Arc::clone(&pending);
    let read_stack = Function::new(ctx.clone(), move |ctx: Ctx<'js>, this: This<Value<'js>>| {
        if let Some(error) = this.0.as_object().filter(|_| on_read.run_once(&ctx)) {
            // The script's getter stands where this one stood.
            return error.get::<_, Value>("stack");
        }
        engine_accessor(&ctx, "stack", "get")?.call::<_, Value>((this,))
    })?;
    let get_host = Function::new(ctx.clone(), move |ctx: Ctx<'js>, this: This<Value<'js>>| {
        engine_accessor(&ctx, "slot", "get")?.call::<_, Value>((this,))
    })?;
    let on_set = pending;
    let set_host = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, this: This<Value<'js>>, host: Value<'js>| {
            if let Some(error) = this.0.as_object().filter(|_| on_set.run_once(&ctx)) {
                // The script's setter stands where this one stood.
                return error.set("prepareStackTrace", host);
            }
            engine_accessor(&ctx, "slot", "set")?.call::<_, ()>((this, host))
        },
    )?;
    let accessor = |get: Function<'js>, set: Value<'js>, like: &Object<'js>| {
        let descriptor = Object::new(ctx.clone())?;
        descriptor.set("get", get)?;
        descriptor.set("set", set)?;
        descriptor.set("enumerable", like.get::<_, Value>("enumerable")?)?;
        descriptor.set("configurable", true)?;
        rquickjs::Result::Ok(descriptor)
    };
    let stack_set = stack.get::<_, Value>("set")?;
    define.call::<_, ()>((proto, "stack", accessor(read_stack, stack_set, &stack)?))?;
    let set_host = set_host.into_value();
    define.call::<_, ()>((
        error,
        "prepareStackTrace",
        accessor(get_host, set_host, &slot)?,
    ))
}

/// What [`install`] took: the built-ins the script uses and the engine's own accessors.
fn taken<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    ctx.globals().get::<_, Object>(INSTALLED)?.get("taken")
}

/// The engine's own `get` or `set` of `Error.prototype.stack` (`which` is `"stack"`) or
/// `Error.prepareStackTrace` (`"slot"`), as [`install`] found them.
fn engine_accessor<'js>(
    ctx: &Ctx<'js>,
    which: &str,
    side: &str,
) -> rquickjs::Result<Function<'js>> {
    taken(ctx)?.get::<_, Object>(which)?.get(side)
}

impl Pending {
    /// Runs the script if it has not run yet: whether it did now. A failure leaves this
    /// read's frames as they are (logged once per context, unless the stack was used up) and
    /// the next read tries again.
    fn run_once(&self, ctx: &Ctx<'_>) -> bool {
        if self.ran.swap(true, Ordering::Relaxed) {
            return false;
        }
        let Err(e) = run_script(ctx, self) else {
            return true;
        };
        self.ran.store(false, Ordering::Relaxed);
        let why = why_not(ctx, e);
        if why == STACK_OVERFLOW {
            log::debug!("bytecode-pack: stack left unmapped: {why}");
        } else if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!("bytecode-pack: cannot map stack traces to source files here: {why}");
        }
        false
    }
}

/// Logs why `ctx` cannot map its stacks (`e`, taking the exception it stands for).
pub(super) fn warn_cannot_map(ctx: &Ctx<'_>, e: rquickjs::Error) {
    let why = why_not(ctx, e);
    log::warn!("bytecode-pack: cannot map stack traces to source files here: {why}");
}

/// What `e` says went wrong, taking the exception it stands for.
fn why_not(ctx: &Ctx<'_>, e: rquickjs::Error) -> String {
    match e {
        rquickjs::Error::Exception => ctx.catch().as_exception().map_or_else(
            || "an exception".to_owned(),
            |exception| exception.message().unwrap_or_default(),
        ),
        other => other.to_string(),
    }
}

/// Loads (or compiles) the script and runs it with what [`install`] took.
fn run_script(ctx: &Ctx<'_>, pending: &Pending) -> rquickjs::Result<()> {
    let maps = Arc::clone(&pending.maps);
    let original = Function::new(ctx.clone(), move |module: String, line: u32, col: u32| {
        maps.original(&module, line, col)
            .map(|(file, line, col)| rquickjs::convert::List((file, line, col)))
    })?;
    let setup = match pending
        .cache
        .as_ref()
        .and_then(|cache| glue_from_cache(ctx, cache))
    {
        Some(setup) => setup,
        None => {
            let module = Module::declare(ctx.clone(), GLUE_NAME, GLUE)?;
            glue_of(module)?
        }
    };
    setup.call::<_, ()>((original, taken(ctx)?))
}

/// The glue's module name.
const GLUE_NAME: &str = "bytecode-pack:stack-maps";

/// The glue's setup function, its module loaded from (or compiled into) `cache`: compiling it
/// would cost a warm start a few percent. Storing it is best effort (a read-only cache just
/// compiles it each time), quiet, and never waits for the writer lock.
fn glue_from_cache<'js>(ctx: &Ctx<'js>, cache: &Cache) -> Option<Function<'js>> {
    let options = super::CompileOptions::default();
    let key = glue_key();
    // Neither counted as a load nor as a compile: the glue is no module of the host's.
    let loaded = cache
        .get(&key)
        .filter(crate::Hit::is_engine_bytecode)
        .and_then(|hit| super::engine::load_verified_bytecode(ctx, &hit).ok());
    let module = match loaded {
        Some(module) => module,
        None => {
            let module = Module::declare(ctx.clone(), GLUE_NAME, GLUE).ok()?;
            let bytecode = super::Bytecode(module.write(options.write_options()).ok()?);
            // Never waits for another process's writer: the next start can store it.
            let entry = bytecode.entry(GLUE_NAME);
            let _ = cache.put_many_within([(key, &entry)], std::time::Duration::ZERO);
            module
        }
    };
    glue_of(module).ok()
}

/// Where the glue's bytecode is kept.
fn glue_key() -> Key {
    let options = super::CompileOptions::default();
    options.key(Key::for_source(GLUE_NAME, GLUE.as_bytes()), GLUE_NAME)
}

/// The setup function the glue module exports, once it is evaluated.
fn glue_of<'js>(
    module: Module<'js, rquickjs::module::Declared>,
) -> rquickjs::Result<Function<'js>> {
    let (module, promise) = module.eval()?;
    promise.finish::<()>()?;
    module.get("default")
}

/// Maps stacks lazily: `Error.prototype.stack`'s getter is wrapped so that reading an
/// error's stack maps the frames QuickJS formatted (and keeps the result on the error), so no
/// JavaScript runs when an error is made (an error made at a stack overflow keeps its stack).
/// `Error.prepareStackTrace` becomes an accessor that keeps the host's own function: while it
/// is one, the engine calls a wrapper that passes it the mapped call sites instead.
const GLUE: &str = r#"export default (original, taken) => {
  // Built-ins taken at install: a program that replaces them later must not break its stacks.
  const { apply, lastIndexOf, slice, split, defineProperty, stack, slot } = taken;
  let host;
  // "    at name (file:line:col)" or "    at file:line:col", mapped where it can be.
  const frame = (line) => {
    if (apply(slice, line, [0, 7]) !== "    at ") return line;
    const open = apply(lastIndexOf, line, [" ("]);
    const inParens = open > 0 && apply(slice, line, [-1]) === ")";
    const place = inParens ? apply(slice, line, [open + 2, -1]) : apply(slice, line, [7]);
    const c = apply(lastIndexOf, place, [":"]);
    const l = c > 0 ? apply(lastIndexOf, place, [":", c - 1]) : -1;
    if (l <= 0) return line;
    const at = original(apply(slice, place, [0, l]), +apply(slice, place, [l + 1, c]), +apply(slice, place, [c + 1]));
    if (at === undefined) return line;
    const where = `${at[0]}:${at[1]}:${at[2]}`;
    return inParens ? `${apply(slice, line, [0, open])} (${where})` : `    at ${where}`;
  };
  const mapStack = (text) => {
    const lines = apply(split, text, ["\n"]);
    let out = "";
    for (let i = 0; i < lines.length; i++) out += (i > 0 ? "\n" : "") + frame(lines[i]);
    return out;
  };
  defineProperty(Error.prototype, "stack", {
    configurable: true,
    enumerable: stack.enumerable,
    get() {
      const text = apply(stack.get, this, []);
      if (typeof text !== "string" || typeof host === "function") return text;
      let mapped = text;
      try {
        mapped = mapStack(text);
        if (mapped !== text) apply(stack.set, this, [mapped]);
      } catch {}
      return mapped;
    },
    set(value) { return apply(stack.set, this, [value]); },
  });
  const site = (s) => {
    const file = s.getFileName(), line = s.getLineNumber(), col = s.getColumnNumber();
    if (typeof file !== "string" || typeof line !== "number" || typeof col !== "number") return s;
    const at = original(file, line, col);
    if (at === undefined) return s;
    return {
      getFileName: () => at[0],
      getLineNumber: () => at[1],
      getColumnNumber: () => at[2],
      getFunctionName: () => s.getFunctionName(),
      getFunction: () => s.getFunction(),
      isNative: () => s.isNative(),
      isConstructor: () => s.isConstructor(),
      toString: () => `${s.getFunctionName() ?? "<anonymous>"} (${at[0]}:${at[1]}:${at[2]})`,
    };
  };
  const wrap = (fn) => (error, sites) => {
    let list;
    try {
      list = [];
      for (let i = 0; i < sites.length; i++) list[i] = site(sites[i]);
    } catch {
      list = sites;
    }
    return apply(fn, Error, [error, list]);
  };
  const set = (value) => {
    host = value;
    apply(slot.set, Error, [typeof value === "function" ? wrap(value) : value]);
  };
  set(apply(slot.get, Error, []));
  defineProperty(Error, "prepareStackTrace", {
    configurable: true,
    enumerable: slot.enumerable,
    get() { return host; },
    set,
  });
}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quickjs::maps::PendingMap;
    use crate::quickjs::stack::{self, MapSource};
    use rquickjs::module::Evaluated;

    /// A map of `m.js` that names `src/m.ts:1:1` for each of its positions.
    const MAP: &str = r#"{"version":3,"sources":["src/m.ts"],"names":[],"mappings":"AAAA"}"#;

    /// Module `m.js` evaluated from `source` in `ctx`, its map registered as a loader does.
    fn mapped_module<'js>(ctx: &Ctx<'js>, cache: &Cache, source: &str) -> Module<'js, Evaluated> {
        let map = Arc::new(PendingMap::ready(MAP.into(), None));
        stack::register(ctx, "m.js", MapSource::Held(map), Some(cache));
        let declared = Module::declare(ctx.clone(), "m.js", source.to_owned()).unwrap();
        let (module, promise) = declared.eval().unwrap();
        promise.finish::<()>().unwrap();
        module
    }

    /// The error the function `fail` of `module` throws.
    fn thrown_by<'js>(ctx: &Ctx<'js>, module: &Module<'js, Evaluated>) -> Object<'js> {
        let fail: Function = module.get("fail").unwrap();
        let thrown = fail.call::<_, ()>(()).unwrap_err();
        assert!(matches!(thrown, rquickjs::Error::Exception));
        ctx.catch().into_object().unwrap()
    }

    const FAIL: &str = "export function fail() { throw new Error('x'); }";

    /// The script is loaded only when a stack is first read, then maps it; a context that
    /// read none, and one that did, are freed with their runtime (a debug build of the engine
    /// aborts on any object left over, which is what a JavaScript value held from Rust
    /// would be).
    #[test]
    fn the_script_runs_when_a_stack_is_first_read_and_contexts_free_cleanly() {
        let tmp = crate::private_tempdir();
        let cache = Cache::open(tmp.path()).unwrap();
        let runtime = rquickjs::Runtime::new().unwrap();
        let unread = rquickjs::Context::full(&runtime).unwrap();
        unread.with(|ctx| drop(mapped_module(&ctx, &cache, FAIL)));
        drop(unread);
        let read = rquickjs::Context::full(&runtime).unwrap();
        let stack = read.with(|ctx| {
            let error = thrown_by(&ctx, &mapped_module(&ctx, &cache, FAIL));
            let host: Value = ctx.eval("Error.prepareStackTrace").unwrap();
            assert!(
                host.is_undefined(),
                "the engine's value until the script runs"
            );
            assert!(cache.get(&glue_key()).is_none(), "not run before a read");
            error.get::<_, String>("stack").unwrap()
        });
        assert!(stack.contains("src/m.ts:1:1"), "{stack}");
        assert!(
            cache.get(&glue_key()).is_some(),
            "run, and kept, at the first read"
        );
        drop(read);
        drop(runtime);
    }

    /// A first stack read with the stack all but used up (a stack overflow caught where it
    /// happened) cannot run the script: a later read runs it and is mapped.
    #[test]
    fn a_first_read_at_a_stack_overflow_leaves_a_later_one_mapped() {
        let tmp = crate::private_tempdir();
        let cache = Cache::open(tmp.path()).unwrap();
        let runtime = rquickjs::Runtime::new().unwrap();
        runtime.set_max_stack_size(256 << 10);
        let context = rquickjs::Context::full(&runtime).unwrap();
        let deep =
            "export function deep() { try { return deep(); } catch (e) { return e.stack; } }";
        let stack = context.with(|ctx| {
            let module = mapped_module(&ctx, &cache, &format!("{FAIL}\n{deep}"));
            let deep: Function = module.get("deep").unwrap();
            let _: Value = deep.call(()).unwrap();
            thrown_by(&ctx, &module).get::<_, String>("stack").unwrap()
        });
        assert!(stack.contains("src/m.ts:1:1"), "{stack}");
        drop(context);
        drop(runtime);
    }
}
