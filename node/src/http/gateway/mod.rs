//! etcd's JSON gateway: every gRPC call also as `POST /v3/...` on the client
//! port, for clients without gRPC (curl, scripts, dashboards).
//!
//! A gateway call *is* the gRPC call, made in-process on this member's own
//! gRPC services: the JSON body is decoded into the request message, the same
//! handler runs it with the same checks and auth, and its answer is encoded
//! back. Nothing is implemented twice, so the two cannot drift apart.
//!
//! etcd's conventions (grpc-gateway v1, as etcd 3.5 runs it):
//! - bodies are protobuf JSON: field names as in the .proto (camelCase names
//!   are accepted too), bytes as base64, 64-bit integers as strings, enums
//!   by name, default values left out; an empty body is the empty request;
//! - a token goes in the `Authorization` header;
//! - a failed call answers `{"error":..., "code":..., "message":...}` with
//!   the HTTP status grpc-gateway gives its gRPC code;
//! - a streaming call (watch, lease keep-alive, snapshot, observe) answers one
//!   `{"result":{...}}` object per line as they come, and ends with
//!   `{"error":{...}}` if it fails. Its body may carry several request
//!   objects one after another (a watch's creates and cancels); a request
//!   body that does not parse ends the stream with that error.

use std::convert::Infallible;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::uri::PathAndQuery;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::routing::MethodRouter;
use axum::Router;
use futures::Stream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::client::Grpc;
use tonic::service::Routes;
use tonic::Code;
use tonic::Status;
use tonic_prost::ProstCodec;

use super::json_response;
use crate::auth::CERT_USER_METADATA;

mod paths;

/// The member's gRPC services, which every gateway call goes to.
#[derive(Clone)]
pub(super) struct Gateway {
    grpc: Routes,
}

/// What a gateway call needs of its request and response messages.
pub(super) trait GatewayMessage: prost::Message + Default + Send + Sync + 'static {}
impl<T: prost::Message + Default + Send + Sync + 'static> GatewayMessage for T {}

/// The `/v3/...` routes (`paths`). `max_body` bounds a request body (JSON's
/// base64 is a third bigger than the request it carries).
pub fn routes(grpc: Routes, max_body: usize) -> Router {
    paths::table()
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(Gateway { grpc })
}

/// The gRPC path of `method` in `service` (given with its slashes).
fn grpc_path(service: &'static str, method: &'static str) -> PathAndQuery {
    PathAndQuery::try_from(format!("{service}{method}"))
        .expect("a gRPC method path is a valid path")
}

pub(super) fn unary<Req, Resp>(service: &'static str, method: &'static str) -> MethodRouter<Gateway>
where
    Req: GatewayMessage + DeserializeOwned,
    Resp: GatewayMessage + Serialize,
{
    let path = grpc_path(service, method);
    post(
        move |State(gateway): State<Gateway>, headers: HeaderMap, body: Bytes| async move {
            let request = match decode::<Req>(&body) {
                Ok(request) => request,
                Err(status) => return error_response(&status),
            };
            let mut client = gateway.client().await;
            let call = client.unary(
                with_credentials(&headers, request),
                path,
                ProstCodec::<Req, Resp>::default(),
            );
            match call.await {
                Ok(response) => match serde_json::to_vec(response.get_ref()) {
                    Ok(json) => json_response(StatusCode::OK, json),
                    Err(e) => error_response(&Status::internal(format!("encoding JSON: {e}"))),
                },
                Err(status) => error_response(&status),
            }
        },
    )
}

pub(super) fn server_streaming<Req, Resp>(
    service: &'static str,
    method: &'static str,
) -> MethodRouter<Gateway>
where
    Req: GatewayMessage + DeserializeOwned,
    Resp: GatewayMessage + Serialize,
{
    let path = grpc_path(service, method);
    post(
        move |State(gateway): State<Gateway>, headers: HeaderMap, body: Bytes| async move {
            match decode::<Req>(&body) {
                Ok(request) => {
                    let requests = futures::stream::once(futures::future::ready(request));
                    let no_bad_input = futures::stream::pending();
                    streaming_call::<Req, Resp>(gateway, headers, path, requests, no_bad_input)
                        .await
                }
                Err(status) => error_response(&status),
            }
        },
    )
}

