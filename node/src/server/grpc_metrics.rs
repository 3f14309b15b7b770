//! Counting the client port's gRPC calls (`crate::metrics::GrpcCalls`).
//!
//! A call is started when its request arrives and handled when its status
//! is known: at once for an error answered without a body (gRPC's
//! "trailers-only" response), else from the trailers that end the response
//! body. A body dropped before its trailers (the client went away) counts
//! as Canceled, as go-grpc-prometheus counts a handler the client cancelled.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;

use axum::body::Body;
use axum::body::Bytes;
use axum::body::HttpBody;
use axum::extract::Request;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use http_body::Frame;
use http_body::SizeHint;

use crate::metrics::GrpcMethod;
use crate::node::Node;

/// gRPC's Cancelled code.
const CANCELLED: i32 = 1;
/// gRPC's Unknown code: a response that ended without a status.
const UNKNOWN: i32 = 2;

/// The middleware: counts calls to etcd's methods, passes the rest through.
pub(super) async fn count_calls(
    State(node): State<Arc<Node>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(method) = GrpcMethod::of_path(req.uri().path()) else {
        return next.run(req).await;
    };
    node.metrics().grpc.started(method);
    let response = next.run(req).await;
    if let Some(code) = grpc_status(response.headers()) {
        node.metrics().grpc.handled(method, code);
        return response;
    }
    response.map(|body| {
        Body::new(CountedBody {
            inner: body,
            node,
            method,
            counted: false,
        })
    })
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A response body that counts its call as handled when the status arrives.
struct CountedBody {
    inner: Body,
    node: Arc<Node>,
    method: GrpcMethod,
    counted: bool,
}

impl CountedBody {
    fn count(&mut self, code: i32) {
        if !self.counted {
            self.counted = true;
            self.node.metrics().grpc.handled(self.method, code);
        }
    }
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    self.count(code);
                }
            }
            Poll::Ready(None) => self.count(UNKNOWN),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.count(CANCELLED);
    }
}
