//! Applying alarm changes (the state itself is read in `store::alarm`).

use super::Applier;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::AlarmRequest;
use crate::proto::etcdserverpb::AlarmType;
use crate::store::cf;
use crate::store::schema::alarm_key;
use crate::store::schema::CF_SM_META;

impl Applier<'_> {
    pub(crate) fn alarm(&mut self, req: &AlarmRequest) -> Result<(), ApiError> {
        let handle = cf(self.db, CF_SM_META);
        match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Activate) => {
                self.batch
                    .put_cf(handle, alarm_key(req.member_id, req.alarm), []);
                if req.alarm == AlarmType::Nospace as i32 {
                    self.no_space = true;
                }
            }
            Ok(AlarmAction::Deactivate) => {
                self.batch
                    .delete_cf(handle, alarm_key(req.member_id, req.alarm));
            }
            _ => {}
        }
        Ok(())
    }
}
