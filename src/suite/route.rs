//! The callback listener's suite route,
//! `/wechat/suites/{name}/callback`: `GET` with `echostr` is WeCom's URL
//! check (answered with the plaintext), `POST` a push (answered
//! `success` within a second). The listener faces the internet, so a
//! body is read up to 64 KiB only, and anything that fails a check gets
//! a bare 403 that changes nothing.

use http::{Method, Request, Response, StatusCode};

use super::callback::{Refusal, BODY_LIMIT};
use super::SuiteHandle;
use crate::http_io::body::ReadError;
use crate::http_io::response::{self, Body};
use crate::http_io::RequestBody;

/// The path prefix of the suites' callbacks.
pub const PREFIX: &str = "/wechat/suites/";

pub async fn handle(suites: &[SuiteHandle], request: Request<RequestBody>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let name = parts
        .uri
        .path()
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix("/callback"))
        .filter(|name| !name.contains('/'));
    let Some(suite) = name.and_then(|name| suites.iter().find(|s| s.name() == name)) else {
        return response::text(StatusCode::NOT_FOUND, "not found");
    };
    let query = parts.uri.query();
    match parts.method {
        Method::GET => match suite.verify_url(query) {
            Ok(plaintext) => response::text(StatusCode::OK, plaintext),
            Err(_) => forbidden(),
        },
        Method::POST => {
            let body = match body.read(BODY_LIMIT).await {
                Ok(body) => body,
                Err(ReadError::TooLarge { .. }) => {
                    suite.count(Some(Refusal::TooLarge));
                    return forbidden();
                }
                Err(ReadError::Body(_)) => {
                    return response::text(StatusCode::BAD_REQUEST, "unreadable body")
                }
            };
            match suite.accept_push(query, &body).await {
                Ok(()) => response::text(StatusCode::OK, "success"),
                Err(_) => forbidden(),
            }
        }
        _ => response::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn forbidden() -> Response<Body> {
    response::text(StatusCode::FORBIDDEN, "forbidden")
}
