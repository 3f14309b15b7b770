//! Alarms in the state machine: raised and cleared through the log, as in etcd,
//! so every member agrees on them. While a NOSPACE alarm is raised, writes that
//! add data (puts, txns that put, lease grants) are refused everywhere; deletes
//! and compaction still work, so an operator can make room and then disarm it.

use rocksdb::IteratorMode;
use rocksdb::DB;

use super::cf;
use super::schema::CF_SM_META;
use crate::errors::ApiError;
use crate::proto::etcdserverpb::AlarmMember;
use crate::proto::etcdserverpb::AlarmType;

use super::schema::ALARM_PREFIX as PREFIX;

pub fn no_space() -> ApiError {
    ApiError::new(
        tonic::Code::ResourceExhausted,
        "etcdserver: mvcc: database space exceeded",
    )
}

/// Every raised alarm.
pub fn alarms(db: &DB) -> Result<Vec<AlarmMember>, ApiError> {
    let iter = db.iterator_cf(
        cf(db, CF_SM_META),
        IteratorMode::From(PREFIX, rocksdb::Direction::Forward),
    );
    let mut out = Vec::new();
    for item in iter {
        let (k, _) = item.map_err(ApiError::internal)?;
        let Some(rest) = k.strip_prefix(PREFIX) else {
            break;
        };
        if rest.len() != 12 {
            return Err(ApiError::internal("corrupt alarm record"));
        }
        out.push(AlarmMember {
            member_id: u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
            alarm: i32::from_be_bytes(rest[8..].try_into().expect("4 bytes")),
        });
    }
    Ok(out)
}

pub fn space_alarm_raised(db: &DB) -> bool {
    alarms(db).is_ok_and(|a| a.iter().any(|m| m.alarm == AlarmType::Nospace as i32))
}
