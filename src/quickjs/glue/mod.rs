//! The script that maps a context's stacks, installed in two steps. When the context's first
//! module with a map loads, two native accessors take the places of `Error.prototype.stack`'s
//! getter and `Error.prepareStackTrace` (a few native calls), and the built-ins the script
//! uses are taken. The script itself (its bytecode kept in the cache) is loaded and run when
//! a stack is first read, or a host sets its own `Error.prepareStackTrace` (at once if one was
//! set before): a start that reads no stack runs none of it. The accessors stay, and call the
//! functions the script gave from then on, so a program that wrapped them keeps its wrapping.
//!
//! The native accessors hold no JavaScript value: a reference from Rust is invisible to the
//! engine's cycle collector, and every built-in leads back to its context, so the context
//! would never be freed. What they need (the built-ins the script uses, the engine's own
//! accessors, then the script's functions) is kept on the context's marker, the global
//! [`INSTALLED`] object, as read-only properties.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use rquickjs::function::This;
use rquickjs::object::{Accessor, Property};
use rquickjs::{Ctx, Function, Module, Object, Value};

use super::stack::SourceMaps;
use crate::cache::Cache;
use crate::key::Key;

/// The global property a context that maps its stacks carries (not enumerable): the marker
/// [`install`] keeps what it took on.
const INSTALLED: &str = "__bytecodePackStackMaps";

/// What the engine says when a call finds the stack used up: a read made there cannot run
/// the script, and a later one tries again.
const STACK_OVERFLOW: &str = "Maximum call stack size exceeded";

/// Tries cut short by a used-up stack after which a context's stacks stay unmapped.
const MOST_OVERFLOWS: u32 = 64;

/// Where the script stands, in [`Pending::state`]: not run (or run, its functions then on
/// the marker), running, or given up on.
const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const GAVE_UP: u8 = 2;

/// What the native accessors of one context share.
struct Pending {
    maps: Arc<SourceMaps>,
    cache: Option<Cache>,
    /// The context they were made in (its address). A call from another context of the
    /// runtime (on an error handed over) is passed to the engine's accessors there.
    home: usize,
    state: AtomicU8,
    overflows: AtomicU32,
    /// A host's function set before the script ran is still to be wrapped (wrapping it was
    /// cut short): tried again at the next read or set.
    wrap_pending: AtomicBool,
}

