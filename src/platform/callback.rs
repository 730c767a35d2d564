//! The callback listener's one route, `POST
//! /wechat/platforms/{name}/callback`: the only listener meant for traffic
//! from outside the host, so it answers nothing else (404), reads at most
//! 64 KiB of body (413), and gives every push that fails a check a bare
//! 403 that changes nothing. An accepted push gets WeChat's `success`.

use http::{Method, Request, Response, StatusCode};

use super::PlatformHandle;
use crate::http_io::body::ReadError;
use crate::http_io::response::{self, Body};
use crate::http_io::RequestBody;

/// WeChat's pushes are a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

pub async fn handle(platforms: &[PlatformHandle], request: Request<RequestBody>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let name = parts
        .uri
        .path()
        .strip_prefix("/wechat/platforms/")
        .and_then(|rest| rest.strip_suffix("/callback"))
        .filter(|name| !name.contains('/'));
    let Some(platform) = name.and_then(|name| platforms.iter().find(|p| p.name() == name)) else {
        return plain(StatusCode::NOT_FOUND, "not found");
    };
    if parts.method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let body = match body.read(BODY_LIMIT).await {
        Ok(body) => body,
        Err(ReadError::TooLarge { .. }) => {
            platform.count_refusal("too_large");
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        }
        Err(ReadError::Body(_)) => return plain(StatusCode::BAD_REQUEST, "unreadable body"),
    };
    match platform.accept_push(parts.uri.query(), &body).await {
        Ok(()) => plain(StatusCode::OK, "success"),
        Err(_) => plain(StatusCode::FORBIDDEN, "forbidden"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    response::text(status, text)
}
