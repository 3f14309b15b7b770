//! Operator high availability: several replicas run, one reconciles.
//!
//! The replica that holds a `coordination.k8s.io` Lease (`raftkv-operator`, in
//! the operator's namespace) runs the controller; the others wait, and take
//! the Lease over once its holder stopped renewing it for its duration (a
//! replica itself just (re)started waits one duration more: a leader that
//! crashed does not take leadership back from a waiting standby). Two
//! replicas acting at once would be two planners taking membership steps from
//! the same observation, so every write to the Lease is a replace conditional
//! on the resourceVersion just read: of two replicas trying, one wins.
//!
//! A leader that cannot renew within [`RENEW_DEADLINE`] (shorter than the
//! Lease's duration) stops: it cannot know whether another replica took over
//! meanwhile, so it exits and its Deployment restarts it as a standby (what
//! controller-runtime's leader election does). A leader stopped with SIGTERM
//! gives the Lease up on its way out, so a standby takes over at once.
//!
//! [`decide`] is the decision, a pure function of the Lease as read; the rest
//! is the loop around it.

use crate::{kube_err, Error};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use std::time::Duration;

/// The Lease's name, in the operator's namespace.
pub const LEASE_NAME: &str = "raftkv-operator";
/// How long a Lease not renewed still holds.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that could not renew for this long stops (before others may take over).
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and a standby looks.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What to do about the Lease as read.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseAction {
    /// Nobody holds it: create it.
    Create,
    /// Take it (free, expired, or ours already) with this Lease (to be written
    /// over the version read).
    Take(Box<Lease>),
    /// Someone else holds it until `until`.
    Wait { holder: String, until: Timestamp },
}

fn held_until(spec: &LeaseSpec) -> Option<Timestamp> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
    renewed
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

