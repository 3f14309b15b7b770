//! Applying what members publish about themselves (name, client URLs, the
//! incarnation of their data dir), and forgetting it when they leave.
//!
//! Both rules keep a member's incarnation record meaningful (see
//! `crate::incarnation`): the record names the one data dir that may serve as
//! that member, from its first publication until the member is removed.

use std::collections::BTreeSet;
use std::io;

use prost::Message;

use super::Applier;
use crate::errors::ApiError;
use crate::proto::raftkvpb::MemberAttributes;
use crate::raft::Membership;
use crate::raft::NodeId;
use crate::store::cf;
use crate::store::members;
use crate::store::schema::member_attr_key;
use crate::store::schema::CF_SM_META;

impl Applier<'_> {
    /// Record what member `attrs.id` published. Refused for a member the
    /// applied membership does not list (a removed member's late publication
    /// would otherwise be waiting for the next member added under its id), and
    /// for an incarnation other than the one recorded (a wiped data dir must
    /// not take its old member's place). Runs on a clean database
    /// (`needs_clean_db`).
    pub(crate) fn member_attributes(&mut self, attrs: &MemberAttributes) -> Result<(), ApiError> {
        if !self.members()?.contains(&attrs.id) {
            return Err(ApiError::new(
                tonic::Code::FailedPrecondition,
                format!("member {:x} is not in the membership", attrs.id),
            ));
        }
        let recorded = members::recorded_incarnation(self.db, attrs.id);
        if recorded != 0 && recorded != attrs.incarnation {
            return Err(ApiError::new(
                tonic::Code::FailedPrecondition,
                format!(
                    "member {:x} publishes data dir incarnation {:x}, but {:x} is recorded: \
                     its data dir was replaced",
                    attrs.id, attrs.incarnation, recorded
                ),
            ));
        }
        self.batch.put_cf(
            cf(self.db, CF_SM_META),
            member_attr_key(attrs.id),
            attrs.encode_to_vec(),
        );
        Ok(())
    }

    /// A membership was applied: forget the attributes of every member it no
    /// longer lists, so a member added again under the same id (the operator
    /// re-uses ordinals) is recorded afresh. Runs on a clean database.
    pub(crate) fn membership(&mut self, membership: &Membership) -> io::Result<()> {
        let listed: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        for id in members::recorded_ids(self.db)? {
            if !listed.contains(&id) {
                self.batch
                    .delete_cf(cf(self.db, CF_SM_META), member_attr_key(id));
            }
        }
        self.members = Some(listed);
        Ok(())
    }

    /// The ids the applied membership lists (read once an applier).
    fn members(&mut self) -> Result<&BTreeSet<NodeId>, ApiError> {
        if self.members.is_none() {
            let applied = members::applied_membership(self.db).map_err(ApiError::internal)?;
            self.members = Some(applied.membership().nodes().map(|(id, _)| *id).collect());
        }
        Ok(self.members.get_or_insert_with(BTreeSet::new))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::proto::raftkvpb::command::Op;
    use crate::proto::raftkvpb::command_result::Result as Applied;
    use crate::proto::raftkvpb::Command;
    use crate::raft::Member;

    fn membership(ids: &[NodeId]) -> Membership {
        let nodes: BTreeMap<NodeId, Member> =
            ids.iter().map(|id| (*id, Member::default())).collect();
        Membership::new(vec![nodes.keys().copied().collect()], nodes).unwrap()
    }

    /// Apply a membership, then each publication in turn, each in its own
    /// applier as separate `apply` calls would; whether each was taken.
    fn apply(db: &rocksdb::DB, ids: &[NodeId], published: &[(NodeId, u64)]) -> Vec<bool> {
        let mut applier = Applier::new(db);
        let membership = membership(ids);
        applier.membership(&membership).unwrap();
        let mut batch = applier.take_batch();
        // What the state machine records with the batch.
        let stored = crate::raft::StoredMembership::new(None, membership);
        batch.put_cf(
            cf(db, CF_SM_META),
            crate::store::schema::KEY_MEMBERSHIP,
            crate::raft::codec::encode(&stored).unwrap(),
        );
        db.write(batch).unwrap();
        published
            .iter()
            .map(|(id, incarnation)| {
                let mut applier = Applier::new(db);
                let attrs = MemberAttributes {
                    id: *id,
                    name: format!("m{id}"),
                    client_urls: vec![],
                    incarnation: *incarnation,
                };
                let result = applier.apply(&Command {
                    op: Some(Op::SetMemberAttributes(attrs)),
                    stamp: None,
                });
                db.write(applier.take_batch()).unwrap();
                !matches!(result.result, Some(Applied::Error(_)))
            })
            .collect()
    }

    #[test]
    fn the_first_incarnation_published_stays_until_the_member_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::open_db(dir.path()).unwrap();
        // A record with no incarnation (an older version) may gain one; the
        // first one stays; another is refused; so is a non-member.
        assert_eq!(
            apply(&db, &[1, 2, 3], &[(3, 0), (3, 5), (3, 5), (3, 6), (4, 7)]),
            [true, true, true, false, false]
        );
        assert_eq!(members::recorded_incarnation(&db, 3), 5);
        assert_eq!(members::recorded_ids(&db).unwrap(), [3]);

        // Removed: forgotten; added again under its id: recorded afresh.
        assert_eq!(apply(&db, &[1, 2], &[(3, 6)]), [false]);
        assert_eq!(members::recorded_ids(&db).unwrap(), Vec::<NodeId>::new());
        assert_eq!(apply(&db, &[1, 2, 3], &[(3, 6)]), [true]);
        assert_eq!(members::recorded_incarnation(&db, 3), 6);
    }
}
