//! Counts of what a node's networking did since it started: shown by `cryptchat status`,
//! logged once a minute at debug (target `cryptchat::activity`) as the change since the
//! last line, and summed by netsim. They say what keeps a node busy: the messages
//! themselves, or the receipts, vector exchanges, pulls and connections around them.

use serde::{Deserialize, Serialize};

/// One counter per kind of work; all only grow.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Activity {
    /// Gossip messages (entries and receipts) that reached the node's checks.
    pub gossip_in: u64,
    /// Receipts among them.
    pub receipts_heard: u64,
    /// Receipts this node published.
    pub receipts_sent: u64,
    /// Vector exchanges started (one per peer and room; several ride in one request).
    pub exchanges_sent: u64,
    /// Vector exchanges answered for peers.
    pub exchanges_answered: u64,
    /// Pull requests sent.
    pub pulls_sent: u64,
    /// Entries that pulls brought back (new or not).
    pub entries_pulled: u64,
    /// Pull requests served.
    pub pulls_served: u64,
    /// Entries sent in answer to pulls.
    pub entries_served: u64,
    /// Sync requests of ours that failed (timeout, closed connection, refused stream).
    pub sync_failures: u64,
    /// Connections opened, either way.
    pub connections_opened: u64,
    /// Of which we dialled.
    pub connections_dialled: u64,
    /// Connections closed, by either side.
    pub connections_closed: u64,
    /// DHT searches for room members.
    pub lookups: u64,
    /// Announcements of our rooms in the DHT (each a walk, then a record on 20 nodes).
    pub announcements: u64,
    /// DHT queries finished, of any kind (lookups, announcements, walks for a peer's
    /// address, Kademlia's own bootstraps).
    pub dht_queries: u64,
    /// Of which Kademlia bootstraps (each a walk per bucket).
    pub dht_bootstraps: u64,
    /// DHT walks started for the address of a member we meant to dial.
    pub address_walks: u64,
    /// Member exchanges asked of connected room members (see [`crate::peers::pick_offered`]).
    pub member_asks: u64,
    /// Members dialled on what those answers named.
    pub members_dialled: u64,
    /// Member exchanges answered for peers.
    pub member_asks_answered: u64,
    /// Announcements in the DHT of files this node holds whole.
    pub file_announcements: u64,
    /// DHT searches for holders of a file no connected member could serve.
    pub file_lookups: u64,
    /// Holders those searches named (other than this node).
    pub file_holders_found: u64,
    /// Chunk requests served with a chunk.
    pub chunks_served: u64,
}

impl Activity {
    /// What happened since `earlier` (counters taken from the same node; a counter that
    /// went down, as after a restart, counts from zero).
    pub fn since(&self, earlier: &Activity) -> Activity {
        let d = |now: u64, then: u64| now.checked_sub(then).unwrap_or(now);
        Activity {
            gossip_in: d(self.gossip_in, earlier.gossip_in),
            receipts_heard: d(self.receipts_heard, earlier.receipts_heard),
            receipts_sent: d(self.receipts_sent, earlier.receipts_sent),
            exchanges_sent: d(self.exchanges_sent, earlier.exchanges_sent),
            exchanges_answered: d(self.exchanges_answered, earlier.exchanges_answered),
            pulls_sent: d(self.pulls_sent, earlier.pulls_sent),
            entries_pulled: d(self.entries_pulled, earlier.entries_pulled),
            pulls_served: d(self.pulls_served, earlier.pulls_served),
            entries_served: d(self.entries_served, earlier.entries_served),
            sync_failures: d(self.sync_failures, earlier.sync_failures),
            connections_opened: d(self.connections_opened, earlier.connections_opened),
            connections_dialled: d(self.connections_dialled, earlier.connections_dialled),
            connections_closed: d(self.connections_closed, earlier.connections_closed),
            lookups: d(self.lookups, earlier.lookups),
            announcements: d(self.announcements, earlier.announcements),
            dht_queries: d(self.dht_queries, earlier.dht_queries),
            dht_bootstraps: d(self.dht_bootstraps, earlier.dht_bootstraps),
            address_walks: d(self.address_walks, earlier.address_walks),
            member_asks: d(self.member_asks, earlier.member_asks),
            members_dialled: d(self.members_dialled, earlier.members_dialled),
            member_asks_answered: d(self.member_asks_answered, earlier.member_asks_answered),
            file_announcements: d(self.file_announcements, earlier.file_announcements),
            file_lookups: d(self.file_lookups, earlier.file_lookups),
            file_holders_found: d(self.file_holders_found, earlier.file_holders_found),
            chunks_served: d(self.chunks_served, earlier.chunks_served),
        }
    }

