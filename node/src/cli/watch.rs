//! `raftkv watch KEY [--prefix] [--rev N] [--prev-kv]`: prints events as etcdctl
//! does (type, key, value; with --prev-kv the previous key and value too), until
//! Ctrl-C.

use anyhow::Context;
use futures::StreamExt;

use super::client::status_err;
use super::client::Endpoints;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::watch_request::RequestUnion;
use crate::proto::etcdserverpb::*;
use crate::proto::mvccpb::event::EventType;
use crate::store::mvcc::prefix_end;

pub async fn run(
    ep: &Endpoints,
    key: String,
    prefix: bool,
    rev: i64,
    prev_kv: bool,
) -> anyhow::Result<()> {
    let mut watch = WatchClient::new(ep.connect().await?);
    let key = key.into_bytes();
    let range_end = if prefix {
        prefix_end(&key).unwrap_or_else(|| vec![0])
    } else {
        Vec::new()
    };
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key,
            range_end,
            start_revision: rev,
            prev_kv,
            ..Default::default()
        })),
    };
    // Keep the request stream open for the life of the watch.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(create).await.context("watch stream closed")?;
    let mut replies = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(status_err)?
        .into_inner();
    loop {
        let reply = tokio::select! {
            r = replies.next() => r.context("the watch stream ended")?.map_err(status_err)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        if reply.canceled {
            anyhow::bail!("watch canceled: {}", reply.cancel_reason);
        }
        for e in reply.events {
            let kind = if e.r#type == EventType::Delete as i32 {
                "DELETE"
            } else {
                "PUT"
            };
            println!("{kind}");
            if let Some(prev) = &e.prev_kv {
                println!(
                    "{}\n{}",
                    String::from_utf8_lossy(&prev.key),
                    String::from_utf8_lossy(&prev.value)
                );
            }
            if let Some(kv) = &e.kv {
                println!(
                    "{}\n{}",
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value)
                );
            }
        }
    }
}
