//! Where an app's or a platform's secret comes from (`secret_env`,
//! `secret_file`, `secret`), and the checks it passes on the way: files
//! that cannot block or hide another file, values without stray
//! whitespace, messages that never echo anything that looks like a secret.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::Problem;
use super::fields::Env;
use super::raw::InlineSecret;
use super::SecretSource;
use crate::secret::Secret;

/// A secret is a few dozen bytes; refusing big files keeps a mistaken
/// `secret_file` (a log, an archive) from eating memory.
const MAX_SECRET_FILE: u64 = 4096;

/// Exactly one of `{field}_env`, `{field}_file`, `{field}` of the table
/// `table` (`apps.shop`, `platforms.saas`): a secret, with the same rules
/// and masking wherever it is configured.
pub(super) fn secret_of(
    table: &str,
    field: &str,
    env_name: Option<String>,
    file: Option<String>,
    inline: Option<InlineSecret>,
    env: Env<'_>,
) -> Result<(Secret, SecretSource), Problem> {
    let (env_key, file_key) = (format!("{field}_env"), format!("{field}_file"));
    match (env_name, file, inline) {
        (Some(name), None, None) => {
            let key = format!("{table}.{env_key}");
            let value = env_secret(&key, &name, env)?;
            let described = format!("the {field} in environment variable {name}");
            let secret = checked_secret(&key, &described, value)?;
            Ok((secret, SecretSource::Env(name)))
        }
        (None, Some(file), None) => {
            let key = format!("{table}.{file_key}");
            let shown = if looks_like_secret(&file) {
                "the file (its name looks like a secret, so it is not shown)".to_owned()
            } else {
                file.clone()
            };
            let path = PathBuf::from(file);
            let value = read_secret_file(&key, &path, &shown)?;
            let described = format!("the {field} in {shown}");
            let secret = checked_secret(&key, &described, value)?;
            Ok((secret, SecretSource::File(path)))
        }
        (None, None, Some(InlineSecret(inline))) => {
            let key = format!("{table}.{field}");
            let described = format!("the {field}");
            let secret = checked_secret(&key, &described, inline.expose().to_owned())?;
            Ok((secret, SecretSource::Inline))
        }
        (env_name, file, inline) => {
            let set: Vec<&str> = [
                (env_key.as_str(), env_name.is_some()),
                (file_key.as_str(), file.is_some()),
                (field, inline.is_some()),
            ]
            .into_iter()
            .filter_map(|(key, set)| set.then_some(key))
            .collect();
            let found = if set.is_empty() {
                "none is set".to_owned()
            } else {
                format!("{} are set", set.join(" and "))
            };
            Err(Problem::new(
                table,
                format!("set exactly one of {env_key}, {file_key} or {field} ({found})"),
            ))
        }
    }
}

pub(super) fn env_secret(key: &str, name: &str, env: Env<'_>) -> Result<String, Problem> {
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    // A common slip is pasting the secret itself here; do not echo it back.
    if !valid_name || looks_like_secret(name) {
        return Err(Problem::new(
            key,
            "is not a plausible environment variable name (not shown, in case it is the \
             secret itself); the key takes the name of the variable holding the secret",
        ));
    }
    match env(name) {
        None => Err(Problem::new(
            key,
            format!("environment variable {name} is not set"),
        )),
        Some(value) if value.is_empty() => Err(Problem::new(
            key,
            format!("environment variable {name} is empty"),
        )),
        Some(value) => Ok(value),
    }
}

/// Reads a secret file without ever blocking: the file is opened with
/// `O_NONBLOCK`, so a FIFO with no writer cannot hang `check-config` or a
/// reload in `open`, and anything but a regular file is refused by the
/// metadata of what was opened (not of the path, which could be swapped
/// between the check and the open). The read is bounded by size.
pub(super) fn read_secret_file(key: &str, path: &Path, shown: &str) -> Result<String, Problem> {
    use rustix::fs::{Mode, OFlags};

    let cannot = |e: std::io::Error| Problem::new(key, format!("cannot read {shown}: {e}"));
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file =
        File::from(rustix::fs::open(path, flags, Mode::empty()).map_err(|e| cannot(e.into()))?);
    let file_type = file.metadata().map_err(cannot)?.file_type();
    if !file_type.is_file() {
        return Err(Problem::new(
            key,
            format!(
                "{shown} is {}, not a regular file; secret_file must name a file holding only \
                 the secret",
                describe_file_type(file_type)
            ),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(Problem::new(
            key,
            format!(
                "{shown} is larger than {MAX_SECRET_FILE} bytes; it should hold only the secret"
            ),
        ));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| Problem::new(key, format!("{shown} is not UTF-8 text")))?;
    if text.trim_end_matches(['\r', '\n']).is_empty() {
        return Err(Problem::new(key, format!("{shown} is empty")));
    }
    Ok(text)
}

/// What a non-regular file is, for messages ("is a FIFO").
fn describe_file_type(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Drops the trailing newline editors and `echo` add, then insists on what
/// Tencent issues: printable ASCII without spaces. A secret with a stray
/// space would otherwise fail upstream as "wrong secret" (40001), far from
/// its cause.
pub(super) fn checked_secret(key: &str, described: &str, value: String) -> Result<Secret, Problem> {
    let trimmed = value.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(Problem::new(key, format!("{described} is empty")));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Problem::new(
            key,
            format!("{described} contains spaces or non-printable characters"),
        ));
    }
    Ok(Secret::new(trimmed))
}

/// Whether a value written where a name or path belongs looks like a
/// WeChat AppSecret (32 hex digits) or a WeCom corpsecret (about 43
/// mixed-case base64url characters), so that messages do not repeat it.
pub(super) fn looks_like_secret(value: &str) -> bool {
    let bytes = value.as_bytes();
    let app_secret = bytes.len() == 32 && bytes.iter().all(u8::is_ascii_hexdigit);
    let corp_secret = bytes.len() >= 40
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
        && bytes.iter().any(u8::is_ascii_lowercase)
        && bytes.iter().any(u8::is_ascii_uppercase)
        && bytes.iter().any(u8::is_ascii_digit);
    app_secret || corp_secret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_lookalikes_are_recognised() {
        assert!(looks_like_secret("0123456789abcdef0123456789ABCDEF"));
        assert!(looks_like_secret(
            "Xy3_kP9-qR2sT5uV8wZ1aB4cD7eF0gH3iJ6kL9mN2oP"
        ));
        assert!(!looks_like_secret("SHOP_SECRET"));
        assert!(!looks_like_secret(
            "WXBROKER_PRODUCTION_SHOP_APP_SECRET_VALUE_1"
        ));
        assert!(!looks_like_secret("/run/secrets/shop"));
    }

    #[test]
    fn checked_secret_trims_newlines_only() {
        assert_eq!(
            checked_secret("k", "s", "abc\r\n".into()).unwrap().expose(),
            "abc"
        );
        assert!(checked_secret("k", "s", "\n".into()).is_err());
        assert!(checked_secret("k", "s", "ab c".into()).is_err());
        assert!(checked_secret("k", "s", " abc".into()).is_err());
        assert!(checked_secret("k", "s", "abcé".into()).is_err());
    }
}