    /// Adds `other`'s counts to ours (netsim sums its nodes).
    pub fn add(&mut self, other: &Activity) {
        self.gossip_in += other.gossip_in;
        self.receipts_heard += other.receipts_heard;
        self.receipts_sent += other.receipts_sent;
        self.exchanges_sent += other.exchanges_sent;
        self.exchanges_answered += other.exchanges_answered;
        self.pulls_sent += other.pulls_sent;
        self.entries_pulled += other.entries_pulled;
        self.pulls_served += other.pulls_served;
        self.entries_served += other.entries_served;
        self.sync_failures += other.sync_failures;
        self.connections_opened += other.connections_opened;
        self.connections_dialled += other.connections_dialled;
        self.connections_closed += other.connections_closed;
        self.lookups += other.lookups;
        self.announcements += other.announcements;
        self.dht_queries += other.dht_queries;
        self.dht_bootstraps += other.dht_bootstraps;
        self.address_walks += other.address_walks;
        self.member_asks += other.member_asks;
        self.members_dialled += other.members_dialled;
        self.member_asks_answered += other.member_asks_answered;
        self.file_announcements += other.file_announcements;
        self.file_lookups += other.file_lookups;
        self.file_holders_found += other.file_holders_found;
        self.chunks_served += other.chunks_served;
    }

    /// Logs the change since `last` at debug, if anything changed, and returns the new
    /// starting point.
    pub(crate) fn log_since(&self, last: &Activity) -> Activity {
        let d = self.since(last);
        if d != Activity::default() {
            tracing::debug!(
                target: "cryptchat::activity",
                gossip_in = d.gossip_in,
                receipts_heard = d.receipts_heard,
                receipts_sent = d.receipts_sent,
                exchanges_sent = d.exchanges_sent,
                exchanges_answered = d.exchanges_answered,
                pulls_sent = d.pulls_sent,
                entries_pulled = d.entries_pulled,
                pulls_served = d.pulls_served,
                entries_served = d.entries_served,
                sync_failures = d.sync_failures,
                connections_opened = d.connections_opened,
                connections_dialled = d.connections_dialled,
                connections_closed = d.connections_closed,
                lookups = d.lookups,
                announcements = d.announcements,
                dht_queries = d.dht_queries,
                dht_bootstraps = d.dht_bootstraps,
                address_walks = d.address_walks,
                member_asks = d.member_asks,
                members_dialled = d.members_dialled,
                member_asks_answered = d.member_asks_answered,
                file_announcements = d.file_announcements,
                file_lookups = d.file_lookups,
                file_holders_found = d.file_holders_found,
                chunks_served = d.chunks_served,
                "activity in the last minute"
            );
        }
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_gives_the_change_and_restarts_count_from_zero() {
        let earlier = Activity {
            gossip_in: 10,
            pulls_sent: 3,
            lookups: 7,
            ..Activity::default()
        };
        let now = Activity {
            gossip_in: 25,
            pulls_sent: 3,
            // The node restarted: its counter began again from zero.
            lookups: 2,
            ..Activity::default()
        };
        let d = now.since(&earlier);
        assert_eq!(d.gossip_in, 15);
        assert_eq!(d.pulls_sent, 0);
        assert_eq!(d.lookups, 2);
        assert_eq!(d.connections_opened, 0);
    }

    #[test]
    fn sums_add_every_counter() {
        let one = Activity {
            gossip_in: 1,
            receipts_heard: 2,
            receipts_sent: 3,
            exchanges_sent: 4,
            exchanges_answered: 5,
            pulls_sent: 6,
            entries_pulled: 7,
            pulls_served: 8,
            entries_served: 9,
            sync_failures: 10,
            connections_opened: 11,
            connections_dialled: 17,
            connections_closed: 12,
            lookups: 13,
            announcements: 18,
            dht_queries: 19,
            dht_bootstraps: 20,
            address_walks: 21,
            member_asks: 14,
            members_dialled: 15,
            member_asks_answered: 16,
            file_announcements: 22,
            file_lookups: 23,
            file_holders_found: 24,
            chunks_served: 25,
        };
        let mut total = Activity::default();
        total.add(&one);
        total.add(&one);
        assert_eq!(total.since(&one), one);
        // Old clients' status JSON has no counters: they read as zero.
        let parsed: Activity = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, Activity::default());
    }
}