/// Gives the script up ([`GAVE_UP`]) if [`Pending::state`] is still [`RUNNING`] when dropped:
/// a panic while it runs neither leaves it running nor makes every read hit it again.
struct Running<'a>(&'a AtomicU8);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(RUNNING, GAVE_UP, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Makes `ctx` map its stacks through `maps` (see the module's docs), unless it was marked
/// before. A failure leaves the frames as they are (logged, once per context where the
/// context can be marked); only an uncatchable error (an interrupt) is returned. `cache`, if
/// given, keeps the script's bytecode.
pub(super) fn install_once(
    ctx: &Ctx<'_>,
    maps: &Arc<SourceMaps>,
    cache: Option<&Cache>,
) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    match globals.contains_key(INSTALLED) {
        Ok(false) => {}
        Ok(true) => return Ok(()),
        // A global whose lookup throws (a proxy): its exception is taken, not left pending.
        Err(e) => return warn_cannot_map(ctx, e),
    }
    // Marked first: a context where installing fails is not tried again at every module.
    let marked = Object::new(ctx.clone()).and_then(|marker| {
        // Only its own properties count: nothing inherited from `Object.prototype` is read.
        marker.set_prototype(None)?;
        globals.prop(INSTALLED, Property::from(marker.clone()))?;
        Ok(marker)
    });
    match marked.and_then(|marker| install(ctx, maps, cache, &marker)) {
        Ok(()) => Ok(()),
        Err(e) => warn_cannot_map(ctx, e),
    }
}

/// Installs the accessors in `ctx`, keeping what it takes on `marker`.
fn install<'js>(
    ctx: &Ctx<'js>,
    maps: &Arc<SourceMaps>,
    cache: Option<&Cache>,
    marker: &Object<'js>,
) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    let object: Object = globals.get("Object")?;
    let descriptor_of: Function = object.get("getOwnPropertyDescriptor")?;
    let error: Object = globals.get("Error")?;
    let proto: Object = error.get("prototype")?;
    let stack: Object = descriptor_of.call((proto.clone(), "stack"))?;
    let slot: Object = descriptor_of.call((error.clone(), "prepareStackTrace"))?;
    let taken = take(ctx, &error, &stack, &slot)?;
    // Both replaceable, or neither is replaced.
    let mut usable = stack.get::<_, bool>("configurable")? && slot.get("configurable")?;
    for name in ["stackGet", "stackSet", "slotGet", "slotSet"] {
        usable &= taken.get::<_, Value>(name)?.is_function();
    }
    if !usable {
        let why = "`Error.prototype.stack` or `Error.prepareStackTrace` is not the engine's";
        return Err(rquickjs::Exception::throw_type(ctx, why));
    }
    marker.prop("taken", Property::from(taken))?;
    let pending = Arc::new(Pending {
        maps: Arc::clone(maps),
        cache: cache.cloned(),
        home: ctx.as_raw().as_ptr() as usize,
        state: AtomicU8::new(IDLE),
        overflows: AtomicU32::new(0),
        wrap_pending: AtomicBool::new(false),
    });
    // Defined by the engine directly (no script runs between the two, so no interrupt can
    // leave one without the other).
    let on_read = Arc::clone(&pending);
    let read_stack = move |ctx: Ctx<'js>, this: This<Value<'js>>| on_read.read_stack(&ctx, this);
    let write_stack = |ctx: Ctx<'js>, this: This<Value<'js>>, value: Value<'js>| {
        call_engine(&ctx, "stackSet", |set| set.call::<_, ()>((this, value))).map(drop)
    };
    let on_get = Arc::clone(&pending);
    let get_host = move |ctx: Ctx<'js>, this: This<Value<'js>>| on_get.get_host(&ctx, this);
    let on_set = Arc::clone(&pending);
    let set_host = move |ctx: Ctx<'js>, this: This<Value<'js>>, host: Value<'js>| {
        on_set.set_host(&ctx, this, host)
    };
    let stack_enumerable = stack.get::<_, bool>("enumerable")?;
    let slot_enumerable = slot.get::<_, bool>("enumerable")?;
    let stack_accessor = Accessor::new(read_stack, write_stack).configurable();
    let slot_accessor = Accessor::new(get_host, set_host).configurable();
    match stack_enumerable {
        true => proto.prop("stack", stack_accessor.enumerable())?,
        false => proto.prop("stack", stack_accessor)?,
    }
    match slot_enumerable {
        true => error.prop("prepareStackTrace", slot_accessor.enumerable())?,
        false => error.prop("prepareStackTrace", slot_accessor)?,
    }
    // A host's own function, set before: it is given mapped call sites from now on.
    let host: Value = slot.get::<_, Function>("get")?.call((This(error),))?;
    if host.is_function() {
        pending.script(ctx)?;
    }
    Ok(())
}

/// The built-ins the script uses and the engine's accessors (`stack` and `slot` are the
/// descriptors of `Error.prototype.stack` and `Error.prepareStackTrace`), as one object of
/// read-only properties.
fn take<'js>(
    ctx: &Ctx<'js>,
    error: &Object<'js>,
    stack: &Object<'js>,
    slot: &Object<'js>,
) -> rquickjs::Result<Object<'js>> {
    let globals = ctx.globals();
    let reflect: Object = globals.get("Reflect")?;
    let strings: Object = globals.get::<_, Object>("String")?.get("prototype")?;
    let taken = Object::new(ctx.clone())?;
    // Only its own properties count: nothing inherited from `Object.prototype` is read.
    taken.set_prototype(None)?;
    let keep = |name: &str, value: Value<'js>| taken.prop(name, Property::from(value));
    keep("apply", reflect.get("apply")?)?;
    for method in ["lastIndexOf", "slice", "split"] {
        keep(method, strings.get(method)?)?;
    }
    let object: Object = globals.get("Object")?;
    keep("freeze", object.get("freeze")?)?;
    keep("defineProperty", object.get("defineProperty")?)?;
    // A context made without `WeakMap` maps each read of a stack again.
    if let Some(weak_map) = globals.get::<_, Option<Object>>("WeakMap")? {
        let weak_methods: Object = weak_map.get("prototype")?;
        keep("weakGet", weak_methods.get("get")?)?;
        keep("weakSet", weak_methods.get("set")?)?;
        keep("WeakMap", weak_map.into_value())?;
    }
    keep("stackGet", stack.get("get")?)?;
    keep("stackSet", stack.get("set")?)?;
    keep("slotGet", slot.get("get")?)?;
    keep("slotSet", slot.get("set")?)?;
    keep("Error", error.clone().into_value())?;
    Ok(taken)
}

