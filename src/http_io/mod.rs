//! The HTTP plumbing every listener shares, below the servers and the
//! credential kinds alike: a request body with a deadline and its
//! reading within a limit ([`body`]), the reading of a query string
//! ([`query`]), and plain responses ([`response`]).

pub mod body;
pub mod query;
pub mod response;

pub use body::RequestBody;
pub use response::Body;
