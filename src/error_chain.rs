//! An error and its causes on one line, `: `-separated, for a log field
//! or a message: errors here state their own cause once and name the
//! one below as their source, so one `Display` alone says too little.

use std::error::Error;
use std::fmt;

/// Shows an error and every source under it: `a: b: c`.
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

/// [`Chain`] as a string.
pub fn error_chain(err: &dyn Error) -> String {
    Chain(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("writing the audit file")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_shows_once() {
        let err = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&err), "writing the audit file: disk full");
    }
}
