//! Child processes that cannot outlive us.
//!
//! Each child leads its own process group (a terminal's Ctrl-C reaches only us, and we stop
//! the children in order) and gets `PR_SET_PDEATHSIG`: the kernel kills it when the thread
//! that spawned it ends. That thread is a dedicated spawner that lives as long as the
//! process, so a test binary or `pgpilot dev` killed with SIGKILL takes its children along.
//! On a normal exit, an `atexit` hook tears down whatever is still registered (a cluster
//! kept in a `static` is never dropped). Stopping is SIGTERM to the group, a grace period,
//! then SIGKILL.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

/// A running child process, stopped (with its whole process group) on `stop` or drop.
pub struct Supervised {
    name: String,
    /// Where its output goes, when not to our terminal.
    log: Option<PathBuf>,
    child: Mutex<Option<Child>>,
    pid: u32,
}

impl Supervised {
    /// Spawns `command` as the leader of a new process group that dies with us.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: Option<PathBuf>,
    ) -> io::Result<Arc<Supervised>> {
        let parent = std::process::id();
        command.process_group(0);
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(io::Error::other("parent exited during spawn"));
                }
                Ok(())
            });
        }
        let child = spawn_from_long_lived_thread(command)?;
        let supervised = Arc::new(Supervised {
            name: name.to_owned(),
            log,
            pid: child.id(),
            child: Mutex::new(Some(child)),
        });
        let weak: Weak<Supervised> = Arc::downgrade(&supervised);
        register(weak);
        Ok(supervised)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> Option<&PathBuf> {
        self.log.as_ref()
    }

    /// `Some(status)` once the process has exited (also after `stop`).
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut guard = lock(&self.child);
        match guard.as_mut() {
            None => Some(ExitStatus::default()),
            Some(child) => child.try_wait().ok().flatten(),
        }
    }

    /// SIGTERM to the process group, up to `grace` to exit, then SIGKILL. Idempotent.
    pub fn stop(&self, grace: Duration) -> Option<ExitStatus> {
        let mut guard = lock(&self.child);
        let mut child = guard.take()?;
        let group = -(self.pid as libc::pid_t);
        if let Ok(Some(status)) = child.try_wait() {
            // The leader is gone; anything left in its group goes too.
            signal(group, libc::SIGKILL);
            return Some(status);
        }
        signal(group, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                signal(group, libc::SIGKILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(group, libc::SIGKILL);
        child.wait().ok()
    }
}

impl Supervised {
    /// SIGKILL to the whole group, as when a node loses the process: no handler runs.
    pub fn kill(&self) -> Option<ExitStatus> {
        let mut child = lock(&self.child).take()?;
        signal(-(self.pid as libc::pid_t), libc::SIGKILL);
        child.wait().ok()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn signal(target: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) with a process-group id we created; ESRCH (already gone) is fine.
    unsafe {
        libc::kill(target, sig);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawns on a thread that never ends, so `PR_SET_PDEATHSIG` fires only when the whole
/// process does (it tracks the spawning *thread*, and test threads end early).
fn spawn_from_long_lived_thread(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("devcluster-spawner".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
                // The senders live in a static: this loop never ends.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the devcluster spawner thread");
        Mutex::new(tx)
    });
    let (done_tx, done_rx) = mpsc::channel();
    lock(sender)
        .send(Box::new(move || {
            let _ = done_tx.send(command.spawn());
        }))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    done_rx
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Something to tear down when the process exits, if nobody did before.
pub trait Teardown: Send + Sync {
    fn teardown(&self);
}

impl Teardown for Supervised {
    fn teardown(&self) {
        self.stop(Duration::from_secs(5));
    }
}

static REGISTRY: Mutex<Vec<Weak<dyn Teardown>>> = Mutex::new(Vec::new());
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Registers `item` for teardown at exit, newest first. Also installs, once, the exit hook
/// and a panic hook that remembers a panic happened (a failed test), so logs are kept.
pub fn register(item: Weak<dyn Teardown>) {
    static HOOKS: Once = Once::new();
    HOOKS.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info)
        }));
        // SAFETY: registering a plain `extern "C" fn` with atexit(3).
        unsafe {
            libc::atexit(teardown_at_exit);
        }
    });
    let mut registry = lock(&REGISTRY);
    registry.retain(|w| w.strong_count() > 0);
    registry.push(item);
}

/// True when a panic happened anywhere in this process (a test failed), or on this thread
/// right now (a value dropped while unwinding).
pub fn failure_seen() -> bool {
    PANICKED.load(Ordering::SeqCst) || std::thread::panicking()
}

extern "C" fn teardown_at_exit() {
    let items = std::mem::take(&mut *lock(&REGISTRY));
    for item in items.iter().rev().filter_map(Weak::upgrade) {
        item.teardown();
    }
}
