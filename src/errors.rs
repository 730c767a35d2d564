//! How an error is printed: its own message, then each cause's, once, as
//! one line "outer: inner: innermost". Every error type states only its
//! own part and names the error it wraps as its `source`, so a log line
//! (`error = %Chain(&err)`) and the exit message show the whole story
//! without saying any part twice.

use std::error::Error;
use std::fmt;

/// Displays `0` and its chain of sources, joined by ": ".
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the file")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("store")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_printed_once_outermost_first() {
        let err = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(
            Chain(&err).to_string(),
            "cannot read the file: store: disk on fire"
        );
    }

    #[test]
    fn an_error_without_a_source_is_its_message() {
        let err = std::io::Error::other("disk on fire");
        assert_eq!(Chain(&err).to_string(), "disk on fire");
    }

    #[test]
    fn an_anyhow_chain_prints_its_context_first() {
        let err = anyhow::Error::new(Middle(std::io::Error::other("gone"))).context("simulator");
        assert_eq!(Chain(err.as_ref()).to_string(), "simulator: store: gone");
    }
}
