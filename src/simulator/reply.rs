//! Response builders: WeChat-shaped JSON (WeChat answers errors with HTTP
//! 200 and an errcode), the file-download APIs' answers (a binary body, or
//! the JSON error labelled `text/plain`), and the broken answers faults
//! produce.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::wx_error::WxError;
use super::Endpoint;

pub(crate) type Body = Full<Bytes>;

/// WeChat's exact content type, which some SDKs sniff.
const WECHAT_JSON: &str = "application/json; encoding=utf-8";

pub(crate) fn json(status: StatusCode, value: &Value) -> Response<Body> {
    with_type(status, WECHAT_JSON, value.to_string())
}

pub(crate) fn ok(value: &Value) -> Response<Body> {
    json(StatusCode::OK, value)
}

/// An API call's answer: its JSON, or WeChat's error shape (logged at
/// debug, so a test's log shows why the simulator refused).
pub(crate) fn api_answer(endpoint: Endpoint, answer: Result<Value, WxError>) -> Response<Body> {
    match answer {
        Ok(body) => ok(&body),
        Err(error) => {
            tracing::debug!(
                endpoint = endpoint.name(),
                errcode = error.errcode,
                "simulator api call refused"
            );
            wx_error(&error)
        }
    }
}

pub(crate) fn wx_error(error: &WxError) -> Response<Body> {
    ok(&error.to_json())
}

/// An error from a file-download API (`media/get`): WeChat sends the JSON
/// object with `Content-Type: text/plain`, which clients that only parse
/// JSON-typed bodies mistake for file content.
pub(crate) fn wx_error_as_text(error: &WxError) -> Response<Body> {
    with_type(StatusCode::OK, "text/plain", error.to_json().to_string())
}

/// A downloaded file, with the `Content-disposition` naming it.
pub(crate) fn file(content_type: &'static str, filename: &str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    response
}

/// Not a WeChat route at all (WeChat itself answers these from nginx; a
/// JSON body is friendlier to test failure messages).
pub(crate) fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &json!({ "errcode": 404, "errmsg": "not found" }),
    )
}

/// What WeChat's front proxies send when the backend is unwell.
pub(crate) fn html_500() -> Response<Body> {
    with_type(
        StatusCode::INTERNAL_SERVER_ERROR,
        "text/html",
        "<html>\r\n<head><title>500 Internal Server Error</title></head>\r\n<body>\r\n<center><h1>500 Internal Server Error</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n".to_owned(),
    )
}

/// A body cut off mid-token: claims JSON, is not.
pub(crate) fn malformed_json() -> Response<Body> {
    with_type(
        StatusCode::OK,
        WECHAT_JSON,
        r#"{"access_token":"87_trunc"#.to_owned(),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
