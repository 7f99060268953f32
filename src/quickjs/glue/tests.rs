use super::*;
use crate::quickjs::maps::PendingMap;
use crate::quickjs::stack::{self, MapSource};
use rquickjs::module::Evaluated;

/// A map of `m.js` that names `src/m.ts:1:1` for each of its positions.
const MAP: &str = r#"{"version":3,"sources":["src/m.ts"],"names":[],"mappings":"AAAA"}"#;

/// Module `m.js` evaluated from `source` in `ctx`, its map registered as a loader does.
fn mapped_module<'js>(ctx: &Ctx<'js>, cache: &Cache, source: &str) -> Module<'js, Evaluated> {
    let map = Arc::new(PendingMap::ready(MAP.into()));
    stack::register(ctx, "m.js", Some(MapSource::Held(map)), Some(cache)).unwrap();
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

/// What `f` gives in a context of a new runtime, with a cache; both are freed after it (a
/// debug build of the engine aborts on any object left over).
fn in_context<R>(f: impl for<'js> FnOnce(&Ctx<'js>, &Cache) -> R) -> R {
    let tmp = crate::private_tempdir();
    let cache = Cache::open(tmp.path()).unwrap();
    let runtime = rquickjs::Runtime::new().unwrap();
    let context = rquickjs::Context::full(&runtime).unwrap();
    let out = context.with(|ctx| f(&ctx, &cache));
    drop(context);
    drop(runtime);
    out
}

/// What `f` gives with two contexts of one runtime, `home` and `other`, and a cache; all are
/// freed after it (a debug build of the engine aborts on any object left over).
fn in_two_contexts<R>(f: impl FnOnce(&rquickjs::Context, &rquickjs::Context, &Cache) -> R) -> R {
    let tmp = crate::private_tempdir();
    let cache = Cache::open(tmp.path()).unwrap();
    let runtime = rquickjs::Runtime::new().unwrap();
    let (home, other) = (
        rquickjs::Context::full(&runtime).unwrap(),
        rquickjs::Context::full(&runtime).unwrap(),
    );
    let out = f(&home, &other, &cache);
    drop((home, other));
    drop(runtime);
    out
}

