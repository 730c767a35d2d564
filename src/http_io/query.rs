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
    pairs(query)
        .find(|(found, _)| found == key)
        .map(|(_, value)| value.into_owned())
}

/// Whether some pair decodes to `key=value`.
pub fn has(query: &str, key: &str, value: &str) -> bool {
    pairs(query).any(|(found, found_value)| found == key && found_value == value)
}

/// `query` without the pairs whose decoded key is one of `keys`; the
/// others kept byte for byte, in order.
pub fn without(query: &str, keys: &[&str]) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or(pair);
            let decoded = pairs(key).next().map(|(key, _)| key);
            !pair.is_empty() && !decoded.is_some_and(|key| keys.contains(&&*key))
        })
        .collect::<Vec<_>>()
        .join("&")
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
    }
}
