//! Compaction: history older than the requested revision is dropped.

use super::Applier;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::*;
use crate::store::cf;
use crate::store::schema;
use crate::store::schema::CF_KV_EVENTS;

impl<'a> Applier<'a> {
    pub(super) fn compact(
        &mut self,
        req: &CompactionRequest,
    ) -> Result<CompactionResponse, ApiError> {
        if req.revision <= self.compacted {
            return Err(ApiError::compacted());
        }
        if req.revision > self.revision {
            return Err(ApiError::future_revision());
        }
        crate::store::compaction::compact_history(self.db, &mut self.batch, req.revision)?;
        // Watches may start at the compact revision, not before it.
        self.batch.delete_range_cf(
            cf(self.db, CF_KV_EVENTS),
            schema::event_key(0, 0),
            schema::event_key(req.revision, 0),
        );
        self.compacted = req.revision;
        Ok(CompactionResponse {
            header: self.header(),
        })
    }
}
