//! Child processes that cannot outlive the test that started them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A running control-plane process whose stdout and stderr go to one log file.
#[derive(Debug)]
pub(crate) struct ManagedProcess {
    pub(crate) name: &'static str,
    pub(crate) log: PathBuf,
    child: Child,
    reaped: bool,
}

impl ManagedProcess {
    /// Spawns `program args` with `dir` as working directory, logging to `log`.
    ///
    /// The child gets `PR_SET_PDEATHSIG=SIGKILL`, so if the test process dies without running
    /// destructors (SIGKILL, abort) the kernel kills the child too.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
        log: &Path,
    ) -> Result<Self> {
        let out =
            File::create(log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", log.display()), e))?;
        let parent = std::process::id() as libc::pid_t;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid), as
        // required between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then nobody would ever
                // send the death signal, so refuse to start.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("parent exited before exec"));
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(cmd)
            .map_err(|e| Error::io(format!("spawning {}", program.display()), e))?;
        Ok(ManagedProcess {
            name,
            log: log.to_path_buf(),
            child,
            reaped: false,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(description)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.reaped = true;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("cannot query process state: {e}")),
        }
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    pub(crate) fn start_failed(&self, reason: impl Into<String>) -> Error {
        Error::StartFailed {
            component: self.name,
            reason: reason.into(),
            log: self.log.clone(),
            log_tail: self.log_tail(40),
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if !self.reaped {
            // SAFETY: plain kill(2) on our own, not yet reaped, child: the PID cannot have
            // been recycled while it is still our zombie or running child.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }
}

/// The kernel sends PR_SET_PDEATHSIG when the *thread* that forked the child exits, not the
/// process. libtest runs every test on its own thread, so a control plane shared between
/// tests (or created on a short-lived blocking-pool thread) would be killed as soon as the
/// thread that happened to start it finished. All forks therefore happen on one thread that
/// lives as long as the test process.
fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        let spawned = std::thread::Builder::new()
            .name("testkit-spawner".to_string())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    // The requester may have given up; nothing else to tell it then.
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the testkit spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let send_result = match sender.lock() {
        Ok(guard) => guard.send((cmd, reply_tx)),
        Err(poisoned) => poisoned.into_inner().send((cmd, reply_tx)),
    };
    if send_result.is_err() {
        return Err(std::io::Error::other("the testkit spawner thread is gone"));
    }
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the testkit spawner thread did not answer"))?
}

/// Stops all processes: SIGTERM to all at once, up to `grace` for them to exit, then SIGKILL
/// to the rest. Every child is reaped before this returns.
pub(crate) fn terminate_all(processes: &mut [ManagedProcess], grace: Duration) {
    for p in processes.iter() {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut running = false;
        for p in processes.iter_mut() {
            if !p.reaped && p.exited().is_none() {
                running = true;
            }
        }
        if !running || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in processes.iter_mut() {
        if !p.reaped {
            p.signal(libc::SIGKILL);
            // wait() blocks until the kernel has reaped it; after SIGKILL that is immediate.
            if p.child.wait().is_ok() {
                p.reaped = true;
            }
        }
    }
}

/// True while a process with this PID exists and has not exited (a zombie, dead but not yet
/// reaped, counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 performs only the existence and permission check.
    let rc = unsafe { libc::kill(raw, 0) };
    let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // /proc/<pid>/stat is "pid (comm) STATE ..."; comm may contain spaces and parentheses.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// Asks the kernel for a currently free loopback port. Another process may grab it before our
/// child binds it; callers retry on "address already in use".
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| Error::io("binding 127.0.0.1:0 to pick a port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("reading the picked port", e))?
        .port();
    Ok(port)
}

/// The last `lines` lines of a log file (reads at most the final 64 KiB).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(cannot open {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(len.saturating_sub(WINDOW)))
        .is_err()
    {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// True when the log file contains `needle` (read whole: only used on startup logs).
pub(crate) fn log_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path).is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
}

/// True when the log shows the process failed because its port was taken.
pub(crate) fn lost_port_race(path: &Path) -> bool {
    log_tail(path, 60).contains("address already in use")
}
