//! Temporary media (`/cgi-bin/media/get`): the files each app uploaded,
//! and the download API, which answers a file as a binary body and every
//! error as a JSON object labelled `Content-Type: text/plain`, as WeChat
//! does (so a client must look at the body, not the type, to see a 40001).

use std::collections::HashMap;

use hyper::{Method, Response};
use tracing::debug;

use super::app_token;
use super::params::{self, get};
use super::reply::{self, Body};
use super::request::SimRequest;
use super::wx_error::WxError;
use super::Simulator;

#[derive(Debug)]
struct Media {
    appid: String,
    body: Vec<u8>,
}

/// Uploaded media by id.
#[derive(Debug, Default)]
pub(crate) struct MediaStore {
    files: HashMap<String, Media>,
}

impl MediaStore {
    /// Stores a JPEG for `appid`; returns its media_id.
    pub(crate) fn add(&mut self, appid: &str, body: Vec<u8>) -> String {
        let media_id = loop {
            // Real ids are 64 characters of the URL-safe alphabet.
            let candidate = super::users::random_id(64);
            if !self.files.contains_key(&candidate) {
                break candidate;
            }
        };
        self.files.insert(
            media_id.clone(),
            Media {
                appid: appid.to_owned(),
                body,
            },
        );
        media_id
    }
}

pub(crate) fn handle(sim: &Simulator, request: &SimRequest) -> Response<Body> {
    match answer(sim, request) {
        Ok((media_id, body)) => reply::file("image/jpeg", &format!("{media_id}.jpg"), body),
        Err(error) => {
            debug!(errcode = error.errcode, "simulator media call refused");
            reply::wx_error_as_text(&error)
        }
    }
}

fn answer(sim: &Simulator, request: &SimRequest) -> Result<(String, Vec<u8>), WxError> {
    let query = params::parse_query(&request.query);
    let token = app_token::check(sim, get(&query, "access_token"))?;
    if request.method != Method::GET {
        return Err(WxError::wechat(43001, "require GET method"));
    }
    let media_id =
        get(&query, "media_id").ok_or_else(|| WxError::wechat(41006, "media_id missing"))?;
    let state = sim.lock();
    let appid = state.tokens.owner(token);
    match state.media.files.get(media_id) {
        // Another app's media is as unknown as a typo.
        Some(media) if Some(media.appid.as_str()) == appid => {
            Ok((media_id.to_owned(), media.body.clone()))
        }
        _ => Err(WxError::wechat(40007, "invalid media_id")),
    }
}