impl Pending {
    /// `Error.prototype.stack`'s getter: the script's, run now if need be, else the engine's.
    fn read_stack<'js>(
        &self,
        ctx: &Ctx<'js>,
        this: This<Value<'js>>,
    ) -> rquickjs::Result<Value<'js>> {
        if this.0.is_object()
            && let Some(script) = self.script(ctx)?
        {
            return script.get::<_, Function>("getStack")?.call((this,));
        }
        engine_get(ctx, "stackGet", this)
    }

    /// `Error.prepareStackTrace`'s getter: the host's own function, as the script keeps it
    /// once it ran, else the engine's value.
    fn get_host<'js>(
        &self,
        ctx: &Ctx<'js>,
        this: This<Value<'js>>,
    ) -> rquickjs::Result<Value<'js>> {
        if let Some(script) = self.ran_script(ctx)? {
            return script.get::<_, Function>("getHost")?.call(());
        }
        engine_get(ctx, "slotGet", this)
    }

    /// `Error.prepareStackTrace`'s setter: a host's own function runs the script, which gives
    /// it mapped call sites; any other value goes where the script (if it ran) or the engine
    /// keeps it.
    fn set_host<'js>(
        &self,
        ctx: &Ctx<'js>,
        this: This<Value<'js>>,
        host: Value<'js>,
    ) -> rquickjs::Result<()> {
        let script = match host.is_function() {
            true => self.script(ctx)?,
            false => self.ran_script(ctx)?,
        };
        match script {
            Some(script) => script.get::<_, Function>("setHost")?.call((host,)),
            None => call_engine(ctx, "slotSet", |set| set.call::<_, ()>((this, host))).map(drop),
        }
    }

    /// Whether `ctx` is the context these accessors were made in.
    fn is_home(&self, ctx: &Ctx<'_>) -> bool {
        ctx.as_raw().as_ptr() as usize == self.home
    }

    /// The script's functions if it ran in `ctx`, these accessors' context.
    fn ran_script<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Option<Object<'js>>> {
        if !self.is_home(ctx) {
            return Ok(None);
        }
        let script: Value = ctx.globals().get::<_, Object>(INSTALLED)?.get("script")?;
        Ok(script.into_object())
    }

    /// The script's functions, the script run now if it has not run: `None` in another
    /// context, while it runs (a read it causes), once given up on, or if this try failed
    /// (that read's frames stay as they are). An uncatchable error (an interrupt) is thrown
    /// on.
    fn script<'js>(&self, ctx: &Ctx<'js>) -> rquickjs::Result<Option<Object<'js>>> {
        if !self.is_home(ctx) {
            return Ok(None);
        }
        if let Some(script) = self.ran_script(ctx)? {
            if self.wrap_pending.load(Ordering::Relaxed) {
                let get = script.get::<_, Function>("getHost");
                match get.and_then(|get| get.call::<_, Value>(())) {
                    Ok(host) => {
                        self.wrap_pending.store(false, Ordering::Relaxed);
                        self.wrap(ctx, &script, host)?;
                    }
                    Err(e) => throw_on_uncatchable(ctx, e)?,
                }
            }
            return Ok(Some(script));
        }
        if self
            .state
            .compare_exchange(IDLE, RUNNING, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Ok(None);
        }
        let _running = Running(&self.state);
        // What the engine's slot holds now, and the script's functions, kept on the marker
        // before anything else changes.
        let run = || {
            let taken = taken(ctx)?;
            let error = taken.get::<_, Value>("Error")?;
            let current: Value = taken.get::<_, Function>("slotGet")?.call((This(error),))?;
            let script = run_script(ctx, self, current.clone())?;
            let marker: Object = ctx.globals().get(INSTALLED)?;
            marker.prop("script", Property::from(script.clone()))?;
            rquickjs::Result::Ok((script, current))
        };
        let (script, current) = match run() {
            Ok(ran) => ran,
            Err(e) => return self.failed(ctx, e).map(|()| None),
        };
        self.state.store(IDLE, Ordering::Relaxed);
        // A host's own function set before: wrapped now, to be given mapped call sites.
        if current.is_function() {
            self.wrap(ctx, &script, current)?;
        }
        Ok(Some(script))
    }

    /// Hands the host's function `host` to the script to be wrapped. If that is cut short, the
    /// engine keeps calling it unwrapped until the next read or set tries again.
    fn wrap<'js>(
        &self,
        ctx: &Ctx<'js>,
        script: &Object<'js>,
        host: Value<'js>,
    ) -> rquickjs::Result<()> {
        let set = script.get::<_, Function>("setHost");
        if let Err(e) = set.and_then(|set| set.call::<_, ()>((host,))) {
            self.wrap_pending.store(true, Ordering::Relaxed);
            throw_on_uncatchable(ctx, e)?;
        }
        Ok(())
    }

    /// Notes that running the script failed with `e`, taking its exception: a used-up stack
    /// is tried again at a later read ([`MOST_OVERFLOWS`] times), an interrupt is thrown on
    /// and tried again, anything else gives up (logged once).
    fn failed(&self, ctx: &Ctx<'_>, e: rquickjs::Error) -> rquickjs::Result<()> {
        let exception = matches!(e, rquickjs::Error::Exception).then(|| ctx.catch());
        if let Some(exception) = exception.as_ref().filter(|e| e.is_uncatchable_error()) {
            self.state.store(IDLE, Ordering::Relaxed);
            return Err(ctx.throw(exception.clone()));
        }
        let why = match &exception {
            Some(exception) => message_of(exception),
            None => e.to_string(),
        };
        let again = why == STACK_OVERFLOW
            && self.overflows.fetch_add(1, Ordering::Relaxed) + 1 < MOST_OVERFLOWS;
        if again {
            log::debug!("bytecode-pack: a stack left unmapped: {why}");
            self.state.store(IDLE, Ordering::Relaxed);
        } else {
            log::warn!("bytecode-pack: cannot map stack traces to source files here: {why}");
            self.state.store(GAVE_UP, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// What [`install`] took in `ctx`.
fn taken<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
    ctx.globals().get::<_, Object>(INSTALLED)?.get("taken")
}

/// Calls the engine's accessor `name` (`stackGet`, `stackSet`, `slotGet` or `slotSet`) in
/// `ctx` with `call`: as [`install`] took it there, or, in a context that took none (a call
/// from it on an error of one that did, or one whose install failed), the accessor that
/// context's `Error` has now, if it is a function. `None` if there is none.
///
/// That accessor may be one of these (the context's global `Error` is a mapping context's),
/// whose call falls back again: calls through such accessors nest at most
/// [`MOST_FALLBACKS`] deep on a thread, and the innermost finds none, where they would nest
/// until the engine's stack ran out. (A program's own accessor there may read another
/// error's stack, legitimately, within that depth.)
fn call_engine<'js, R>(
    ctx: &Ctx<'js>,
    name: &str,
    call: impl FnOnce(Function<'js>) -> rquickjs::Result<R>,
) -> rquickjs::Result<Option<R>> {
    let globals = ctx.globals();
    let taken = globals
        .get::<_, Option<Object>>(INSTALLED)?
        .map(|marker| marker.get::<_, Option<Object>>("taken"))
        .transpose()?
        .flatten();
    if let Some(taken) = taken {
        return taken
            .get::<_, Option<Function>>(name)?
            .map(call)
            .transpose();
    }
    if FALLBACKS.get() >= MOST_FALLBACKS {
        return Ok(None);
    }
    let error: Object = globals.get("Error")?;
    let (holder, key) = match name {
        "stackGet" | "stackSet" => (error.get("prototype")?, "stack"),
        _ => (error, "prepareStackTrace"),
    };
    let descriptor_of: Function = globals
        .get::<_, Object>("Object")?
        .get("getOwnPropertyDescriptor")?;
    let descriptor: Option<Object> = descriptor_of.call((holder, key))?;
    let side = if name.ends_with("Get") { "get" } else { "set" };
    let Some(accessor) = descriptor
        .map(|descriptor| descriptor.get::<_, Value>(side))
        .transpose()?
        .and_then(Value::into_function)
    else {
        return Ok(None);
    };
    let _nested = Fallback::enter();
    call(accessor).map(Some)
}

/// How deep calls through accessors [`call_engine`] fell back to nest on a thread.
const MOST_FALLBACKS: u32 = 8;

thread_local! {
    /// How many of [`call_engine`]'s fallback calls are under way on this thread.
    static FALLBACKS: Cell<u32> = const { Cell::new(0) };
}

/// One fallback call counted in [`FALLBACKS`] while it lives, even through a panic.
struct Fallback;

impl Fallback {
    fn enter() -> Fallback {
        FALLBACKS.set(FALLBACKS.get() + 1);
        Fallback
    }
}

impl Drop for Fallback {
    fn drop(&mut self) {
        FALLBACKS.set(FALLBACKS.get() - 1);
    }
}

/// What the engine's getter `name` (see [`call_engine`]) gives for `this`; undefined if
/// there is none.
fn engine_get<'js>(
    ctx: &Ctx<'js>,
    name: &str,
    this: This<Value<'js>>,
) -> rquickjs::Result<Value<'js>> {
    let got = call_engine(ctx, name, |get| get.call((this,)))?;
    Ok(got.unwrap_or_else(|| Value::new_undefined(ctx.clone())))
}

