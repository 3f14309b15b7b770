//! etcd's Watch service: one task per stream (see `crate::watch`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::watch_stream::WatchStream;
use crate::node::Node;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::*;

/// Responses buffered per stream before the stream stops taking live events
/// (and later catches up from history).
const STREAM_BUFFER: usize = 128;

pub struct WatchService {
    pub node: Arc<Node>,
    pub progress_every: Duration,
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

    async fn watch(
        &self,
        req: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.node.caller(req.metadata()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let stream = WatchStream::new(self.node.clone(), tx, caller);
        tokio::spawn(stream.run(req.into_inner(), self.progress_every));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
