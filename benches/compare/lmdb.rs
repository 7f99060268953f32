//! LMDB through heed: the same bytes under the same keys, a read transaction + get per load.

use std::path::Path;

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};

pub struct Lmdb {
    pub env: Env,
    db: Database<Bytes, Bytes>,
}

impl Lmdb {
    pub fn open(dir: &Path) -> Lmdb {
        std::fs::create_dir_all(dir).unwrap();
        // SAFETY: the environment is opened once per process at a time (the cold benchmark
        // closes it before reopening) and nothing else maps or truncates its files.
        let env = unsafe { EnvOpenOptions::new().map_size(4 << 30).open(dir).unwrap() };
        let mut wtxn = env.write_txn().unwrap();
        let db = env.create_database(&mut wtxn, None).unwrap();
        wtxn.commit().unwrap();
        Lmdb { env, db }
    }

    /// [`Lmdb::open`] without fsync at commit (`MDB_NOSYNC`): the durability `Durability::Process`
    /// gives, for comparing write costs.
    pub fn open_no_sync(dir: &Path) -> Lmdb {
        std::fs::create_dir_all(dir).unwrap();
        // SAFETY: as in `open`; NO_SYNC only skips fsync, which a crash of this benchmark
        // cannot make unsafe.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(4 << 30)
                .flags(heed::EnvFlags::NO_SYNC)
                .open(dir)
                .unwrap()
        };
        let mut wtxn = env.write_txn().unwrap();
        let db = env.create_database(&mut wtxn, None).unwrap();
        wtxn.commit().unwrap();
        Lmdb { env, db }
    }

    pub fn put_all<'a>(&self, items: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        let mut wtxn = self.env.write_txn().unwrap();
        for (k, v) in items {
            self.db.put(&mut wtxn, k, v).unwrap();
        }
        wtxn.commit().unwrap();
    }

    /// A load: read transaction, get, and the length of the zero-copy value.
    pub fn get_len(&self, key: &[u8]) -> Option<usize> {
        let rtxn = self.env.read_txn().unwrap();
        self.db.get(&rtxn, key).unwrap().map(<[u8]>::len)
    }

    pub fn close(self) {
        self.env.prepare_for_closing().wait();
    }
}
