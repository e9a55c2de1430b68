//! Messages arriving by gossip: verified, forwarded and shown at once, stored a moment
//! later with others in one transaction, and made durable by the periodic flush.

use std::time::Duration;

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance};

use super::{Event, Service, reconcile};
use crate::core::{Admitted, Incoming, Rejection};
use crate::room::RoomId;

/// Swarm events handled back to back before the event loop looks at anything else; also
/// the most received entries waiting to be stored: past that many they are stored at once.
pub(super) const GROUP_COMMIT_MAX: usize = 256;
/// Received entries are stored at most this long after the first of them arrived, all in
/// one transaction (each costs about 0.1 ms of CPU, whatever its size). Those that come
/// next in their author's chain, nearly all, are shown when verified, before they are
/// stored (`Core::preview`), so this delays no message; it keeps the writes of a room's
/// members out of the way of the message that caused them while it spreads (a room of 40
/// on two cores: p99 ~18 ms against ~22 ms when every message waited for its write).
/// Commands store what waits first, so what a client reads holds every message shown.
const STORE_DELAY: Duration = Duration::from_millis(50);
/// Received entries reach the disk at most this long after they are stored: a crash loses
/// no more than that, and reconciliation fetches it again from the members who hold it.
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl Service {
    pub(super) fn on_gossipsub(&mut self, ev: gossipsub::Event) {
        match ev {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let topic = message.topic.as_str().to_string();
                if self.faults.lose() {
                    // Simulated loss: as if the message never arrived (sync recovers it).
                    self.verdict(&message_id, &propagation_source, MessageAcceptance::Ignore);
                    return;
                }
                self.activity.gossip_in += 1;
                match self.core.admit(&topic, message.data) {
                    Admitted::Entry(entry) => {
                        // Verified: forward it now, so propagation never waits for a disk,
                        // and show it now if it comes next in its author's chain (nearly
                        // always). It is stored a little later with others in one
                        // transaction (`STORE_DELAY`). (Its author stored it before
                        // publishing, so a crash here loses nothing reconciliation cannot
                        // bring back.)
                        self.verdict(&message_id, &propagation_source, MessageAcceptance::Accept);
                        let (room, env, payload) = &*entry;
                        if let Some(view) = self.core.preview(*room, env, payload) {
                            self.emit(Event::Message(Box::new(view)));
                        }
                        self.unstored.push((propagation_source, *entry));
                    }
                    Admitted::Done(incoming) => {
                        let room = RoomId::from_topic(&topic);
                        self.settle(message_id, propagation_source, room, incoming);
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(id) = RoomId::from_topic(topic.as_str()) {
                    self.flush_outbox(id);
                    // It may hold a file we are fetching (a holder the DHT named, say).
                    self.pump_room(id);
                    // A member appeared: reconcile with it right away, and tell it what we
                    // hold (receipts are deltas; it has seen none of ours). One exchange
                    // serves both ways (the answer carries the other vector, and each side
                    // pulls what it lacks), so a member that holds nothing leaves it to one
                    // that does: in a room that has not spoken yet, every connection (and a
                    // DHT walk opens dozens) cost an exchange each way for nothing.
                    // Nor does it wake the room's periodic exchanges.
                    if self.core.room(&id).is_some() {
                        let holds_something = self.core.vector(id).map_or(true, |v| !v.is_empty());
                        if holds_something || self.holds_writes(id) {
                            self.news(id);
                            self.start_hello(peer_id, id, false);
                            self.receipts_due.insert(id, true);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Gives gossipsub the verdict on a message that needs no journal write: forwarded if
    /// valid (receipts), dropped if useless, and its relayer blamed if invalid.
    fn settle(
        &mut self,
        message_id: gossipsub::MessageId,
        source: PeerId,
        room: Option<RoomId>,
        incoming: Incoming,
    ) {
        let verdict = match incoming {
            // What it says the member holds and we lack, the next round goes after
            // (`Service::sync_all`).
            Incoming::Receipt => {
                self.activity.receipts_heard += 1;
                if let Some(room) = room {
                    self.receipts_heard.record(room);
                }
                MessageAcceptance::Accept
            }
            // Unverifiable here yet: not forwarded, and the relayer, which holds the
            // author's chain, is asked for it from the start.
            Incoming::UnknownAuthor => {
                if let Some(room) = room {
                    self.start_hello(source, room, false);
                }
                MessageAcceptance::Ignore
            }
            Incoming::Rejected(reason) => {
                tracing::info!(peer = %source, ?reason, "rejected message");
                self.strike(source);
                self.emit(Event::Rejected {
                    room_id: room.map(|r| r.to_hex()).unwrap_or_default(),
                    reason,
                });
                MessageAcceptance::Reject
            }
            _ => MessageAcceptance::Ignore,
        };
        self.verdict(&message_id, &source, verdict);
    }

    /// Tells gossipsub whether to forward a message it is holding for validation.
    fn verdict(&mut self, id: &gossipsub::MessageId, source: &PeerId, verdict: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, source, verdict);
    }

    /// Schedules the store of the received entries waiting, `STORE_DELAY` after the first
    /// of them came; stores them now if there are many.
    pub(super) fn commit_soon(&mut self) {
        if self.unstored.len() >= GROUP_COMMIT_MAX {
            self.commit_unstored();
        } else if !self.unstored.is_empty() && self.commit_at.is_none() {
            self.commit_at = Some(tokio::time::Instant::now() + STORE_DELAY);
        }
    }

    /// Stores every verified gossip message waiting in one transaction, then tells the
    /// node's clients about those not shown yet (see `Core::preview`).
    pub(super) fn commit_unstored(&mut self) {
        self.commit_at = None;
        let items = std::mem::take(&mut self.unstored);
        if items.is_empty() {
            return;
        }
        let (sources, entries): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        let rooms: Vec<RoomId> = entries.iter().map(|(room, _, _)| *room).collect();
        let me = self.core.identity().id();
        let ours: Vec<bool> = entries
            .iter()
            .map(|(_, e, _)| e.author_id() == me)
            .collect();
        // No disk sync here (that is the flush), so no need to leave the runtime.
        match self.core.commit(entries) {
            Ok(results) => {
                for (((source, room), ours), incoming) in
                    sources.into_iter().zip(rooms).zip(ours).zip(results)
                {
                    // Another machine of ours wrote at a seq we wrote at too (both at
                    // once): as when a pull shows it, our writes there stop until a
                    // repair, rather than go on on a branch members refuse.
                    if ours && matches!(incoming, Incoming::Rejected(Rejection::Fork)) {
                        self.own_stored(room, &[me.0]);
                        // Not news for clients: the node settles it, and says so if it
                        // takes up the members' history (`repaired`).
                        self.news(room);
                        continue;
                    }
                    self.on_stored(source, room, incoming);
                }
            }
            // Nothing is lost: the entries come back through reconciliation.
            Err(e) => tracing::error!(error = %e, "could not store incoming messages"),
        }
    }

    /// What a received entry's outcome in the journal calls for.
    fn on_stored(&mut self, source: PeerId, room: RoomId, incoming: Incoming) {
        match incoming {
            Incoming::Accepted(view, released) => {
                self.entries_added(room);
                self.emit(Event::Message(view));
                for view in released {
                    self.emit(Event::Message(Box::new(view)));
                }
            }
            Incoming::Shown(released) => {
                self.entries_added(room);
                for view in released {
                    self.emit(Event::Message(Box::new(view)));
                }
            }
            // A gap in an author's chain: whoever relayed this likely has the rest.
            Incoming::Pending => {
                self.news(room);
                self.start_hello(source, room, false);
            }
            // The author signed two histories; whoever relayed it is not to blame, and the
            // proof spreads to every member through reconciliation.
            Incoming::Rejected(reason) => {
                self.news(room);
                self.emit(Event::Rejected {
                    room_id: room.to_hex(),
                    reason,
                });
            }
            Incoming::Duplicate
            | Incoming::NotOurs
            | Incoming::Receipt
            | Incoming::UnknownAuthor => {}
        }
    }

    /// Makes the entries stored since the last flush durable, on a blocking thread: a
    /// durable commit waits for the disk (two syncs), and the event loop keeps going
    /// meanwhile. Handing the runtime worker over with `block_in_place` instead cost a
    /// thread switch per flush, every second on every node holding new entries.
    pub(super) fn flush(&mut self) {
        if self.flushing {
            return;
        }
        let journal = self.core.shared_journal();
        if !journal.has_unflushed() {
            return;
        }
        self.flushing = true;
        let tx = self.reconcile.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = journal.flush();
            // Let go of the journal first: a node shutting down waits for this message, then
            // closes the database.
            drop(journal);
            let _ = tx.send(reconcile::Internal::Flushed(result));
        });
    }

    pub(super) fn flushed(&mut self, result: Result<bool, crate::journal::JournalError>) {
        self.flushing = false;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not flush the journal");
        }
    }
}
