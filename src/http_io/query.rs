//! The one reading of a query string, for every listener: pairs split on
//! `&`, each key and value decoded as browsers and WeChat encode them
//! (`application/x-www-form-urlencoded`: percent escapes, `+` for a
//! space, invalid UTF-8 replaced).

use std::borrow::Cow;

/// The decoded `(key, value)` pairs of `query`, in order; a pair without
/// `=` has an empty value.
pub fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    url::form_urlencoded::parse(query.as_bytes())
}

/// The decoded value of the first pair whose decoded key is `key`.
pub fn param(query: &str, key: &str) -> Option<String> {
    nonempty_pairs(query).find_map(|pair| {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_plain(raw_key) && is_plain(raw_value) {
            return (raw_key == key).then(|| raw_value.to_owned());
        }
        if is_plain(raw_key) && raw_key != key {
            return None;
        }
        let (found, value) = pairs(pair).next()?;
        (found == key).then(|| value.into_owned())
    })
}

/// Whether some pair decodes to `key=value`.
pub fn has(query: &str, key: &str, value: &str) -> bool {
    pairs(query).any(|(found, found_value)| found == key && found_value == value)
}

/// `query` without the pairs whose decoded key is one of `keys`; the
/// others kept byte for byte, in order.
pub fn without(query: &str, keys: &[&str]) -> String {
    let mut kept = String::with_capacity(query.len());
    for pair in nonempty_pairs(query) {
        let raw_key = pair.split_once('=').map_or(pair, |(key, _)| key);
        let dropped = if is_plain(raw_key) {
            keys.contains(&raw_key)
        } else {
            pairs(raw_key)
                .next()
                .is_some_and(|(key, _)| keys.contains(&&*key))
        };
        if !dropped {
            if !kept.is_empty() {
                kept.push('&');
            }
            kept.push_str(pair);
        }
    }
    kept
}

/// The pairs of `query` as sent, the empty ones between two `&` skipped
/// (as [`pairs`] skips them).
fn nonempty_pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split('&').filter(|pair| !pair.is_empty())
}

/// Whether `raw` (a key or value as sent) decodes to itself: only an
/// escape or a `+` changes it. Nearly every call's keys and values are
/// plain, and are then compared and copied as they are: decoding each
/// cost more than the rest of the lookup.
fn is_plain(raw: &str) -> bool {
    !raw.bytes().any(|byte| byte == b'%' || byte == b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_decoded() {
        let query = "a%63cess_token=x%2By+z&appid=wx1&appid=wx2&flag";
        assert_eq!(param(query, "access_token").as_deref(), Some("x+y z"));
        assert_eq!(param(query, "appid").as_deref(), Some("wx1"), "the first");
        assert_eq!(param(query, "flag").as_deref(), Some(""));
        assert_eq!(param(query, "missing"), None);
        assert_eq!(param("v=%E4%BD%A0%ZZ", "v").as_deref(), Some("你%ZZ"));
        assert!(has("a=b&format=%74ext", "format", "text"));
        assert!(!has("format=json", "format", "text"));
    }

    #[test]
    fn pairs_are_removed_by_their_decoded_key_and_the_rest_kept_as_sent() {
        assert_eq!(
            without(
                "access_token=a&x=%41b&%61ccess_token=c&&y",
                &["access_token"]
            ),
            "x=%41b&y"
        );
        assert_eq!(without("", &["access_token"]), "");
        assert_eq!(without("&&a=1&&", &["b"]), "a=1");
        assert_eq!(without("a+b=1&a%20b=2&c=3", &["a b"]), "c=3");
    }

    /// The decoded value of the first pair whose decoded key is `key`,
    /// every pair decoded: what [`param`] must agree with.
    fn param_by_decoding_all(query: &str, key: &str) -> Option<String> {
        pairs(query)
            .find(|(found, _)| found == key)
            .map(|(_, value)| value.into_owned())
    }

    #[test]
    fn looking_up_plain_keys_as_sent_agrees_with_decoding_every_key() {
        let queries = [
            "appid=wx1&access_token=t",
            "a%70pid=wx2&appid=wx1",
            "app+id=x&app%20id=y&appid",
            "&&appid=&appid=wx3",
            "access_token=a=b&access%5Ftoken=c",
            "appid%=x&appid=%E4%BD%A0%ZZ",
            "=v&appid==",
            "appid=a=b&appid=c",
            "appid=x%2By+z",
            "",
        ];
        for query in queries {
            for key in ["appid", "access_token", "app id", "", "appid%"] {
                assert_eq!(
                    param(query, key),
                    param_by_decoding_all(query, key),
                    "{query:?} {key:?}"
                );
            }
        }
    }
}
