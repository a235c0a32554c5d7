//! The agent's event stream: state changes, progress and path events of
//! every transfer, each with an id one above the previous one, so a client
//! that sees a gap knows it missed events (as Syncthing's event API does).
//!
//! The latest [`KEPT`] events are kept, so a client that reconnects with
//! `Last-Event-ID` (or `?since=ID`) gets what it missed, if it is still
//! held; live events fan out through a broadcast channel, and a client too
//! slow to keep up skips ahead (and sees the gap).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

/// Events kept for clients that reconnect.
pub const KEPT: usize = 1024;

/// One event: its id and a JSON object with at least `"type"`.
#[derive(Debug, Clone)]
pub struct Event {
    /// Rises by one per event, from 1.
    pub id: u64,
    /// The event itself (`{"type": ..., ...}`), without the id.
    pub body: Value,
}

impl Event {
    /// The body with `"id"` added.
    pub fn to_json(&self) -> Value {
        let mut v = self.body.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), self.id.into());
        }
        v
    }
}

/// The stream.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    kept: Mutex<(u64, VecDeque<Arc<Event>>)>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(KEPT).0,
            kept: Mutex::new((0, VecDeque::with_capacity(KEPT))),
        }
    }
}

impl Events {
    /// Publishes `body` as the next event.
    pub fn publish(&self, body: Value) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.0 += 1;
        let event = Arc::new(Event { id: kept.0, body });
        if kept.1.len() == KEPT {
            kept.1.pop_front();
        }
        kept.1.push_back(event.clone());
        // Sent under the lock, so live events leave in id order.
        let _ = self.tx.send(event);
    }

    /// Subscribes to live events and returns, atomically with it, the kept
    /// events after `after` (those a reconnecting client missed).
    pub fn subscribe_after(
        &self,
        after: u64,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let missed = kept.1.iter().filter(|e| e.id > after).cloned().collect();
        (missed, rx)
    }

    /// The id of the latest event (0 before any).
    pub fn last_id(&self) -> u64 {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_rise_by_one_and_a_reconnect_gets_what_it_missed() {
        let events = Events::default();
        for i in 0..5 {
            events.publish(serde_json::json!({"type": "t", "n": i}));
        }
        let (missed, mut rx) = events.subscribe_after(3);
        assert_eq!(missed.iter().map(|e| e.id).collect::<Vec<_>>(), [4, 5]);
        events.publish(serde_json::json!({"type": "t"}));
        let live = rx.try_recv().unwrap();
        assert_eq!(live.id, 6);
        assert_eq!(live.to_json()["id"], 6);
        assert_eq!(events.last_id(), 6);
    }

    #[test]
    fn only_the_latest_events_are_kept() {
        let events = Events::default();
        for _ in 0..KEPT + 10 {
            events.publish(serde_json::json!({"type": "t"}));
        }
        let (missed, _) = events.subscribe_after(0);
        assert_eq!(missed.len(), KEPT);
        assert_eq!(missed[0].id, 11);
    }
}
