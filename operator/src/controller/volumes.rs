//! The volume-expansion phase of a reconcile: raise every member claim that
//! asks for less than `spec.storage.size` ([`crate::volumes`] decides which),
//! and report how far expansion got. A refusal (a StorageClass without
//! `allowVolumeExpansion`) is reported, never fatal: the rest of the
//! reconcile goes on, and the next one tries again.

use super::reconciler::Reconciler;
use crate::members::MemberApi;
use crate::volumes::{claims_to_expand, condition, ClaimSize};
use kube::runtime::events::EventType;
use std::collections::BTreeMap;

/// What the expansion phase of one reconcile found and did.
pub struct ExpansionRound {
    /// `(status, reason, message)` of the `VolumesExpanded` condition.
    pub condition: (bool, &'static str, String),
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// Raises the claims that ask for less than the spec's size.
    pub async fn expand_volumes(&self, claims: &BTreeMap<u32, ClaimSize>) -> ExpansionRound {
        let size = &self.rc.spec.storage.size;
        let mut refused = None;
        for ordinal in claims_to_expand(size, claims) {
            match self.kube.expand_volume(ordinal, size).await {
                Ok(()) => {
                    let note = format!("volume of pod ordinal {ordinal} raised to {size}");
                    self.kube
                        .publish(EventType::Normal, "ExpandingVolume", note)
                        .await;
                }
                Err(err) => {
                    self.kube
                        .publish(
                            EventType::Warning,
                            "VolumeExpansionRefused",
                            err.to_string(),
                        )
                        .await;
                    refused = Some(err.to_string());
                    break;
                }
            }
        }
        ExpansionRound {
            condition: condition(size, claims, refused.as_deref()),
        }
    }
}
