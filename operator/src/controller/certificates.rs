//! The certificates phase of a RaftCluster with `spec.tls`: before anything
//! reaches a member, the CA Secret exists, the member and client certificate
//! Secrets are current (issued again when [`crate::certificates::renewal`]
//! says so), and the members are reached over TLS with the client
//! certificate. Members pick a renewed certificate up from their mounted
//! Secret by themselves; nothing restarts.

use super::reconciler::Reconciler;
use crate::certificates::{
    self, CertAndKey, LeafRecord, Renewal, ISSUED_FOR_ANNOTATION, NOT_AFTER_ANNOTATION,
    ROTATE_ANNOTATION,
};
use crate::members::MemberApi;
use crate::membership::ClientTls;
use crate::resources;
use crate::Error;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::events::EventType;
use kube::ResourceExt;

/// The text of `key` in the Secret's data, if present and not empty.
fn text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    let text = String::from_utf8(bytes.0.clone()).ok()?;
    (!text.trim().is_empty()).then_some(text)
}

fn pair(secret: &Secret, cert: &str, key: &str) -> Option<CertAndKey> {
    Some(CertAndKey {
        cert_pem: text(secret, cert)?,
        key_pem: text(secret, key)?,
    })
}

/// What a leaf Secret records; `None` when it lacks a certificate, key or CA.
fn leaf_record(secret: &Secret) -> Option<LeafRecord> {
    pair(secret, "tls.crt", "tls.key")?;
    let annotations = secret.annotations();
    Some(LeafRecord {
        ca_pem: text(secret, "ca.crt")?,
        not_after: annotations
            .get(NOT_AFTER_ANNOTATION)
            .and_then(|t| t.parse().ok()),
        issued_for: annotations
            .get(ISSUED_FOR_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
    })
}

impl<M: MemberApi> Reconciler<'_, M> {
    /// With `spec.tls`: make or renew the certificate Secrets, and reach the
    /// members over TLS from now on. Without it, nothing.
    pub async fn ensure_certificates(&mut self) -> Result<(), Error> {
        let Some(tls) = &self.rc.spec.tls else {
            return Ok(());
        };
        let names = &self.owned.names;
        let ca = match self.kube.secret(&names.ca_secret()).await? {
            Some(secret) => pair(&secret, "ca.crt", "ca.key"),
            None => None,
        };
        let ca = match ca {
            Some(ca) => ca,
            None => {
                let ca = certificates::new_ca(names, self.now)?;
                let secret = resources::ca_secret(&self.owned, &ca);
                self.kube.apply(&names.ca_secret(), &secret).await?;
                ca
            }
        };
        let member = self.kube.secret(&names.member_tls_secret()).await?;
        let client = self.kube.secret(&names.client_tls_secret()).await?;
        let requested = self
            .rc
            .annotations()
            .get(ROTATE_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let records = [member.as_ref(), client.as_ref()].map(|s| s.and_then(leaf_record));
        let renewal = certificates::renewal(
            &records,
            &ca.cert_pem,
            &requested,
            tls.certificate_days,
            self.now,
        );
        let kept = match (&renewal, &client) {
            (Renewal::Keep { .. }, Some(secret)) => pair(secret, "tls.crt", "tls.key"),
            _ => None,
        };
        let client_pair = match kept {
            Some(pair) => pair,
            None => {
                let leaves =
                    certificates::issue_leaves(&ca, names, self.now, tls.certificate_days)?;
                for (name, leaf) in [
                    (names.member_tls_secret(), &leaves.member),
                    (names.client_tls_secret(), &leaves.client),
                ] {
                    let secret = resources::leaf_secret(
                        &self.owned,
                        name.clone(),
                        leaf,
                        &ca,
                        leaves.not_after,
                        &requested,
                    );
                    self.kube.apply(&name, &secret).await?;
                }
                let why = match renewal {
                    Renewal::Issue(reason) => reason.to_string(),
                    Renewal::Keep { .. } => "the client certificate Secret is incomplete".into(),
                };
                self.kube
                    .publish(
                        EventType::Normal,
                        "IssuedCertificates",
                        format!(
                            "member and client certificates issued, valid until {} ({why})",
                            leaves.not_after
                        ),
                    )
                    .await;
                leaves.client
            }
        };
        self.members.tls = Some(ClientTls {
            ca_pem: ca.cert_pem,
            cert_pem: client_pair.cert_pem,
            key_pem: client_pair.key_pem,
        });
        Ok(())
    }
}
