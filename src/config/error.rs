//! The one error type of configuration loading. Every variant names where
//! the configuration came from; validation errors also name the key, so an
//! operator reading `check-config` output knows which line to fix.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a configuration was refused.
///
/// Display reads `{source}: {key}: {message}`, e.g.
/// `wxbroker.toml: apps.shop.refresh_before: must be shorter than the token
/// lifetime (2h)`. No variant ever carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file itself could not be read.
    #[error("{}: cannot read the configuration file", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The TOML did not parse, or did not fit the schema (unknown key, wrong
    /// type). `message` is the toml crate's own message; its source snippet
    /// is left out on purpose, as the offending line may hold a secret.
    #[error("{origin}: {location}{message}")]
    Syntax {
        origin: String,
        location: Location,
        message: String,
    },

    /// A key has a value the broker cannot run with.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        /// Dotted path, e.g. `server.listen`, `apps.shop.appid`, or
        /// `apps[2].name` when the app's own name is unusable.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when one is known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// Where in the TOML text a syntax error is, 1-based. Empty when the toml
/// crate gave no position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Location {
    /// Turns a byte offset into `text` into a line and column.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Location {
        // toml spans are byte offsets; clamp to a char boundary so slicing
        // cannot panic on odd spans.
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Location {
            line: Some(line),
            column: Some(column),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: "),
            (Some(line), None) => write!(f, "line {line}: "),
            _ => Ok(()),
        }
    }
}

/// A validation failure before the source name is attached: the key and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn into_error(self, origin: &str) -> ConfigError {
        ConfigError::Invalid {
            origin: origin.to_owned(),
            key: self.key,
            message: self.message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_chars() {
        let text = "a = 1\nbé = x\n";
        let at = text.find('x').unwrap();
        let loc = Location::of_offset(text, at);
        assert_eq!((loc.line, loc.column), (Some(2), Some(6)));
        assert_eq!(loc.to_string(), "line 2, column 6: ");
    }

    #[test]
    fn location_survives_offsets_past_the_end_or_inside_a_char() {
        let text = "é";
        assert_eq!(Location::of_offset(text, 1).column, Some(1));
        assert_eq!(Location::of_offset(text, 99).column, Some(2));
    }

    #[test]
    fn invalid_reads_source_key_message() {
        let err = Problem::new("apps.shop.refresh_before", "must be shorter").into_error("w.toml");
        assert_eq!(
            err.to_string(),
            "w.toml: apps.shop.refresh_before: must be shorter"
        );
        assert_eq!(err.key(), Some("apps.shop.refresh_before"));
    }
}
