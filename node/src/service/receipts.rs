//! Sending delivery receipts: when each room's next one goes out, paced by the room's
//! size and what other members send (the pacing itself is [`crate::receipt`]).

use std::time::Duration;

use libp2p::gossipsub::IdentTopic;

use super::Service;
use crate::room::RoomId;

/// Receipts go out at most this often per room.
pub(super) const RECEIPT_INTERVAL: Duration = Duration::from_secs(1);

impl Service {
    /// Publishes a delivery receipt in every room that received something since the last one.
    /// Each member's receipts are spaced by the room's size, so a room carries a few
    /// receipts a second in total however many members it has (every receipt costs each
    /// member a signature check), and the spacing is drawn at random around that so that
    /// members who started together do not all send at once.
    pub(super) fn send_receipts(&mut self) {
        use rand::RngExt;
        let now = tokio::time::Instant::now();
        self.receipts_heard.roll();
        self.message_rate.tick();
        let due: Vec<(RoomId, bool)> = self.receipts_due.iter().map(|(r, f)| (*r, *f)).collect();
        for (room, full) in due {
            // After a quiet spell our last receipt no longer paces the next one, and every
            // member that got the same message would answer at once: wait a random part of
            // the spacing first (or of a longer window while the room's size is unknown),
            // worked out again each tick as what we hear tells us more of the room.
            let at = match (self.next_receipt.get(&room), self.first_receipt.get(&room)) {
                (Some(t), None) if now < *t + RECEIPT_INTERVAL => *t,
                _ => {
                    let (since, draw) = *self
                        .first_receipt
                        .entry(room)
                        .or_insert_with(|| (now, rand::rng().random_range(0.0..1.0)));
                    let (_, spacing) = self.receipt_pace(room);
                    let neighbours = self.room_peers(room);
                    let window = crate::receipt::first_spacing(
                        spacing,
                        neighbours,
                        self.budget.target,
                        self.core.room_size_known(room, neighbours + 1),
                    );
                    let t = since + Duration::from_secs_f64(window * draw);
                    self.next_receipt.insert(room, t);
                    t
                }
            };
            if now < at {
                continue;
            }
            // The room carries its share of receipts already: ours waits another spacing
            // (by then we know more members, so the spacing is longer).
            let (budget, spacing) = self.receipt_pace(room);
            if f64::from(self.receipts_heard.recent(&room)) >= budget {
                self.space_receipt(room, spacing);
                continue;
            }
            self.receipts_due.remove(&room);
            self.space_receipt(room, spacing);
            match self.core.compose_receipt(room, full) {
                Ok(Some(env)) => {
                    let topic = IdentTopic::new(room.topic());
                    // Best effort: a receipt that finds no peer is simply not needed yet.
                    if self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic, env.into_bytes())
                        .is_ok()
                    {
                        self.activity.receipts_sent += 1;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not build a receipt"),
            }
        }
    }

    /// Our next receipt in `room` waits a spacing (drawn at random around `spacing`, from
    /// [`Service::receipt_pace`]) from now: we just told the room what we hold.
    pub(super) fn space_receipt(&mut self, room: RoomId, spacing: f64) {
        use rand::RngExt;
        self.first_receipt.remove(&room);
        let next = spacing * rand::rng().random_range(0.5..1.5);
        self.next_receipt.insert(
            room,
            tokio::time::Instant::now() + Duration::from_secs_f64(next),
        );
    }

    /// Receipts per second the whole room aims at ([`crate::receipt::budget`]), and the
    /// seconds between two of ours that keep it there ([`crate::receipt::spacing`]), from
    /// the room's size as whom we hear shows it ([`Core::room_size`]): the members we
    /// know are a small part of a big room for minutes, and paced as if they were all,
    /// its members sent several times its budget.
    pub(super) fn receipt_pace(&self, room: RoomId) -> (f64, f64) {
        let members = self.core.room_size(room);
        let budget = crate::receipt::budget(members, self.message_rate.per_s(&room));
        (budget, crate::receipt::spacing(members, budget))
    }
}

impl Service {
    /// Stores what members said they hold of our chain since the last time (see
    /// `core::held`), so a restart does not forget it.
    pub(super) fn save_held(&mut self) {
        if let Err(e) = self.core.save_held() {
            tracing::warn!(error = %e, "could not store what members hold of our messages");
        }
    }
}