pub(super) fn bidi<Req, Resp>(service: &'static str, method: &'static str) -> MethodRouter<Gateway>
where
    Req: GatewayMessage + DeserializeOwned,
    Resp: GatewayMessage + Serialize,
{
    let path = grpc_path(service, method);
    post(
        move |State(gateway): State<Gateway>, headers: HeaderMap, body: Body| async move {
            let (bad_input, bad_input_rx) = tokio::sync::oneshot::channel();
            let requests = json_messages::<Req>(body, bad_input);
            let bad_input = futures::stream::once(bad_input_rx)
                .filter_map(|bad| futures::future::ready(bad.ok()));
            streaming_call::<Req, Resp>(gateway, headers, path, requests, bad_input).await
        },
    )
}

/// Run a streaming call on `requests` and answer with its stream (ended
/// early by anything `bad_input` reports).
async fn streaming_call<Req, Resp>(
    gateway: Gateway,
    headers: HeaderMap,
    path: PathAndQuery,
    requests: impl Stream<Item = Req> + Send + 'static,
    bad_input: impl Stream<Item = Status> + Send + 'static,
) -> Response
where
    Req: GatewayMessage,
    Resp: GatewayMessage + Serialize,
{
    let mut client = gateway.client().await;
    let call = client.streaming(
        with_credentials(&headers, requests),
        path,
        ProstCodec::<Req, Resp>::default(),
    );
    match call.await {
        Ok(responses) => stream_response(responses.into_inner(), bad_input),
        Err(status) => error_response(&status),
    }
}

impl Gateway {
    /// A gRPC client on the member's own services; nothing crosses a socket.
    async fn client(&self) -> Grpc<Routes> {
        let mut client = Grpc::new(self.grpc.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        // Routes is always ready; its error type is Infallible.
        let _: Result<(), Infallible> = client.ready().await;
        client
    }
}

/// The gRPC request for a gateway call, with the caller's credentials: the
/// `Authorization` header is the token (as etcd's gateway passes it), and the
/// client certificate's user, which the client port's layer set on this HTTP
/// request as on any gRPC call (after removing whatever the client sent
/// under that name), goes along as it is.
fn with_credentials<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let metadata = request.metadata_mut();
    if let Some(token) = headers.get(AUTHORIZATION) {
        if let Ok(token) = token.to_str().unwrap_or_default().parse() {
            metadata.insert("token", token);
        }
    }
    if let Some(user) = headers.get(CERT_USER_METADATA) {
        if let Ok(user) = user.to_str().unwrap_or_default().parse() {
            metadata.insert(CERT_USER_METADATA, user);
        }
    }
    request
}

/// A request message from its JSON; an empty body is the empty request.
fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(bad_json)
}

fn bad_json(e: serde_json::Error) -> Status {
    Status::invalid_argument(format!("the request body is not a valid request: {e}"))
}

/// The request messages of a streaming call, parsed as the body arrives
/// (several JSON objects one after another, whitespace between them or not).
/// A body that does not parse ends the requests, and the reason goes to
/// `bad_input` for the response to end with.
fn json_messages<T: DeserializeOwned + Send + 'static>(
    body: Body,
    bad_input: tokio::sync::oneshot::Sender<Status>,
) -> impl Stream<Item = T> + Send + 'static {
    struct Reading {
        chunks: axum::body::BodyDataStream,
        buffer: Vec<u8>,
        body_ended: bool,
        bad_input: Option<tokio::sync::oneshot::Sender<Status>>,
    }
    let start = Reading {
        chunks: body.into_data_stream(),
        buffer: Vec::new(),
        body_ended: false,
        bad_input: Some(bad_input),
    };
    futures::stream::unfold(start, |mut reading| async move {
        loop {
            let mut parsed = serde_json::Deserializer::from_slice(&reading.buffer).into_iter::<T>();
            let next = parsed.next();
            let used = parsed.byte_offset();
            // Whitespace only, or a message cut short: wait for more.
            let wait_for_more = !reading.body_ended && next_needs_more(&next);
            match next {
                Some(Ok(message)) => {
                    reading.buffer.drain(..used);
                    return Some((message, reading));
                }
                _ if wait_for_more => {}
                None => return None,
                Some(Err(e)) => {
                    if let Some(tx) = reading.bad_input.take() {
                        let _ = tx.send(bad_json(e));
                    }
                    return None;
                }
            }
            match reading.chunks.next().await {
                Some(Ok(chunk)) => reading.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => reading.body_ended = true,
            }
        }
    })
}

