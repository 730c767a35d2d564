//! What `rid/get` quotes of a past request is the request as WeChat saw
//! it: its query carries the `access_token`, a token call's the secret.
//! Those values are masked before the answer leaves the broker, whatever
//! the shape they come in (a query, a form body, JSON).

use serde_json::Value;

use super::RidDetails;

/// The parameters whose values are credentials.
const CREDENTIAL_KEYS: &[&str] = &[
    "access_token",
    "secret",
    "appsecret",
    "corpsecret",
    "component_appsecret",
    "component_access_token",
    "authorizer_access_token",
    "authorizer_refresh_token",
    "refresh_token",
    "ticket",
];

/// What a masked value reads as.
const MASK: &str = "***";

pub(super) fn rid_details(details: RidDetails) -> RidDetails {
    RidDetails {
        request_url: text(&details.request_url),
        request_body: text(&details.request_body),
        response_body: text(&details.response_body),
        ..details
    }
}

/// `text` with every credential value masked: as JSON when it parses as
/// JSON, else as a URL or query string (`a=1&access_token=T`).
fn text(text: &str) -> String {
    if let Ok(mut value) = serde_json::from_str::<Value>(text) {
        if value.is_object() || value.is_array() {
            json(&mut value);
            return value.to_string();
        }
    }
    match text.split_once('?') {
        Some((base, query)) => format!("{base}?{}", query_string(query)),
        None => query_string(text),
    }
}

fn is_credential(key: &str) -> bool {
    CREDENTIAL_KEYS
        .iter()
        .any(|credential| key.eq_ignore_ascii_case(credential))
}

fn json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_credential(key) && value.is_string() {
                    *value = Value::String(MASK.to_owned());
                } else {
                    json(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        // A JSON answer quoted as a string (response_body) is masked too.
        Value::String(inner) if inner.starts_with('{') => {
            if let Ok(mut parsed) = serde_json::from_str::<Value>(inner) {
                json(&mut parsed);
                *inner = parsed.to_string();
            }
        }
        _ => {}
    }
}

fn query_string(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_credential(key) => format!("{key}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_in_every_shape() {
        assert_eq!(
            text("access_token=87_abc&openid=o1"),
            "access_token=***&openid=o1"
        );
        assert_eq!(
            text("/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=s3"),
            "/cgi-bin/token?grant_type=client_credential&appid=wx1&secret=***"
        );
        assert_eq!(
            text(r#"{"appid":"wx1","secret":"s3","nested":{"access_token":"t"}}"#),
            r#"{"appid":"wx1","nested":{"access_token":"***"},"secret":"***"}"#
        );
        assert_eq!(text("appid=wx1&appsecret=s3"), "appid=wx1&appsecret=***");
        assert_eq!(text(""), "");
        assert_eq!(
            text(r#"{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 1-2-3"}"#),
            r#"{"errcode":45009,"errmsg":"reach max api daily quota limit rid: 1-2-3"}"#
        );
    }
}
