//! Keeps the secrets in this process's memory out of core files and away
//! from debuggers: every command reads an app secret or a token (`serve`,
//! `demo` and `check-config` read secrets, `token` holds a token), so the
//! binary locks itself down before it reads anything.
//!
//! Two settings, because either alone can be undone by the host:
//!
//! - `prctl(PR_SET_DUMPABLE, 0)`: the kernel writes no core file on a
//!   crash signal (unless `fs.suid_dumpable = 2`, which dumps even such
//!   processes, readable by root), refuses `ptrace` attachment by
//!   same-uid processes, and makes `/proc/PID/*` (`mem`, `environ`, ...)
//!   owned by root.
//! - `RLIMIT_CORE` 0 (soft and hard): covers the `suid_dumpable = 2` case
//!   for file core patterns, and `systemd-coredump`, which honours the
//!   limit it is handed.
//!
//! `unsafe` is forbidden in this crate, so the calls go through `rustix`.

use std::io;

use rustix::process::{self, DumpableBehavior, Resource, Rlimit};

/// Why the process could not be locked down.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE)")]
    Dumpable(#[source] io::Error),
    #[error("cannot set the core file size limit to 0 (setrlimit RLIMIT_CORE)")]
    CoreLimit(#[source] io::Error),
}

/// Makes this process non-dumpable and its core size limit 0. Call it
/// first thing in `main`, before any secret is read; both settings last
/// for the life of the process (the binary never calls `execve`, which
/// would reset the first).
pub fn forbid_core_dumps() -> Result<(), GuardError> {
    process::set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .map_err(|errno| GuardError::Dumpable(errno.into()))?;
    // Lowering a limit is always allowed; the hard limit goes too, so
    // nothing later in the process can raise the soft one again.
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    match process::setrlimit(Resource::Core, none) {
        Ok(()) => Ok(()),
        // A seccomp filter may refuse the call itself (systemd's
        // `SystemCallFilter=~@resources` refuses setrlimit); a limit the
        // service manager already set to 0 (`LimitCORE=0`) is as good.
        Err(_) if process::getrlimit(Resource::Core) == none => Ok(()),
        Err(errno) => Err(GuardError::CoreLimit(errno.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_ends_up_non_dumpable_without_core_files() {
        // Affects the test binary as a whole, which is harmless: nothing in
        // the unit tests relies on being dumped or traced.
        forbid_core_dumps().expect("lowering needs no privilege");
        assert_eq!(
            process::dumpable_behavior().unwrap(),
            DumpableBehavior::NotDumpable
        );
        let limit = process::getrlimit(Resource::Core);
        assert_eq!((limit.current, limit.maximum), (Some(0), Some(0)));
        // A second call (a test harness, a re-entry) is as good as the first.
        forbid_core_dumps().unwrap();
    }
}