/// Takes the exception `e` stands for, throwing it on if it is uncatchable (an interrupt).
fn throw_on_uncatchable(ctx: &Ctx<'_>, e: rquickjs::Error) -> rquickjs::Result<()> {
    if matches!(e, rquickjs::Error::Exception) {
        let exception = ctx.catch();
        if exception.is_uncatchable_error() {
            return Err(ctx.throw(exception));
        }
    }
    Ok(())
}

/// Logs why `ctx` cannot map its stacks (`e`, taking the exception it stands for), or throws
/// it on if it is uncatchable (an interrupt).
fn warn_cannot_map(ctx: &Ctx<'_>, e: rquickjs::Error) -> rquickjs::Result<()> {
    let why = match e {
        rquickjs::Error::Exception => {
            let exception = ctx.catch();
            if exception.is_uncatchable_error() {
                return Err(ctx.throw(exception));
            }
            message_of(&exception)
        }
        other => other.to_string(),
    };
    log::warn!("bytecode-pack: cannot map stack traces to source files here: {why}");
    Ok(())
}

/// An exception's message.
fn message_of(exception: &Value<'_>) -> String {
    exception.as_exception().map_or_else(
        || "an exception".to_owned(),
        |exception| exception.message().unwrap_or_default(),
    )
}

/// Loads (or compiles) the script and runs it with what [`install`] took and `current`, the
/// value `Error.prepareStackTrace` holds: the functions it gives.
fn run_script<'js>(
    ctx: &Ctx<'js>,
    pending: &Pending,
    current: Value<'js>,
) -> rquickjs::Result<Object<'js>> {
    let maps = Arc::clone(&pending.maps);
    // One string, `file\nline\ncol` (a mapped file has no control characters), which the
    // script splits: an array made here would be filled by assignment, which a program's
    // indexed setter on `Object.prototype` intercepts.
    let original = Function::new(ctx.clone(), move |module: String, line: u32, col: u32| {
        maps.original(&module, line, col)
            .map(|(file, line, col)| format!("{file}\n{line}\n{col}"))
    })?;
    let setup = glue_setup(ctx, pending.cache.as_ref())?;
    setup.call((original, taken(ctx)?, current))
}

