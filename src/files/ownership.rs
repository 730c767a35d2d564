//! What the broker may trust on disk (DESIGN.md sections 17 and 21): only
//! what this process's uid could have written and nobody else could have
//! changed. `super::trust` applies these rules to every durable file. A
//! record another local user planted would otherwise be served as a
//! token, with no upstream call to contradict it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// The permission bits that let someone other than the owner change a
/// directory's entries or a file's content.
pub(crate) const SHARED_WRITE: u32 = 0o022;

/// The effective uid, which is the owner of every file the process
/// creates, and so the only owner a file it wrote can have.
pub(crate) fn own_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why a file or directory is not one this broker alone could have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Doubt {
    #[error(
        "owned by uid {owner}, not by the broker's uid {uid} (chown it to uid {uid}, or remove it)"
    )]
    Owner { owner: u32, uid: u32 },
    #[error("writable by group or others (mode {mode:04o})")]
    SharedWrite { mode: u32 },
    #[error("not a regular file (a symlink, directory or device)")]
    NotRegular,
    #[error("not a directory")]
    NotDirectory,
    /// A record is written to a fresh temp file and renamed: it has one
    /// name. A second one is a hard link someone else made.
    #[error("has {links} hard links")]
    Links { links: u64 },
    /// Another file took the name between the look and the open.
    #[error("replaced while it was being opened")]
    Replaced,
    /// Larger than any file of its kind the broker writes: not read.
    #[error("larger than {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The facts about a file that decide whether it can be trusted, apart
/// from the filesystem so the rules can be tested without a second user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub is_file: bool,
    pub is_dir: bool,
    pub owner: u32,
    pub mode: u32,
    pub links: u64,
}

impl Facts {
    pub(crate) fn of(meta: &Metadata) -> Self {
        Facts {
            is_file: meta.file_type().is_file(),
            is_dir: meta.file_type().is_dir(),
            owner: meta.uid(),
            mode: meta.mode() & 0o7777,
            links: meta.nlink(),
        }
    }

    /// Why a record file with these facts may hold something `uid` did not
    /// write, or `None` if only `uid` could have written it.
    pub(crate) fn record_doubt(&self, uid: u32) -> Option<Doubt> {
        if !self.is_file {
            Some(Doubt::NotRegular)
        } else if self.owner != uid {
            Some(Doubt::Owner {
                owner: self.owner,
                uid,
            })
        } else if self.mode & SHARED_WRITE != 0 {
            Some(Doubt::SharedWrite { mode: self.mode })
        } else if self.links != 1 {
            Some(Doubt::Links { links: self.links })
        } else {
            None
        }
    }

    /// What to do with a state directory with these facts: refuse it
    /// (another uid's), repair it (ours, but others may write into it), or
    /// use it.
    pub(crate) fn dir_verdict(&self, uid: u32) -> DirVerdict {
        if !self.is_dir {
            DirVerdict::Refuse(Doubt::NotDirectory)
        } else if self.owner != uid {
            // Not ours to chmod, and whoever owns it can plant records.
            DirVerdict::Refuse(Doubt::Owner {
                owner: self.owner,
                uid,
            })
        } else if self.mode & SHARED_WRITE != 0 {
            DirVerdict::Repair(Doubt::SharedWrite { mode: self.mode })
        } else {
            DirVerdict::Use
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DirVerdict {
    Use,
    /// Ours, but group- or other-writable: narrowed to 0700, loudly. Each
    /// record in it is still checked on its own when read.
    Repair(Doubt),
    Refuse(Doubt),
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn file(owner: u32, mode: u32) -> Facts {
        Facts {
            is_file: true,
            is_dir: false,
            owner,
            mode,
            links: 1,
        }
    }

    fn dir(owner: u32, mode: u32) -> Facts {
        Facts {
            is_file: false,
            is_dir: true,
            owner,
            mode,
            links: 2,
        }
    }

    #[test]
    fn a_record_is_trusted_only_if_only_we_could_have_written_it() {
        assert_eq!(file(ME, 0o600).record_doubt(ME), None);
        assert_eq!(file(ME, 0o644).record_doubt(ME), None, "readable is fine");
        assert_eq!(
            file(65534, 0o600).record_doubt(ME),
            Some(Doubt::Owner {
                owner: 65534,
                uid: ME
            })
        );
        assert_eq!(
            file(ME, 0o620).record_doubt(ME),
            Some(Doubt::SharedWrite { mode: 0o620 })
        );
        assert_eq!(
            file(ME, 0o602).record_doubt(ME),
            Some(Doubt::SharedWrite { mode: 0o602 })
        );
        let linked = Facts {
            links: 2,
            ..file(ME, 0o600)
        };
        assert_eq!(linked.record_doubt(ME), Some(Doubt::Links { links: 2 }));
        assert_eq!(dir(ME, 0o700).record_doubt(ME), Some(Doubt::NotRegular));
        let symlink = Facts {
            is_file: false,
            ..file(ME, 0o777)
        };
        assert_eq!(symlink.record_doubt(ME), Some(Doubt::NotRegular));
    }

    #[test]
    fn a_directory_is_used_repaired_or_refused() {
        assert_eq!(dir(ME, 0o700).dir_verdict(ME), DirVerdict::Use);
        assert_eq!(dir(ME, 0o755).dir_verdict(ME), DirVerdict::Use);
        assert_eq!(
            dir(ME, 0o777).dir_verdict(ME),
            DirVerdict::Repair(Doubt::SharedWrite { mode: 0o777 })
        );
        assert_eq!(
            dir(ME, 0o1733).dir_verdict(ME),
            DirVerdict::Repair(Doubt::SharedWrite { mode: 0o1733 })
        );
        assert_eq!(
            dir(0, 0o700).dir_verdict(ME),
            DirVerdict::Refuse(Doubt::Owner { owner: 0, uid: ME })
        );
        assert_eq!(
            file(ME, 0o700).dir_verdict(ME),
            DirVerdict::Refuse(Doubt::NotDirectory)
        );
    }

    #[test]
    fn the_owner_doubt_names_the_fix() {
        let doubt = Doubt::Owner {
            owner: 65534,
            uid: 998,
        };
        assert_eq!(
            doubt.to_string(),
            "owned by uid 65534, not by the broker's uid 998 (chown it to uid 998, or remove it)"
        );
    }
}
