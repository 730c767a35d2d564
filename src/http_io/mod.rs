//! The HTTP plumbing every listener shares, below the servers and the
//! credential kinds alike: a request body with a deadline and its
//! reading within a limit ([`body`]), and plain responses
//! ([`response`]).

pub mod body;
pub mod response;

pub use body::RequestBody;
pub use response::Body;
