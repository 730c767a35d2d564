//! The token-consuming APIs of Cloud Development (`tcb/*`):
//! each checks the `access_token` exactly as WeChat does (41001, 40001,
//! 42001, 40014) and answers with a plausible body of the real shape,
//! echoing what it received so proxy tests can see it arrived intact.

use hyper::{Method, Response};
use rand::Rng;
use serde_json::{json, Map, Value};

use super::app_token;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::wx_error::WxError;
use super::{Endpoint, Simulator};

pub(crate) fn handle(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Response<Body> {
    reply::api_answer(endpoint, answer(sim, endpoint, request))
}

fn answer(sim: &Simulator, endpoint: Endpoint, request: &SimRequest) -> Result<Value, WxError> {
    let query = params::parse_query(&request.query);
    app_token::check(sim, get(&query, "access_token"))?;
    if request.method != Method::POST {
        return Err(WxError::wechat(43002, "require POST method"));
    }
    match endpoint {
        Endpoint::InvokeCloudFunction => invoke_cloud_function(&query, &request.body),
        _ => {
            let body: Map<String, Value> = serde_json::from_slice(&request.body)
                .map_err(|_| WxError::wechat(47001, "data format error"))?;
            let field = |key: &str| body.get(key).ok_or_else(invalid_args);
            let env = field("env")?.as_str().ok_or_else(invalid_args)?;
            match endpoint {
                Endpoint::DatabaseQuery => Ok(json!({
                    "errcode": 0,
                    "errmsg": "ok",
                    "pager": { "Offset": 0, "Limit": 10, "Total": 1 },
                    // Real documents come back as JSON strings.
                    "data": [json!({ "_id": random_hex(32), "env": env, "query": field("query")? }).to_string()],
                })),
                Endpoint::DatabaseAdd => {
                    field("query")?;
                    Ok(json!({ "errcode": 0, "errmsg": "ok", "id_list": [random_hex(32)] }))
                }
                Endpoint::DatabaseUpdate => {
                    field("query")?;
                    Ok(
                        json!({ "errcode": 0, "errmsg": "ok", "matched": 1, "modified": 1, "id": "" }),
                    )
                }
                Endpoint::DatabaseDelete => {
                    field("query")?;
                    Ok(json!({ "errcode": 0, "errmsg": "ok", "deleted": 1 }))
                }
                Endpoint::BatchDownloadFile => batch_download_file(field("file_list")?),
                Endpoint::UploadFile => {
                    let path = field("path")?.as_str().ok_or_else(invalid_args)?;
                    Ok(upload_file(env, path))
                }
                Endpoint::BatchDeleteFile => batch_delete_file(field("fileid_list")?),
                // Token endpoints never reach this module.
                _ => Err(WxError::wechat(-1, "system error")),
            }
        }
    }
}

fn invalid_args() -> WxError {
    WxError::wechat(40097, "invalid args")
}

fn invoke_cloud_function(query: &[(String, String)], body: &[u8]) -> Result<Value, WxError> {
    let env = get(query, "env").ok_or_else(invalid_args)?;
    let name = get(query, "name").ok_or_else(invalid_args)?;
    // The function's parameters are whatever the caller posted; echo them
    // as parsed JSON when they are JSON, else as text.
    let event = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    let resp_data = json!({ "env": env, "name": name, "event": event }).to_string();
    Ok(json!({ "errcode": 0, "errmsg": "ok", "resp_data": resp_data }))
}

fn batch_download_file(file_list: &Value) -> Result<Value, WxError> {
    let files = file_list.as_array().ok_or_else(invalid_args)?;
    let answered = files
        .iter()
        .map(|file| {
            let fileid = file
                .get("fileid")
                .and_then(Value::as_str)
                .ok_or_else(invalid_args)?;
            Ok(json!({
                "fileid": fileid,
                "download_url": download_url(fileid),
                "status": 0,
                "errmsg": "ok",
            }))
        })
        .collect::<Result<Vec<_>, WxError>>()?;
    Ok(json!({ "errcode": 0, "errmsg": "ok", "file_list": answered }))
}

/// `cloud://env-id.bucket/path` -> `https://bucket.tcb.qcloud.la/path?sign=..`
fn download_url(fileid: &str) -> String {
    let rest = fileid.strip_prefix("cloud://").unwrap_or(fileid);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = host.split_once('.').map_or(host, |(_, bucket)| bucket);
    format!(
        "https://{bucket}.tcb.qcloud.la/{path}?sign={}&t=1700000000",
        random_hex(32)
    )
}

fn upload_file(env: &str, path: &str) -> Value {
    let bucket = format!("7465-{env}-1300000000");
    json!({
        "errcode": 0,
        "errmsg": "ok",
        "url": format!("https://cos.ap-shanghai.myqcloud.com/{bucket}/{path}"),
        "token": random_hex(64),
        "authorization": format!("q-sign-algorithm=sha1&q-signature={}", random_hex(40)),
        "file_id": format!("cloud://{env}.{bucket}/{path}"),
        "cos_file_id": random_hex(48),
    })
}

fn batch_delete_file(fileid_list: &Value) -> Result<Value, WxError> {
    let ids = fileid_list.as_array().ok_or_else(invalid_args)?;
    let deleted = ids
        .iter()
        .map(|id| {
            let fileid = id.as_str().ok_or_else(invalid_args)?;
            Ok(json!({ "fileid": fileid, "status": 0, "errmsg": "ok" }))
        })
        .collect::<Result<Vec<_>, WxError>>()?;
    Ok(json!({ "errcode": 0, "errmsg": "ok", "delete_list": deleted }))
}

fn random_hex(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}