/// The decision for replica `me` (started at `started`) at `now`, from the
/// Lease as read. A Lease whose holder stopped renewing it is taken only by a
/// replica that has run for a Lease duration itself: a replica that crashed
/// and was restarted (and may crash again) does not take leadership back from
/// a standby that has been waiting. A released Lease is taken at once.
pub fn decide(lease: Option<&Lease>, me: &str, started: Timestamp, now: Timestamp) -> LeaseAction {
    let Some(lease) = lease else {
        return LeaseAction::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mine = holder == me;
    if !mine && !holder.is_empty() {
        let settled = started
            .checked_add(SignedDuration::from_secs(LEASE_DURATION.as_secs() as i64))
            .unwrap_or(started);
        let until = held_until(&spec).map_or(settled, |expiry| expiry.max(settled));
        if until > now {
            return LeaseAction::Wait { holder, until };
        }
    }
    let mut next = lease.clone();
    next.spec = Some(LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if mine {
            spec.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
        ..spec
    });
    LeaseAction::Take(Box::new(next))
}

/// One replica's side of the election.
pub struct LeaderElection {
    api: Api<Lease>,
    me: String,
    started: Timestamp,
}

impl LeaderElection {
    /// `me` names this replica (its pod); the Lease lives in `namespace`.
    pub fn new(client: Client, namespace: &str, me: impl Into<String>) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            me: me.into(),
            started: Timestamp::now(),
        }
    }

    /// One attempt to take or renew the Lease: true while this replica holds it.
    async fn try_hold(&self) -> Result<bool, Error> {
        let current = self
            .api
            .get_opt(LEASE_NAME)
            .await
            .map_err(kube_err("reading the leader Lease"))?;
        let now = Timestamp::now();
        let written = match decide(current.as_ref(), &self.me, self.started, now) {
            LeaseAction::Wait { .. } => return Ok(false),
            LeaseAction::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.to_string()),
                        ..ObjectMeta::default()
                    },
                    spec: None,
                };
                let LeaseAction::Take(lease) = decide(Some(&lease), &self.me, self.started, now)
                else {
                    unreachable!("a Lease without spec is free");
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            LeaseAction::Take(lease) => {
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            // Another replica wrote first: it holds the Lease, for now.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(source) => Err(Error::Kube {
                what: "writing the leader Lease".to_string(),
                source,
            }),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        let mut said = false;
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(identity = %self.me, "leading: took the Lease {LEASE_NAME}");
                    return;
                }
                Ok(false) if !said => {
                    tracing::info!(identity = %self.me, "standing by: another replica holds the Lease");
                    said = true;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "leader election"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the Lease every [`RETRY_PERIOD`]; returns once it could not be
    /// renewed for [`RENEW_DEADLINE`] or another replica holds it: this
    /// replica must stop reconciling then.
    pub async fn renew_until_lost(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            match self.try_hold().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(identity = %self.me, "another replica holds the Lease");
                    return;
                }
                Err(err) => tracing::warn!(error = %err, "renewing the Lease"),
            }
            if last_renewed.elapsed() > RENEW_DEADLINE {
                tracing::error!(identity = %self.me, "could not renew the Lease in time");
                return;
            }
        }
    }

    /// Gives the Lease up (on a clean stop), so a standby need not wait for
    /// it to expire. Best effort.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(err) = self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %err, "releasing the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Timestamp, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.to_string()),
                resource_version: Some("7".to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(renewed)),
                renew_time: Some(MicroTime(renewed)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A replica that has run long enough to compete for an expired Lease.
    fn long_ago() -> Timestamp {
        at("2025-12-31T00:00:00Z")
    }

    #[test]
    fn a_lease_held_by_another_waits_until_it_expires() {
        let held = lease(Some("op-a"), at("2026-01-01T00:00:00Z"), 1);
        assert_eq!(
            decide(Some(&held), "op-b", long_ago(), at("2026-01-01T00:00:14Z")),
            LeaseAction::Wait {
                holder: "op-a".to_string(),
                until: at("2026-01-01T00:00:15Z")
            }
        );
        let LeaseAction::Take(taken) =
            decide(Some(&held), "op-b", long_ago(), at("2026-01-01T00:00:16Z"))
        else {
            panic!("an expired lease is taken");
        };
        let spec = taken.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-b"));
        assert_eq!(spec.lease_transitions, Some(2));
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(at("2026-01-01T00:00:16Z")))
        );
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("7"),
            "written over the version read"
        );
    }

    #[test]
    fn the_holder_renews_and_a_released_lease_is_free() {
        let held = lease(Some("op-a"), at("2026-01-01T00:00:00Z"), 1);
        let LeaseAction::Take(renewed) =
            decide(Some(&held), "op-a", long_ago(), at("2026-01-01T00:00:02Z"))
        else {
            panic!("the holder renews");
        };
        let spec = renewed.spec.unwrap();
        assert_eq!(
            spec.lease_transitions,
            Some(1),
            "a renewal is no transition"
        );
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(at("2026-01-01T00:00:00Z")))
        );
        assert_eq!(spec.renew_time, Some(MicroTime(at("2026-01-01T00:00:02Z"))));
        let released = lease(None, at("2026-01-01T00:00:00Z"), 1);
        assert!(
            matches!(
                decide(
                    Some(&released),
                    "op-b",
                    at("2026-01-01T00:00:00Z"),
                    at("2026-01-01T00:00:01Z")
                ),
                LeaseAction::Take(_)
            ),
            "a released Lease is taken at once, even by a replica just started"
        );
        assert_eq!(
            decide(None, "op-b", long_ago(), at("2026-01-01T00:00:01Z")),
            LeaseAction::Create
        );
    }

    #[test]
    fn a_replica_just_restarted_leaves_an_expired_lease_to_the_standby() {
        // op-a crashed at 00:00 and its container came back as op-a2 at 00:10;
        // the Lease expired at 00:15. op-a2 may compete from 00:25 only.
        let held = lease(Some("op-a"), at("2026-01-01T00:00:00Z"), 1);
        let restarted = at("2026-01-01T00:00:10Z");
        assert_eq!(
            decide(Some(&held), "op-a2", restarted, at("2026-01-01T00:00:16Z")),
            LeaseAction::Wait {
                holder: "op-a".to_string(),
                until: at("2026-01-01T00:00:25Z")
            }
        );
        assert!(matches!(
            decide(Some(&held), "op-b", long_ago(), at("2026-01-01T00:00:16Z")),
            LeaseAction::Take(_)
        ));
    }
}
