//! A scripted Kubernetes API server for reconciler tests (kube-rs's
//! `tower_test::mock::pair` pattern): each expected request is checked for
//! method and path, answered, and its body kept for the test to inspect.

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// What the fake server answers to one request.
pub enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// 200 with the request's own body (what an apply or create returns).
    Echo,
    /// 404 NotFound.
    NotFound,
}

/// One expected request: method, path (query included if given), reply.
pub struct Expect {
    pub method: &'static str,
    pub path: String,
    pub reply: Reply,
}

pub fn expect(method: &'static str, path: impl Into<String>, reply: Reply) -> Expect {
    Expect {
        method,
        path: path.into(),
        reply,
    }
}

/// A request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub body: Value,
}

pub fn mock_client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// Serve `script` in order; fails the test on any other request. Returns what was seen.
pub fn serve(mut handle: Handle, script: Vec<Expect>) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for (i, exp) in script.into_iter().enumerate() {
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {i} ({} {}) never came", exp.method, exp.path));
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("request body");
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON request body")
            };
            assert_eq!(method, exp.method, "request {i}: {method} {uri}");
            let path_matches = if exp.path.contains('?') {
                uri == exp.path
            } else {
                uri.split('?').next() == Some(exp.path.as_str())
            };
            assert!(
                path_matches,
                "request {i}: expected {} {}, got {method} {uri}",
                exp.method, exp.path
            );
            let response = match exp.reply {
                Reply::Json(v) => Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&v).unwrap())),
                Reply::Echo => Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&body).unwrap())),
                Reply::NotFound => Response::builder().status(404).body(Body::from(
                    serde_json::to_vec(&json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "not found", "reason": "NotFound", "code": 404
                    }))
                    .unwrap(),
                )),
            };
            send.send_response(response.unwrap());
            seen.push(Seen { method, uri, body });
        }
        seen
    })
}
