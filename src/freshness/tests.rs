//! The freshness rules, one test each.

use super::*;

/// A FIFO (standing in for any device) named as an input is refused by `put` and missed by
/// `get` without being opened: an inotify watch sees no open, and does see one made after.
#[cfg(target_os = "linux")]
#[test]
fn special_files_are_refused_without_being_opened() {
    use rustix::fs::{CWD, FileType, Mode, OFlags, inotify, mknodat, open};
    let dir = crate::private_tempdir();
    let fifo = dir.path().join("fifo");
    mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
    let watch = inotify::init(inotify::CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(&watch, &fifo, inotify::WatchFlags::OPEN).unwrap();
    let opened = || {
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        let mut events = inotify::Reader::new(&watch, &mut buf);
        events
            .next()
            .is_ok_and(|e| e.events().contains(inotify::ReadFlags::OPEN))
    };
    assert!(matches!(
        record(&Input::path(&fifo), None),
        Err(Error::Input { .. })
    ));
    let path = fifo.as_os_str().as_encoded_bytes();
    let view = InputView {
        path,
        content_hash: &[0; 16],
        stat: None,
    };
    assert!(matches!(check(view, now_nanos(), None), Freshness::Stale));
    assert!(!opened(), "the FIFO was opened");
    drop(open(&fifo, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap());
    assert!(opened(), "the watch sees no opens");
}

#[test]
fn recorded_paths_are_what_std_absolute_gives() {
    let paths = [
        "/a/b.js",
        "/a/../b.js",
        "/a/./b.js",
        "/a//b.js",
        "//a/b.js",
        "///a/b.js",
        "/a/b/",
        "/a/b/.",
        "/a/.b.js",
        "/a/b.js/..",
        "/a/..b/.c.js",
        "/a/b/./c.js",
        "/.",
        "/",
        "a/b.js",
        "./a.js",
        "../a.js",
        "",
    ];
    for p in paths {
        let path = Path::new(p);
        let expected = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        assert_eq!(recorded_path(path), expected, "{p:?}");
    }
}

#[test]
fn racy_window_is_relative_to_recording() {
    let t = 10_000_000_000i64;
    let old = StatRecord {
        size: 1,
        mtime_ns: t - 3_000_000_000,
        ctime_ns: t - 3_000_000_000,
        ino: 1,
        dev: 1,
    };
    assert!(stat_is_old_enough(&old, t, false));
    assert!(!stat_is_old_enough(
        &StatRecord { ctime_ns: t, ..old },
        t,
        false
    ));
    // Whole-second ctimes get the 2 s window, fine ones 30 ms.
    let whole = t - 1_000_000_000;
    assert!(!stat_is_old_enough(
        &StatRecord {
            ctime_ns: whole,
            ..old
        },
        t,
        false
    ));
    assert!(stat_is_old_enough(
        &StatRecord {
            ctime_ns: whole + 7,
            ..old
        },
        t,
        false
    ));
    // The mtime is whatever a tool set it to (future, whole seconds): it does not decide.
    for mtime_ns in [t + 3_600_000_000_000, t - 1, 0] {
        assert!(stat_is_old_enough(
            &StatRecord { mtime_ns, ..old },
            t,
            false
        ));
    }
    // Another machine's clock gets the wide window, fine-grained or not: a ctime 1 s old
    // by this clock may be a moment old by the server's.
    let fine_second_old = StatRecord {
        ctime_ns: whole + 7,
        ..old
    };
    assert!(!stat_is_old_enough(&fine_second_old, t, true));
    assert!(stat_is_old_enough(&old, t, true));
}

/// Stat data of a device learned to be stamped by another machine's clock needs the wide
/// racy window, however fine its ctimes; a local one the fine window; a settable one is
/// never trusted. (Devices no real mount has, learned into this process's table.)
#[cfg(target_os = "linux")]
#[test]
fn the_racy_window_follows_whose_clock_stamps_the_ctime() {
    use crate::sys::{Ctime, learn_made_up_device};
    let t = 100_000_000_000i64;
    let stat = |dev: u64, age_ns: i64| StatRecord {
        size: 1,
        mtime_ns: 0,
        ctime_ns: t - age_ns + 7,
        ino: 1,
        dev,
    };
    let (remote, local, settable) = (u64::MAX - 11, u64::MAX - 12, u64::MAX - 13);
    learn_made_up_device(remote, Ctime::RemoteClock);
    learn_made_up_device(local, Ctime::LocalClock);
    learn_made_up_device(settable, Ctime::Settable);
    let trusted = |dev, age_ns| stat_is_trusted(&stat(dev, age_ns), t);
    let (second, three_seconds) = (1_000_000_000, 3_000_000_000);
    assert!(!trusted(remote, second) && trusted(remote, three_seconds));
    assert!(trusted(local, second) && trusted(local, three_seconds));
    assert!(!trusted(settable, three_seconds));
}

/// The one re-recording rule: the instant is the earliest re-hash; stat data is kept only
/// if it was trusted then; "changed while read" is kept as none.
#[test]
fn rerecording_keeps_only_stat_data_trusted_at_the_first_rehash() {
    let t = 100_000_000_000i64;
    let stat = |ctime_ns: i64| StatRecord {
        size: 1,
        mtime_ns: 0,
        ctime_ns,
        ino: 1,
        // A device no mount has, learned as stamped by this kernel's clock.
        dev: u64::MAX - 21,
    };
    #[cfg(target_os = "linux")]
    crate::sys::learn_made_up_device(u64::MAX - 21, crate::sys::Ctime::LocalClock);
    let (old, fresh) = (stat(t - 5_000_000_007), stat(t - 1_000_007));
    assert_eq!(rerecord(&[]), None);
    let rerecorded = rerecord(&[
        (0, Some(old), t + 10),
        (1, Some(fresh), t),
        (2, None, t + 5),
    ]);
    assert_eq!(
        rerecorded,
        Some(Rerecord {
            recorded_at_ns: t,
            // The racy one's old stat data is not kept under the later instant: none.
            stats: vec![(0, Some(old)), (1, None), (2, None)],
        })
    );
}

#[test]
fn with_content_mismatch_records_no_stat() {
    let dir = crate::private_tempdir();
    let p = dir.path().join("x.js");
    std::fs::write(&p, "new").unwrap();
    let (rec, _) = record(&Input::with_content(&p, b"old"), None).unwrap();
    assert!(rec.stat.is_none());
    assert_eq!(rec.content_hash, xxh3_128(b"old").to_le_bytes());
    let (rec, _) = record(&Input::with_content(&p, b"new"), None).unwrap();
    assert!(rec.stat.is_some());
    assert!(matches!(
        record(&Input::path(dir.path().join("missing")), None),
        Err(Error::Input { .. })
    ));
}
