//! Many credentials under one parent: a platform's authorizers today, a
//! WeCom suite's installed corps next. Each parent has one compact table
//! the readers see ([`table`]: a small slot per child, its token in an
//! atomic cell, an index from token to child) and ONE scheduler task, the
//! table's only writer ([`scheduler`]). Ten thousand engine refreshers
//! would cost a task, a channel and a set of metric series each.
//!
//! The scheduler runs the engine's policy (`broker::schedule`): the same
//! due times, the same error classes (DESIGN.md section 4, rules 5 and 6;
//! [`policy`]) and a daily budget per parent, compare-and-refresh against
//! the fleet's store, and the pacing of short lifetimes. What differs
//! between parent kinds is behind two seams:
//!
//! - [`ChildSource`]: how the parent's token is had, how one child's
//!   token is fetched with its durable grant (a refresh token, a
//!   permanent code), how a pushed authorization code is exchanged, and
//!   how every child is listed when the store holds none;
//! - [`ChildStore`]: where the [`ChildRecord`]s live (memory, file
//!   journal, Redis), the fleet's lock and rate, and the day's count.

pub mod access;
pub mod census;
pub mod index;
pub mod policy;
pub mod record;
pub mod scheduler;
pub mod source;
pub mod table;

pub use access::ChildError;
pub use census::Census;
pub use record::{ChildRecord, ChildStore};
pub use scheduler::{Command, Scheduler, SchedulerParts, SchedulerTuning};
pub use source::{ChildGrant, ChildPage, ChildSource, ListedChild};
pub use table::{ChildToken, Hold, Slot, Table};
