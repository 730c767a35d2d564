//! Query-string handling: decoding `application/x-www-form-urlencoded`
//! pairs and removing the `access_token` before a query is recorded.

/// Decoded `key=value` pairs, in order.
pub(crate) fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The first non-empty value of `key`. WeChat treats `appid=` like a
/// missing appid, so empty values count as absent.
pub(crate) fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// The raw query with every `access_token` pair removed, other pairs kept
/// byte for byte so tests can compare what a proxy forwarded.
pub(crate) fn without_access_token(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split('=').next() != Some("access_token"))
        .collect::<Vec<_>>()
        .join("&")
}

fn decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi << 4) | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_strips() {
        let pairs = parse_query("appid=wx%31&secret=a+b&empty=&x=%zz&t=%4");
        assert_eq!(get(&pairs, "appid"), Some("wx1"));
        assert_eq!(get(&pairs, "secret"), Some("a b"));
        assert_eq!(get(&pairs, "empty"), None);
        assert_eq!(get(&pairs, "x"), Some("%zz"));
        assert_eq!(get(&pairs, "t"), Some("%4"));
        assert_eq!(
            without_access_token("access_token=T&env=e%20&name=n"),
            "env=e%20&name=n"
        );
    }
}
