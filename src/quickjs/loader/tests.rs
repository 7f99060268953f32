use super::*;
use crate::NewEntry;

/// Another tree's entry is reused only through a pointer this crate stored, to bytecode
/// this crate compiled: bytes a caller `put`, under the target's key or the pointer's, are
/// never stored again as engine bytecode (which a later start would give `Module::load`).
#[test]
fn another_trees_entry_is_reused_only_if_this_crate_compiled_it() {
    let tmp = crate::private_tempdir();
    let cache = Cache::open(tmp.path().join("cache")).unwrap();
    let loader = PackLoader::new(cache.clone());
    let source = tmp.path().join("m.js");
    std::fs::write(&source, "export const x = 1;").unwrap();
    let (target, pointer, by_hand) = (
        Key::from_bytes([7; 16]),
        Key::from_bytes([8; 16]),
        Key::from_bytes([9; 16]),
    );
    let compiled = NewEntry::new("m.js", b"not bytecode").inputs(vec![Input::path(&source)]);
    let put = |key: &Key, entry: &NewEntry<'_>| cache.put(key, entry).unwrap();
    put(&target, &compiled);
    put(
        &pointer,
        &NewEntry::new("m.js", target.as_bytes()).pointer(),
    );
    put(&by_hand, &NewEntry::new("m.js", target.as_bytes()));
    let content = cache.get(&target).unwrap().recorded_input_hashes().next();
    let reused = |pointer: &Key| {
        loader
            .compiled_elsewhere(pointer, "m.js", content)
            .is_some()
    };
    assert!(
        !reused(&pointer),
        "a caller's bytes are not engine bytecode"
    );
    put(&target, &compiled.clone().engine_bytecode());
    assert!(
        reused(&pointer),
        "this crate's bytecode, through its pointer"
    );
    assert!(!reused(&by_hand), "a pointer put by hand");
}

/// A name asked for again is another context importing: the count starts over there.
#[test]
fn requests_are_counted_per_context() {
    let mut requested = Requested::default();
    for name in ["a.js", "b.js", "c.js"] {
        requested.note(name);
    }
    assert_eq!(requested.0.len(), 3);
    requested.note("a.js");
    requested.note("d.js");
    assert_eq!(requested.0.len(), 2);
}

#[test]
fn extensions_are_what_std_path_gives() {
    let names = [
        "a/b.js",
        "b.mjs",
        "a/b",
        "a/.js",
        ".js",
        "a/b.",
        "a/b.c.js",
        "a.b/c",
        "a/b.js/",
        "a/b.js/.",
        "a/b.js/..",
        "..",
        ".",
        "",
        "/",
        "a/..js",
        "a/b..js",
        "./x.js",
    ];
    for name in names {
        let expected = std::path::Path::new(name)
            .extension()
            .and_then(|e| e.to_str());
        assert_eq!(extension(name), expected, "{name:?}");
    }
}
