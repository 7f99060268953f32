//! Model-based property test: random put / get / compact / clear / reopen sequences against a
//! `HashMap`, through two handles (one reopened now and then), so cross-handle visibility,
//! supersede, compaction and eviction are all checked against the obvious model.

mod common;

use std::collections::HashMap;

use bytecode_pack::{Cache, Key, NewEntry};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: Vec<u8>,
        aux: Option<String>,
    },
    PutMany {
        batch: Vec<(u8, Vec<u8>)>,
    },
    Get {
        key: u8,
    },
    Compact,
    Clear,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..12u8, proptest::collection::vec(any::<u8>(), 1..600), proptest::option::of("[a-z]{0,8}"))
            .prop_map(|(key, value, aux)| Op::Put { key, value, aux }),
        2 => proptest::collection::vec((0..12u8, proptest::collection::vec(any::<u8>(), 1..200)), 0..6)
            .prop_map(|batch| Op::PutMany { batch }),
        6 => (0..12u8).prop_map(|key| Op::Get { key }),
        1 => Just(Op::Compact),
        1 => Just(Op::Clear),
        1 => Just(Op::Reopen),
    ]
}

/// What an entry holds: bytecode and aux.
type Stored = (Vec<u8>, Option<String>);

fn key(k: u8) -> Key {
    common::key("model", k.into())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn cache_behaves_like_a_map(ops in proptest::collection::vec(op(), 1..40)) {
        let tmp = common::tempdir();
        let root = tmp.path().join("cache");
        let writer = Cache::open(&root).unwrap();
        let mut reader = Cache::open(&root).unwrap();
        let mut model: HashMap<u8, Stored> = HashMap::new();
        let mut history: HashMap<u8, Vec<Stored>> = HashMap::new();
        for op in ops {
            match op {
                Op::Put { key: k, value, aux } => {
                    let mut entry = NewEntry::new("m", &value);
                    if let Some(aux) = aux.as_deref() {
                        entry = entry.aux(aux);
                    }
                    writer.put(&key(k), &entry).unwrap();
                    history.entry(k).or_default().push((value.clone(), aux.clone()));
                    model.insert(k, (value, aux));
                }
                Op::PutMany { batch } => {
                    let entries: Vec<NewEntry> = batch.iter().map(|(_, v)| NewEntry::new("m", v)).collect();
                    writer.put_many(batch.iter().zip(&entries).map(|((k, _), e)| (key(*k), e))).unwrap();
                    // Within a batch, as across puts, the last write of a key wins.
                    for (k, value) in batch {
                        history.entry(k).or_default().push((value.clone(), None));
                        model.insert(k, (value, None));
                    }
                }
                Op::Get { key: k } => {
                    // The writer and a new handle see exactly the model. The long-lived reader
                    // refreshes on a miss, so it never misses what the model has, and any hit
                    // it serves from an older snapshot is a version that was really put.
                    let got = writer.get(&key(k)).map(|h| (h.bytecode().to_vec(), h.aux().map(str::to_owned)));
                    prop_assert_eq!(got.as_ref(), model.get(&k));
                    let fresh = Cache::open(&root).unwrap().get(&key(k))
                        .map(|h| (h.bytecode().to_vec(), h.aux().map(str::to_owned)));
                    prop_assert_eq!(fresh.as_ref(), model.get(&k));
                    match reader.get(&key(k)) {
                        Some(hit) => {
                            let got = (hit.bytecode().to_vec(), hit.aux().map(str::to_owned));
                            prop_assert!(history.get(&k).is_some_and(|h| h.contains(&got)));
                        }
                        None => prop_assert!(!model.contains_key(&k)),
                    }
                }
                Op::Compact => {
                    let report = writer.compact().unwrap();
                    prop_assert_eq!(report.entries_after, model.len() as u64);
                }
                Op::Clear => {
                    writer.clear().unwrap();
                    model.clear();
                }
                Op::Reopen => reader = Cache::open(&root).unwrap(),
            }
            let stats = writer.stats().unwrap();
            prop_assert_eq!(stats.entries, model.len() as u64);
            prop_assert!(stats.live_bytes <= stats.pack_bytes || model.is_empty());
        }
        prop_assert!(writer.verify().unwrap().is_ok());
    }
}
