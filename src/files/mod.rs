//! How the broker reads and writes its durable files (DESIGN.md sections
//! 17 and 21), below everything that keeps one: the file store, the
//! platforms' and suites' journals, the audit file, the token sinks, the
//! quota-reset ledger, `tls init`.
//!
//! - `atomic` replaces a file whole (temp file, fsync, rename, directory
//!   fsync).
//! - `ownership` says what may be trusted on disk: only what this uid
//!   alone could have written.
//! - `trust` opens every durable file by those rules: never through a
//!   symlink, never blocking, bounded, secrets narrowed to 0600.

pub(crate) mod atomic;
pub(crate) mod ownership;
pub(crate) mod trust;

pub(crate) use atomic::{write_atomically, AtomicWriteError};
pub use ownership::Doubt;
pub(crate) use ownership::{own_uid, DirVerdict, Facts, SHARED_WRITE};
pub use trust::FileError;
