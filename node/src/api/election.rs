//! etcd's Election service (v3election): leader election on a lease.
//!
//! A campaign queues `<name>/<lease hex>` holding the candidate's value and
//! returns once it is the oldest key under `<name>/` (see `key_queue`); the
//! leader key's create revision identifies its term, so Proclaim and Resign act
//! only while that very key still leads.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::key_queue;
use super::key_queue::Allowed;
use crate::auth::Need;
use crate::errors::ApiError;
use crate::node::Node;
use crate::proto::etcdserverpb::compare::*;
use crate::proto::etcdserverpb::request_op::Request as Op;
use crate::proto::etcdserverpb::*;
use crate::proto::v3electionpb::election_server::Election;
use crate::proto::v3electionpb::*;

pub struct ElectionService {
    pub node: Arc<Node>,
}

fn not_leader() -> ApiError {
    ApiError::new(tonic::Code::FailedPrecondition, "election: not leader")
}

fn no_leader() -> ApiError {
    ApiError::new(tonic::Code::NotFound, "election: no leader")
}

impl ElectionService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.mvcc().current_revision()))
    }

    /// Put `value` on the leader key if it still leads with this create revision.
    async fn proclaim_on(
        &self,
        allowed: &Allowed,
        leader: &LeaderKey,
        value: &[u8],
    ) -> Result<(), ApiError> {
        let still_leader = Compare {
            key: leader.key.clone(),
            target: CompareTarget::Create as i32,
            result: CompareResult::Equal as i32,
            target_union: Some(TargetUnion::CreateRevision(leader.rev)),
            ..Default::default()
        };
        let put = RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: leader.key.clone(),
                value: value.to_vec(),
                lease: leader.lease,
                ..Default::default()
            })),
        };
        let resp = key_queue::txn(
            &self.node,
            allowed,
            TxnRequest {
                compare: vec![still_leader],
                success: vec![put],
                failure: vec![],
            },
        )
        .await?;
        if resp.succeeded {
            Ok(())
        } else {
            Err(not_leader())
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        req: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let (prefix, key, allowed) = key_queue::contender(
            &self.node,
            req.metadata(),
            &req.get_ref().name,
            req.get_ref().lease,
            "election",
        )
        .await?;
        let req = req.into_inner();
        let mine = key_queue::enqueue(&self.node, &allowed, &key, &req.value, req.lease).await?;
        let leader = LeaderKey {
            name: req.name.clone(),
            key,
            rev: mine.create_revision,
            lease: req.lease,
        };
        if mine.value != req.value {
            // Campaigning again on the same lease: take the new value.
            self.proclaim_on(&allowed, &leader, &req.value).await?;
        }
        key_queue::wait_for_turn(&self.node, &prefix, &leader.key, mine.create_revision).await?;
        Ok(Response::new(CampaignResponse {
            header: self.header(),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        req: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let md = req.metadata().clone();
        let req = req.into_inner();
        let leader = req.leader.ok_or_else(not_leader)?;
        let allowed = key_queue::authorize(&self.node, &md, &leader.key, &[], Need::Write).await?;
        self.proclaim_on(&allowed, &leader, &req.value).await?;
        Ok(Response::new(ProclaimResponse {
            header: self.header(),
        }))
    }

    async fn leader(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let prefix = key_queue::queue_prefix(&req.get_ref().name);
        let end = key_queue::queue_end(&prefix);
        // Looked up first: its read barrier makes the check below see every
        // auth change acknowledged before this call.
        let kv = key_queue::oldest_before(&self.node, &prefix, 0).await?;
        key_queue::authorize(&self.node, req.metadata(), &prefix, &end, Need::Read).await?;
        let kv = kv.ok_or_else(no_leader)?;
        Ok(Response::new(LeaderResponse {
            header: self.header(),
            kv: Some(kv),
        }))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

    async fn observe(
        &self,
        req: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = key_queue::queue_prefix(&req.get_ref().name);
        let end = key_queue::queue_end(&prefix);
        key_queue::authorize(&self.node, req.metadata(), &prefix, &end, Need::Read).await?;
        let node = self.node.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut last: Option<(Vec<u8>, i64)> = None;
            loop {
                let mut changes = node.watch_hub().subscribe();
                match key_queue::oldest_before(&node, &prefix, 0).await {
                    Ok(Some(kv)) if last.as_ref() != Some(&(kv.key.clone(), kv.mod_revision)) => {
                        last = Some((kv.key.clone(), kv.mod_revision));
                        let resp = LeaderResponse {
                            header: Some(node.header(node.mvcc().current_revision())),
                            kv: Some(kv),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                // Wait for any change under the prefix (or for the client to go).
                loop {
                    tokio::select! {
                        _ = tx.closed() => return,
                        got = changes.recv() => match got {
                            // A snapshot install's resync: it changed what it changed unseen.
                            Ok(events) if events.is_empty() => break,
                            Ok(events) => {
                                let touched = events.iter().any(|e| {
                                    e.kv.as_ref().is_some_and(|kv| kv.key >= prefix && kv.key < end)
                                });
                                if touched {
                                    break;
                                }
                            }
                            Err(RecvError::Lagged(_)) => break,
                            Err(RecvError::Closed) => return,
                        },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn resign(
        &self,
        req: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let md = req.metadata().clone();
        let leader = req.into_inner().leader.ok_or_else(not_leader)?;
        let allowed = key_queue::authorize(&self.node, &md, &leader.key, &[], Need::Write).await?;
        // Resigning a leadership already lost is not an error, as in etcd.
        key_queue::delete_if_owner(&self.node, &allowed, &leader.key, leader.rev).await?;
        Ok(Response::new(ResignResponse {
            header: self.header(),
        }))
    }
}
