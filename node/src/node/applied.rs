//! The member's in-memory state that follows what the state machine applied:
//! watchers hear committed changes, the leader's lease deadlines hear that
//! leases changed, and auth tokens issued through the log become valid here.

use std::sync::Arc;

use crate::auth::Tokens;
use crate::lease::LeaseTimers;
use crate::proto::mvccpb::Event;
use crate::store::state_machine::AppliedListener;
use crate::store::TokenChange;
use crate::watch::WatchHub;

/// What `server` hands the state machine to announce applied changes to; the
/// member holds the same three.
pub struct AppliedFollowers {
    pub watch_hub: Arc<WatchHub>,
    pub lease_timers: Arc<LeaseTimers>,
    pub tokens: Arc<Tokens>,
}

impl AppliedListener for AppliedFollowers {
    fn events(&self, events: Vec<Event>) {
        self.watch_hub.publish(events);
    }

    fn leases_changed(&self) {
        self.lease_timers.note_change();
    }

    fn tokens_changed(&self, changes: Vec<TokenChange>) {
        for change in changes {
            match change {
                TokenChange::Issued { token, user } => self.tokens.insert(token, user),
                TokenChange::UserRevoked(user) => self.tokens.revoke_user(&user),
                TokenChange::AllRevoked => self.tokens.revoke_all(),
            }
        }
    }

    fn state_replaced(&self) {
        self.lease_timers.note_change();
        // The skipped entries may have revoked tokens: end them all (clients
        // authenticate again, as after a restart, which also forgets them).
        self.tokens.revoke_all();
        // The revisions the snapshot skipped were never broadcast.
        self.watch_hub.resync();
    }
}
