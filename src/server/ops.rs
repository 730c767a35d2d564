//! The operations listener (`metrics_listen`): `/metrics`, `/livez`,
//! `/readyz`. No client header: Prometheus and kubelet probes can't send one.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};

use super::api::probes;
use super::api_error::ApiError;
use super::respond::{self, Body};
use crate::broker::Broker;
use crate::http_io::RequestBody;
use crate::metrics::Metrics;

pub fn handle(
    broker: &Broker,
    metrics: &Metrics,
    request: &Request<RequestBody>,
) -> Response<Body> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return ApiError::MethodNotAllowed {
            method: request.method().to_string(),
            allowed: "GET",
        }
        .response();
    }
    let response = match request.uri().path() {
        "/metrics" => {
            let mut response = respond::text(StatusCode::OK, metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/livez" => probes::live(),
        "/readyz" => probes::ready(broker),
        path => ApiError::RouteNotFound {
            method: request.method().to_string(),
            path: path.chars().take(256).collect(),
        }
        .response(),
    };
    let route = match request.uri().path() {
        "/metrics" => "/metrics",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        _ => "other",
    };
    metrics
        .requests
        .series("metrics", route)
        .count(response.status());
    response
}
