//! The `quota`, `clear-quota` and `rid` commands' output: the broker's
//! JSON answers as lines an operator reads in a hurry.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::RESETS_PER_MONTH;

/// `wxbroker quota`.
pub fn quota(answer: &Value) -> String {
    let number = |key: &str| answer[key].as_u64().unwrap_or(0);
    let (limit, used, remain) = (number("daily_limit"), number("used"), number("remain"));
    let percent = if limit > 0 {
        format!(" ({:.1}% left)", remain as f64 * 100.0 / limit as f64)
    } else {
        String::new()
    };
    format!(
        "app {} (appid {}), {}:\n  used {used} of {limit} today (Beijing day), {remain} left{percent}\n",
        text(answer, "app"),
        text(answer, "appid"),
        text(answer, "cgi_path"),
    )
}

/// `wxbroker clear-quota`.
pub fn clear_quota(answer: &Value) -> String {
    let mut out = format!(
        "app {}: WeChat reset every daily quota of appid {} ({}).\n",
        text(answer, "app"),
        text(answer, "appid"),
        text(answer, "via"),
    );
    match answer["resets_this_month"].as_u64() {
        Some(count) => out.push_str(&format!(
            "This broker has made {count} reset(s) this month; WeChat allows {RESETS_PER_MONTH} a month per account, the web console's included.\n"
        )),
        None => out.push_str(&format!(
            "The store could not count this reset (see the broker log); WeChat allows {RESETS_PER_MONTH} a month per account.\n"
        )),
    }
    let lifted: Vec<&str> = answer["holds_lifted"]
        .as_array()
        .map(|apps| apps.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !lifted.is_empty() {
        out.push_str(&format!(
            "Apps held after 45009 fetch a token now: {}.\n",
            lifted.join(", ")
        ));
    }
    out
}

/// `wxbroker rid`.
pub fn rid(answer: &Value) -> String {
    let request = &answer["request"];
    let invoked = request["invoke_time"]
        .as_u64()
        .map(|secs| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)))
        .map_or_else(|| "?".to_owned(), |at| at.to_string());
    format!(
        "rid {} (app {}):\n  invoked   {invoked}, took {} ms, from {}\n  request   {}\n  body      {}\n  response  {}\n",
        text(answer, "rid"),
        text(answer, "app"),
        request["cost_in_ms"].as_u64().unwrap_or(0),
        text(request, "client_ip"),
        or_none(text(request, "request_url")),
        or_none(text(request, "request_body")),
        or_none(text(request, "response_body")),
    )
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

fn or_none(text: &str) -> &str {
    if text.is_empty() {
        "(none)"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quota_shows_what_is_left() {
        let out = quota(&json!({
            "app": "shop", "appid": "wx1", "cgi_path": "/cgi-bin/token",
            "daily_limit": 2000, "used": 1900, "remain": 100,
        }));
        assert!(out.contains("used 1900 of 2000"), "{out}");
        assert!(out.contains("100 left (5.0% left)"), "{out}");
    }

    #[test]
    fn reset_and_rid_read_well() {
        let out = clear_quota(&json!({
            "app": "shop", "appid": "wx1", "via": "clear_quota/v2",
            "resets_this_month": 3, "holds_lifted": ["shop"],
        }));
        assert!(out.contains("made 3 reset(s) this month"), "{out}");
        assert!(out.contains("fetch a token now: shop"), "{out}");
        let out = rid(&json!({
            "app": "shop", "rid": "1-2",
            "request": { "invoke_time": 0, "cost_in_ms": 3, "request_url": "access_token=***",
                          "request_body": "", "response_body": "{}", "client_ip": "1.2.3.4" },
        }));
        assert!(
            out.contains("1970-01-01T00:00:00Z, took 3 ms, from 1.2.3.4"),
            "{out}"
        );
        assert!(out.contains("body      (none)"), "{out}");
    }
}