/// The glue's module name.
const GLUE_NAME: &str = "bytecode-pack:stack-maps";

/// The glue's setup function, its module loaded from `cache`, or compiled (and stored there,
/// if given): compiling it costs more than loading it. Storing it is best effort (a read-only
/// cache just compiles it each time), quiet, and never waits for the writer lock.
fn glue_setup<'js>(ctx: &Ctx<'js>, cache: Option<&Cache>) -> rquickjs::Result<Function<'js>> {
    let key = glue_key();
    // Neither counted as a load nor as a compile: the glue is no module of the host's.
    let hit = cache.and_then(|cache| cache.get(&key));
    let loaded = match hit.filter(crate::Hit::is_engine_bytecode) {
        Some(hit) => super::engine::load_verified_bytecode(ctx, &hit).map(Some),
        None => Ok(None),
    };
    let module = match loaded {
        Ok(Some(module)) => module,
        missed => {
            // Bytes the engine would not read are compiled instead, unless an interrupt
            // stops it.
            if let Err(e) = missed {
                throw_on_uncatchable(ctx, e)?;
            }
            let module = Module::declare(ctx.clone(), GLUE_NAME, GLUE)?;
            if let Some(cache) = cache {
                let options = super::CompileOptions::default();
                let bytecode = super::Bytecode(module.write(options.write_options())?);
                // Never waits for another process's writer: the next start can store it.
                let entry = bytecode.entry(GLUE_NAME);
                let _ = cache.put_many_within([(key, &entry)], std::time::Duration::ZERO);
            }
            module
        }
    };
    glue_of(module)
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

/// Maps stacks lazily. Its setup returns the functions the native accessors call once it ran:
/// `getStack`, the getter of `Error.prototype.stack`, maps the frames QuickJS formatted (and
/// remembers the result for that error), so no JavaScript runs when an error is made (an error made
/// at a stack overflow keeps its stack); `getHost` and `setHost` keep the host's own
/// `Error.prepareStackTrace`: while it is a function, the engine calls a wrapper that passes it
/// the mapped call sites instead.
const GLUE: &str = include_str!("script.js");

#[cfg(test)]
mod tests;