/// Whether a parse attempt stopped only for want of more bytes.
fn next_needs_more<T>(next: &Option<Result<T, serde_json::Error>>) -> bool {
    match next {
        None => true,
        Some(Err(e)) => e.is_eof(),
        Some(Ok(_)) => false,
    }
}

/// A streaming call's answer: a `{"result":...}` line per message as it
/// comes, then an `{"error":...}` line if the call or its input fails.
fn stream_response<Resp, Bad>(responses: tonic::Streaming<Resp>, bad_input: Bad) -> Response
where
    Resp: Serialize + Send + 'static,
    Bad: Stream<Item = Status> + Send + 'static,
{
    enum Line {
        Result(Vec<u8>),
        Last(Vec<u8>),
    }
    let results = responses.map(|item| match item {
        Ok(message) => match serde_json::to_vec(&serde_json::json!({ "result": message })) {
            Ok(json) => Line::Result(json),
            Err(e) => Line::Last(stream_error(&Status::internal(format!(
                "encoding JSON: {e}"
            )))),
        },
        Err(status) => Line::Last(stream_error(&status)),
    });
    let failures = bad_input.map(|status| Line::Last(stream_error(&status)));
    let lines = futures::stream::select(results, failures);
    let body = futures::stream::unfold((Box::pin(lines), false), |(mut lines, ended)| async move {
        if ended {
            return None;
        }
        let (mut json, last) = match lines.next().await? {
            Line::Result(json) => (json, false),
            Line::Last(json) => (json, true),
        };
        json.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(json)), (lines, last)))
    });
    json_response(StatusCode::OK, Body::from_stream(body))
}

/// grpc-gateway's error object within a stream.
fn stream_error(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let error = serde_json::json!({
        "error": {
            "grpc_code": status.code() as i32,
            "http_code": http.as_u16(),
            "message": status.message(),
            "http_status": http.canonical_reason().unwrap_or_default(),
        }
    });
    error.to_string().into_bytes()
}

/// grpc-gateway's answer to a failed unary call.
fn error_response(status: &Status) -> Response {
    let error = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    json_response(http_status(status.code()), error.to_string().into_bytes())
}

/// The HTTP status grpc-gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::PutRequest;
    use crate::proto::etcdserverpb::RangeRequest;

    #[test]
    fn a_request_reads_etcds_json() {
        let put: PutRequest =
            decode(br#"{"key":"Zm9v","value":"YmFy","lease":"7","prev_kv":true}"#).unwrap();
        assert_eq!(
            (
                put.key.as_slice(),
                put.value.as_slice(),
                put.lease,
                put.prev_kv
            ),
            (&b"foo"[..], &b"bar"[..], 7, true)
        );
        // JSON names and numbers where a string is expected are read too.
        let range: RangeRequest = decode(br#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":2}"#).unwrap();
        assert_eq!((range.range_end.as_slice(), range.limit), (&b"fop"[..], 2));
        assert_eq!(
            decode::<RangeRequest>(b" \n").unwrap(),
            RangeRequest::default()
        );
        let bad = decode::<RangeRequest>(br#"{"key":"Zm9v","no_such_field":1}"#).unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn a_streaming_body_is_read_one_request_at_a_time() {
        let body = Body::from(r#"{"key":"YQ=="} {"key":"Yg=="}{"key":"Yw=="}"#);
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let keys: Vec<Vec<u8>> = json_messages::<RangeRequest>(body, tx)
            .map(|r| r.key)
            .collect()
            .await;
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(rx.try_recv().is_err(), "nothing was wrong with the body");

        let (tx, rx) = tokio::sync::oneshot::channel();
        let body = Body::from(r#"{"key":"YQ=="} {"key": nonsense}"#);
        let read: Vec<RangeRequest> = json_messages(body, tx).collect().await;
        assert_eq!(read.len(), 1);
        assert_eq!(rx.await.unwrap().code(), Code::InvalidArgument);
    }

    #[test]
    fn error_codes_map_as_grpc_gateways_do() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