/// The stack of the error that `fail`, a function saved from `home`, throws there now.
fn stack_thrown_by(home: &rquickjs::Context, fail: rquickjs::Persistent<Value<'static>>) -> String {
    home.with(|ctx| {
        let fail = fail.restore(&ctx).unwrap().into_function().unwrap();
        assert!(fail.call::<_, ()>(()).is_err());
        let error = ctx.catch().into_object().unwrap();
        error.get("stack").unwrap()
    })
}

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
        // Neither the throw nor a read of `Error.prepareStackTrace` runs the script.
        let _: Value = ctx.eval("Error.prepareStackTrace").unwrap();
        let ran = format!("Object.hasOwn(globalThis.{INSTALLED}, 'script')");
        assert!(
            !ctx.eval::<bool, _>(ran.as_str()).unwrap(),
            "not run before a read"
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
    let deep = "export function deep() { try { return deep(); } catch (e) { return e.stack; } }";
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

/// A program's indexed accessors on `Array.prototype` and `Object.prototype` (which take over
/// assignments to array elements) neither change a mapped frame's file nor the call sites a
/// host's `Error.prepareStackTrace` is given.
#[test]
fn a_programs_indexed_accessors_on_prototypes_change_no_mapped_frame() {
    let poison = "for (const p of [Array.prototype, Object.prototype]) for (const i of \
        ['0', '1', '2']) Object.defineProperty(p, i, \
        { configurable: true, get() { return 'evil.ts'; }, set(v) {} });";
    let (stack, host): (String, String) = in_context(|ctx, cache| {
        let module = mapped_module(ctx, cache, FAIL);
        ctx.eval::<(), _>(poison).unwrap();
        let stack = thrown_by(ctx, &module).get("stack").unwrap();
        let host = "Error.prepareStackTrace = (e, sites) => sites[0].getFileName();";
        ctx.eval::<(), _>(host).unwrap();
        (stack, thrown_by(ctx, &module).get("stack").unwrap())
    });
    assert!(
        stack.contains("src/m.ts:1:1") && !stack.contains("evil"),
        "{stack}"
    );
    assert_eq!(host, "src/m.ts");
}

/// A program that wraps `Error.prototype.stack` after the accessors were installed keeps
/// its wrapping when the script runs, and what it wraps is mapped.
#[test]
fn a_programs_own_stack_getter_stays_and_wraps_mapped_stacks() {
    let wrap = "const d = Object.getOwnPropertyDescriptor(Error.prototype, 'stack');\
        Object.defineProperty(Error.prototype, 'stack', { configurable: true,\
        get() { return '[x] ' + d.get.call(this); } });";
    let stacks: Vec<String> = in_context(|ctx, cache| {
        let module = mapped_module(ctx, cache, FAIL);
        ctx.eval::<(), _>(wrap).unwrap();
        // Two errors, each read twice: the program's getter runs at every read.
        (0..2)
            .flat_map(|_| {
                let error = thrown_by(ctx, &module);
                [error.get("stack").unwrap(), error.get("stack").unwrap()]
            })
            .collect()
    });
    for stack in &stacks {
        assert!(stack.starts_with("[x] "), "{stack}");
        assert!(stack.contains("src/m.ts:1:1"), "{stack}");
    }
}

/// An error handed to another context of the runtime keeps a stack there (the engine's,
/// as that context has it), and its own context's script is left to it.
#[test]
fn another_contexts_read_of_a_mapped_error_gets_a_stack() {
    in_two_contexts(|home, other, cache| {
        let (handed, fail) = home.with(|ctx| {
            let module = mapped_module(&ctx, cache, FAIL);
            let fail: Function = module.get("fail").unwrap();
            let error = thrown_by(&ctx, &module);
            let save = |value| rquickjs::Persistent::save(&ctx, value);
            (save(error.into_value()), save(fail.into_value()))
        });
        let there: String = other.with(|ctx| {
            // Read by a script of that context (a value restored keeps its own context).
            ctx.globals()
                .set("handed", handed.restore(&ctx).unwrap())
                .unwrap();
            ctx.eval("handed.stack").unwrap()
        });
        assert!(there.contains("fail") && !there.contains("m.ts"), "{there}");
        let here = stack_thrown_by(home, fail);
        assert!(here.contains("src/m.ts:1:1"), "{here}");
    });
}

/// A context whose global `Error` is a mapping context's finds these accessors where it looks
/// for its own: its reads and writes of a mapped error's stack, and of
/// `Error.prepareStackTrace`, find nothing there (undefined, nothing kept) instead of calling
/// themselves until the engine's stack runs out, and the mapping context maps on after.
#[test]
fn a_context_given_a_mapping_contexts_error_does_not_call_itself() {
    in_two_contexts(|home, other, cache| {
        let (handed, error, fail) = home.with(|ctx| {
            let module = mapped_module(&ctx, cache, FAIL);
            let fail: Function = module.get("fail").unwrap();
            let handed = thrown_by(&ctx, &module);
            let error: Value = ctx.globals().get("Error").unwrap();
            let save = |value| rquickjs::Persistent::save(&ctx, value);
            (
                save(handed.into_value()),
                save(error),
                save(fail.into_value()),
            )
        });
        other.with(|ctx| {
            let globals = ctx.globals();
            globals
                .set("handed", handed.restore(&ctx).unwrap())
                .unwrap();
            globals.set("Error", error.restore(&ctx).unwrap()).unwrap();
            for script in [
                "handed.stack",
                "handed.stack = 'set'; handed.stack",
                "Error.prepareStackTrace = () => 'host'; Error.prepareStackTrace",
            ] {
                match ctx.eval::<Value, _>(script) {
                    Ok(value) => assert!(value.is_undefined(), "{script}: {value:?}"),
                    Err(e) => panic!("{script}: {e}: {:?}", ctx.catch()),
                }
            }
        });
        let here = stack_thrown_by(home, fail);
        assert!(here.contains("src/m.ts:1:1"), "{here}");
    });
}

/// Another context's own stack getter, which reads the stack of the error's cause, is called
/// for a mapped error handed to it and for its cause in turn: a call that fell back may fall
/// back again, up to a depth.
#[test]
fn another_contexts_own_getter_may_read_a_mapped_errors_cause_through_the_fallback() {
    in_two_contexts(|home, other, cache| {
        let handed = home.with(|ctx| {
            drop(mapped_module(&ctx, cache, FAIL));
            let error: Value = ctx
                .eval("new Error('outer', { cause: new Error('inner') })")
                .unwrap();
            rquickjs::Persistent::save(&ctx, error)
        });
        let read: String = other.with(|ctx| {
            let getter = "Object.defineProperty(Error.prototype, 'stack', { configurable: true, \
             get() { return 'B:' + (this.cause ? this.cause.stack : 'end'); } });";
            ctx.eval::<(), _>(getter).unwrap();
            let globals = ctx.globals();
            globals
                .set("handed", handed.restore(&ctx).unwrap())
                .unwrap();
            ctx.eval("handed.stack").unwrap()
        });
        assert_eq!(read, "B:B:end");
    });
}

/// A program that froze the marker keeps its stacks, unmapped: storing the script's
/// functions fails, the script is given up (a host's function set after is the engine's to
/// call, unwrapped), and nothing is thrown at the program.
#[test]
fn a_frozen_marker_leaves_stacks_unmapped_and_never_throws() {
    let stacks: Vec<String> = in_context(|ctx, cache| {
        let module = mapped_module(ctx, cache, FAIL);
        ctx.eval::<(), _>(format!("Object.freeze(globalThis.{INSTALLED});"))
            .unwrap();
        let stacks = (0..2)
            .map(|_| thrown_by(ctx, &module).get("stack").unwrap())
            .collect();
        // Given up, not wrapping: a host's function is the engine's to call, as set.
        let kept =
            "const f = () => 'h'; Error.prepareStackTrace = f; Error.prepareStackTrace === f";
        assert!(ctx.eval::<bool, _>(kept).unwrap());
        stacks
    });
    for stack in &stacks {
        assert!(stack.contains("m.js:1"), "{stack}");
    }
}

/// A mapped stack gives its error no property of its own (the engine keeps a stack out of
/// sight): its keys, its JSON and its own descriptors are those of an unmapped one, and a
/// second read gives the same text.
#[test]
fn a_mapped_stack_leaves_the_error_without_a_property_of_its_own() {
    in_context(|ctx, cache| {
        let error = thrown_by(ctx, &mapped_module(ctx, cache, FAIL));
        ctx.globals().set("error", error).unwrap();
        let read: String = ctx.eval("error.stack").unwrap();
        assert!(read.contains("src/m.ts:1:1"), "{read}");
        let seen: String = ctx
            .eval(
                "Object.keys(error).join() + JSON.stringify(error) \
                 + Object.hasOwn(error, 'stack') + error.stack",
            )
            .unwrap();
        assert_eq!(seen, format!("{{}}false{read}"));
    });
}

/// What the program put on `Object.prototype` is not taken for the script's functions:
/// stacks are mapped as ever.
#[test]
fn a_polluted_object_prototype_is_not_read_for_the_script() {
    let stack: String = in_context(|ctx, cache| {
        let module = mapped_module(ctx, cache, FAIL);
        ctx.eval::<(), _>("Object.prototype.script = {};").unwrap();
        thrown_by(ctx, &module).get("stack").unwrap()
    });
    assert!(stack.contains("src/m.ts:1:1"), "{stack}");
}

/// A global whose lookups throw (a proxy in its prototype chain) leaves no exception pending
/// when a map is registered (the engine would fail the next import with it).
#[test]
fn a_throwing_global_leaves_no_exception_pending() {
    in_context(|ctx, cache| {
        let trap = "Object.setPrototypeOf(globalThis, new Proxy(Object.getPrototypeOf(globalThis), \
                    { has() { throw new Error('no lookups'); } }));";
        ctx.eval::<(), _>(trap).unwrap();
        let map = Arc::new(PendingMap::ready(MAP.into()));
        stack::register(ctx, "m.js", Some(MapSource::Held(map)), Some(cache)).unwrap();
        assert!(!ctx.has_exception());
    });
}

/// Where `Error.prepareStackTrace` cannot be replaced (a frozen `Error`), neither accessor is:
/// stacks stay the engine's, not half mapped.
#[test]
fn a_frozen_error_is_left_as_it_is() {
    let stack: String = in_context(|ctx, cache| {
        ctx.eval::<(), _>("Object.freeze(Error);").unwrap();
        let error = thrown_by(ctx, &mapped_module(ctx, cache, FAIL));
        error.get("stack").unwrap()
    });
    assert!(
        stack.contains("m.js:1") && !stack.contains("m.ts"),
        "{stack}"
    );
}

/// A stack read mapped stays mapped after a host sets its own `Error.prepareStackTrace`
/// (which formats the stacks of errors made after it).
#[test]
fn a_stack_read_mapped_stays_mapped_once_a_host_prepares_stacks() {
    let reads: String = in_context(|ctx, cache| {
        let error = thrown_by(ctx, &mapped_module(ctx, cache, FAIL));
        ctx.globals().set("error", error).unwrap();
        ctx.eval(
            "const first = error.stack; Error.prepareStackTrace = () => 'host';\
                  first + '|' + error.stack",
        )
        .unwrap()
    });
    let (first, second) = reads.split_once('|').unwrap();
    assert!(first.contains("src/m.ts:1:1"), "{first}");
    assert_eq!(first, second);
}
