//! WeCom service providers (DESIGN.md section 19): the suite family's
//! own logic, apart from any engine. What lives here is pure: it takes
//! what arrived and the time, and answers what it means, so the engine
//! that runs suites wires it without reshaping it.
//!
//! - [`callback`] checks WeCom's calls to a suite's callback URL: the GET
//!   URL check (`echostr`) and the POSTed pushes (signature, 5-minute
//!   window, AES framing, 64 KiB, a receive id that is the suite id or
//!   the provider's corpid), and yields a [`SuiteEvent`].
//! - [`event`] reads a decrypted push: `suite_ticket`, `create_auth`,
//!   `change_auth`, `cancel_auth`, `reset_permanent_code`.
//! - [`ticket`] is the `suite_ticket` rule: the newest `TimeStamp` wins,
//!   an older push never replaces a newer ticket.

pub mod callback;
pub mod event;
pub mod ticket;

pub use callback::{Refusal, SuiteCallback};
pub use event::SuiteEvent;
pub use ticket::{PushedTicket, TicketDecision};

mod handle;

pub use handle::{CorpError, SuiteHandle};
