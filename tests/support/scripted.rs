//! A scripted upstream on 127.0.0.1: every request is recorded (method,
//! target, headers, body) and answered by a closure, so a test can play a
//! hostile or broken WeChat that the simulator, being faithful, never is.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// What the upstream answers: status, extra headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(body: impl Into<String>) -> Answer {
        Answer {
            status: 200,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.into(),
        }
    }

    pub fn redirect(status: u16, location: impl Into<String>) -> Answer {
        Answer {
            status,
            headers: vec![("location", location.into())],
            body: String::new(),
        }
    }
}

type Script = dyn Fn(usize, &Recorded) -> Answer + Send + Sync;

pub struct ScriptedUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    /// Starts an upstream answering the n-th request (from 0) with
    /// `script(n, request)`.
    pub async fn start(
        script: impl Fn(usize, &Recorded) -> Answer + Send + Sync + 'static,
    ) -> ScriptedUpstream {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, recorded) = (script.clone(), recorded.clone());
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let (script, recorded) = (script.clone(), recorded.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let request = Recorded {
                            method: parts.method.to_string(),
                            target: parts
                                .uri
                                .path_and_query()
                                .map(|pq| pq.to_string())
                                .unwrap_or_default(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                                })
                                .collect(),
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        let n = {
                            let mut all = recorded.lock().unwrap();
                            all.push(request.clone());
                            all.len() - 1
                        };
                        let answer = script(n, &request);
                        let mut response = http::Response::new(Full::new(Bytes::from(answer.body)));
                        *response.status_mut() = http::StatusCode::from_u16(answer.status).unwrap();
                        for (name, value) in answer.headers {
                            response
                                .headers_mut()
                                .insert(name, http::HeaderValue::from_str(&value).unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        ScriptedUpstream {
            addr,
            requests,
            task,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
