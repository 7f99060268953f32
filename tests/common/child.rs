//! Child processes: a test binary re-invoking itself to run its ignored `child` test in a
//! role. The parent builds a [`Child`], and runs it to the end ([`Child::run`]), with a time
//! limit ([`Child::run_with_limit`]), or in the background ([`Child::spawn`]). The child's
//! `child` test starts with `let Some(role) = common::child::role() else { return };`.
//!
//! A child's stdout and stderr are always captured, read as they come by background threads:
//! what a child printed before it was killed is kept, and no pipe fills up.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The variable naming the child's role; unset in the parent.
pub const ROLE: &str = "BP_TEST_ROLE";

/// In the `child` test: the role this process was started in, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// In a child: a path the parent passed in variable `name`.
pub fn path_var(name: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(name).unwrap_or_else(|| panic!("{name} not set")))
}

/// In a child: becomes the user `BP_UID` names, if set and not root (root ignores file modes,
/// so tests of permissions drop to an unprivileged user; the parent made what it needs
/// accessible).
pub fn become_user() {
    let Some(uid) = std::env::var("BP_UID")
        .ok()
        .map(|u| u.parse::<u32>().unwrap())
    else {
        return;
    };
    if uid != 0 {
        // SAFETY: plain syscalls, no memory passed.
        unsafe {
            assert_eq!(libc::setgid(uid), 0);
            assert_eq!(libc::setuid(uid), 0);
        }
    }
}

/// A child process to be started: this test binary, running only its `child` test.
pub struct Child {
    role: String,
    command: Command,
}

impl Child {
    /// A child in `role`. It does not inherit the cache's own environment variables (the
    /// directory, the switch-off, the crash point): a test sets those explicitly.
    pub fn new(role: &str) -> Child {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["child", "--exact", "--ignored", "--nocapture", "--quiet"])
            .env(ROLE, role)
            .env_remove(bytecode_pack::ENV_CACHE_DIR)
            .env_remove(bytecode_pack::ENV_DISABLE)
            .env_remove("BYTECODE_PACK_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Child {
            role: role.to_owned(),
            command,
        }
    }

    pub fn env(mut self, name: &str, value: impl AsRef<OsStr>) -> Child {
        self.command.env(name, value);
        self
    }

    /// The child runs as user `uid` (see [`become_user`]).
    pub fn run_as(self, uid: u32) -> Child {
        self.env("BP_UID", uid.to_string())
    }

    pub fn env_remove(mut self, name: &str) -> Child {
        self.command.env_remove(name);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Child {
        self.command.current_dir(dir);
        self
    }

    /// Starts the child; its output is collected in the background.
    pub fn spawn(mut self) -> Running {
        let mut process = self
            .command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawn: {e}", self.role));
        Running {
            stdout: drain(process.stdout.take().unwrap()),
            stderr: drain(process.stderr.take().unwrap()),
            role: self.role,
            process,
        }
    }

    /// Runs the child to its end, within [`CHILD_LIMIT`].
    #[track_caller]
    pub fn run(self) -> Output {
        self.run_with_limit(CHILD_LIMIT)
    }

    /// Runs the child, killing it and panicking with the tail of its output if it is still
    /// running after `limit`.
    #[track_caller]
    pub fn run_with_limit(self, limit: Duration) -> Output {
        self.spawn().wait_with_limit(limit)
    }
}

/// How long a child may run unless its test sets a limit: far beyond what any takes, so that
/// a hung child fails its test instead of hanging the suite.
pub const CHILD_LIMIT: Duration = Duration::from_secs(300);

fn drain(mut stream: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A started child.
pub struct Running {
    role: String,
    process: std::process::Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Running {
    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().unwrap()
    }

    /// SIGKILL (a no-op once it has exited).
    pub fn kill(&mut self) {
        self.process.kill().unwrap();
    }

    /// Waits for its end, within [`CHILD_LIMIT`], and collects everything it printed.
    #[track_caller]
    pub fn wait(self) -> Output {
        self.wait_with_limit(CHILD_LIMIT)
    }

    /// Collects what it printed once it has exited (or been killed).
    fn collect(mut self) -> Output {
        let status = self.process.wait().unwrap();
        Output {
            role: self.role,
            status,
            stdout: self.stdout.join().unwrap(),
            stderr: self.stderr.join().unwrap(),
        }
    }

    /// [`Running::wait`], but a child still running after `limit` is killed, and this
    /// panics with the tail of what it printed (a child that prints its steps names the one
    /// that hung).
    #[track_caller]
    pub fn wait_with_limit(mut self, limit: Duration) -> Output {
        let started = Instant::now();
        while self.try_wait().is_none() {
            if started.elapsed() > limit {
                self.kill();
                let out = self.collect();
                panic!(
                    "{}: still running after {limit:?}; last output:\n{}",
                    out.role,
                    out.tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.collect()
    }
}

/// What a finished child did.
pub struct Output {
    pub role: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Its stdout; panics with both streams unless it exited successfully.
    #[track_caller]
    pub fn expect_success(self) -> String {
        assert!(
            self.status.success(),
            "{}: {}\n{}",
            self.role,
            self.status,
            self.tail(30)
        );
        self.stdout
    }

    /// The last `n` lines of stdout and of stderr.
    pub fn tail(&self, n: usize) -> String {
        let last = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            last(&self.stdout),
            last(&self.stderr)
        )
    }
}
