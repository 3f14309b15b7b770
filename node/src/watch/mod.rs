//! etcd's Watch: every change, once, in revision order, on every member.
//!
//! The state machine records each change in `kv_events` (keyed by revision and
//! sub-revision) and, once a batch is committed, publishes it on the
//! [`WatchHub`]'s bounded broadcast. Each gRPC watch stream (`api::watch_stream`)
//! serves all its watchers from that broadcast. A stream that falls behind (a client that does
//! not read, a burst of writes) is dropped from the broadcast, never waited for,
//! and catches up from `kv_events` instead: writers are never blocked by watchers.

pub mod hub;

pub use hub::WatchHub;
