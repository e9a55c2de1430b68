//! Writes held until the node holds its own chain in the room (see [`crate::own_chain`]):
//! a command that writes in a room waits, in the order it came, until a member's vector
//! confirms our chain there (asked for at once), our chain is pulled, nobody can be found,
//! or the wait runs out.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::handle::Command;
use super::{NodeError, Repaired, Service, blocking};
use crate::core::repair::Resend;
use crate::own_chain::{Heard, Standing, Verdict};
use crate::own_fork::{Settle, Told};
use crate::room::RoomId;

/// The hash of `author`'s entry at `seq` in `room`, if the journal holds it.
fn hash_at(
    journal: &crate::journal::Journal,
    room: RoomId,
    author: &crate::journal::Id,
    seq: u64,
) -> Option<[u8; 32]> {
    journal
        .get(&room.0, author, seq)
        .ok()
        .flatten()
        .map(|e| e.meta.hash)
}

/// A command waiting to write.
pub(crate) struct Held {
    rooms: Vec<RoomId>,
    cmd: Command,
    /// When to look again if nothing else happens first.
    recheck: Instant,
}

/// Members asked for their vector when a write waits for one.
const ASK: usize = 3;

/// A node takes up the room's branch of its forked chain by itself at most
/// [`AUTO_REPAIRS`] times in this long: forks that keep coming back (machines that keep
/// writing at the same moment, or a repair that does not settle) are left to the user.
const AUTO_REPAIR_WINDOW: Duration = Duration::from_secs(60);
const AUTO_REPAIRS: usize = 3;

/// What the node did about forks of its own chain in a room (see [`crate::own_fork`]).
#[derive(Default)]
pub(crate) struct ForkSeen {
    /// When it took up the room's branch by itself, within the last [`AUTO_REPAIR_WINDOW`].
    repaired: std::collections::VecDeque<Instant>,
    /// It said that it leaves the fork to the user (said once).
    told: bool,
}

impl Service {
    /// The node starts or joins `room`: our chain there is unknown until a member tells.
    pub(super) fn open_own(&mut self, room: RoomId) {
        self.own.open(room, Instant::now());
    }

    /// The last seq, up to `at_most`, at which the journal holds a proof that our key
    /// signed two entries. The last, not the first: proofs of forks settled earlier stay
    /// in the journal, below the one at hand.
    fn own_fork_proof(&self, room: RoomId, at_most: u64) -> Option<u64> {
        let me = self.core.identity().id().0;
        self.core
            .fork_refs(room)
            .unwrap_or_default()
            .iter()
            .filter(|f| f.author == me && f.seq <= at_most)
            .map(|f| f.seq)
            .max()
    }

    /// The rooms a command writes our entries in; none for one that writes nothing.
    fn writes_in(&self, cmd: &Command) -> Vec<RoomId> {
        let named = |name: &str| self.core.room_by_name(name).ok().map(|r| r.id);
        match cmd {
            Command::Send(room, ..)
            | Command::Reply(room, ..)
            | Command::React(room, ..)
            | Command::Revise(room, ..)
            | Command::ShareFile(room, ..)
            | Command::Resend(room, _) => named(room).into_iter().collect(),
            // Invitations go in the direct room with each contact, and members added to a
            // group are announced in the group.
            Command::Invite(room, contacts, _) => (contacts.iter())
                .filter_map(|c| self.core.direct_room(c))
                .chain(named(room).filter(|id| {
                    self.core
                        .room(id)
                        .is_some_and(|r| r.kind == crate::room::RoomKind::Group)
                }))
                .collect(),
            Command::CreateGroup(_, contacts, _) => contacts
                .iter()
                .filter_map(|c| self.core.direct_room(c))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Whether a write in all of `rooms` may go ahead: the first fork found, else the
    /// earliest time to look again, else yes.
    fn write_verdict(&self, rooms: &[RoomId], now: Instant) -> Verdict {
        let mut wait: Option<Instant> = None;
        for room in rooms {
            let alone = self.room_peers(*room) == 0;
            match self.own.verdict(room, now, alone) {
                Verdict::Write => {}
                Verdict::Forked(seq) => return Verdict::Forked(seq),
                Verdict::Wait(at) => wait = Some(wait.map_or(at, |w| w.min(at))),
            }
        }
        wait.map_or(Verdict::Write, Verdict::Wait)
    }

    /// `cmd` back if it may run now; else it waits (or fails on a fork of our chain).
    pub(super) fn gate(&mut self, cmd: Command) -> Option<Command> {
        let rooms = self.writes_in(&cmd);
        if rooms.is_empty() {
            return Some(cmd);
        }
        // Behind an earlier write in the same room, in order.
        let queued = self
            .held
            .iter()
            .any(|h| h.rooms.iter().any(|r| rooms.contains(r)));
        let now = Instant::now();
        // A member is back after a time with none in reach: it may hold what another
        // machine of ours wrote meanwhile, so it is heard first.
        for room in &rooms {
            if self.room_peers(*room) > 0 && self.own.back_in_reach(*room, now) {
                tracing::debug!("a member is back in reach: our own chain is checked first");
            }
        }
        let recheck = match self.write_verdict(&rooms, now) {
            Verdict::Write if !queued => return Some(cmd),
            Verdict::Write => now,
            Verdict::Forked(seq) => {
                self.fail_forked(cmd, &rooms, seq);
                return None;
            }
            Verdict::Wait(at) => at,
        };
        tracing::debug!("a write waits until this node holds its own messages in the room");
        for room in &rooms {
            self.ask_own(*room);
        }
        self.held.push_back(Held {
            rooms,
            cmd,
            recheck,
        });
        None
    }

    fn fail_forked(&self, cmd: Command, rooms: &[RoomId], seq: u64) {
        let now = Instant::now();
        let room = rooms
            .iter()
            .find(|r| matches!(self.own.verdict(r, now, false), Verdict::Forked(_)))
            .and_then(|r| self.core.room(r))
            .map_or_else(String::new, |r| r.name.clone());
        cmd.fail(NodeError::OwnFork { room, seq });
    }

    /// Asks a few connected members of `room` for their vector, if we have not heard one.
    fn ask_own(&mut self, room: RoomId) {
        if !matches!(self.own.standing(&room), Some(Standing::Unknown { .. })) {
            return;
        }
        for peer in self.room_peer_ids(room).into_iter().take(ASK) {
            self.start_hello(peer, room, false);
        }
    }

    /// Whether a write waits in `room` (a member that appears there is asked at once).
    pub(super) fn holds_writes(&self, room: RoomId) -> bool {
        self.held.iter().any(|h| h.rooms.contains(&room))
    }

    /// When the next held command is due a look.
    pub(super) fn held_recheck(&self) -> Option<tokio::time::Instant> {
        self.held
            .iter()
            .map(|h| h.recheck)
            .min()
            .map(tokio::time::Instant::from_std)
    }

    /// Runs the held commands that may run now, in order; a room with a command still
    /// waiting holds back the later ones that write there.
    pub(super) fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut blocked: HashSet<RoomId> = HashSet::new();
        let mut waiting = std::collections::VecDeque::new();
        let mut ready = Vec::new();
        while let Some(mut held) = self.held.pop_front() {
            let behind = held.rooms.iter().any(|r| blocked.contains(r));
            match self.write_verdict(&held.rooms, now) {
                Verdict::Forked(seq) => self.fail_forked(held.cmd, &held.rooms, seq),
                Verdict::Write if !behind => ready.push(held.cmd),
                Verdict::Write => {
                    held.recheck = now;
                    waiting.push_back(held);
                }
                Verdict::Wait(at) => {
                    blocked.extend(held.rooms.iter().copied());
                    held.recheck = at;
                    waiting.push_back(held);
                }
            }
        }
        self.held = waiting;
        for cmd in ready {
            self.run_command(cmd);
        }
    }

    /// Rooms whose members are all out of reach now: when one is back, another machine of
    /// ours may have written there meanwhile (see [`crate::own_chain::OwnChains::cut_off`]).
    /// `members`: the rooms' members (`topic_peers`), known once for a sync round.
    pub(super) fn own_cut_off(
        &mut self,
        members: &HashMap<libp2p::gossipsub::TopicHash, Vec<libp2p::PeerId>>,
    ) {
        let confirmed: Vec<RoomId> = (self.core.rooms())
            .map(|r| r.id)
            .filter(|r| self.own.standing(r) == Some(Standing::Confirmed))
            .collect();
        let alone = |room: &RoomId| {
            let topic = libp2p::gossipsub::IdentTopic::new(room.topic()).hash();
            members.get(&topic).is_none_or(Vec::is_empty)
        };
        for room in confirmed.into_iter().filter(alone) {
            tracing::debug!(
                room = %room.to_hex(),
                "no member within reach: our chain is checked again when one is"
            );
            self.own.cut_off(room);
        }
    }

    /// A member's vector for `room` came in: what it holds of our chain.
    pub(super) fn own_heard(&mut self, peer: libp2p::PeerId, room: RoomId) {
        // Confirmed while members stay within reach: what they hold of ours is ours, passed
        // on (see `OwnChains::heard`).
        if matches!(self.own.standing(&room), None | Some(Standing::Confirmed)) {
            return;
        }
        let me = self.core.identity().id().0;
        let Some(theirs) = self.reconcile.theirs(&peer, room) else {
            return;
        };
        let theirs = theirs.get(&me).copied();
        let claimed = theirs.map_or(0, |h| h.seq);
        let Ok(vector) = self.core.vector(room) else {
            return;
        };
        let mine = vector.get(&me).copied();
        let journal = self.core.journal();
        let hash_at = |seq| hash_at(journal, room, &me, seq);
        match self.own.heard(room, Instant::now(), mine, theirs, hash_at) {
            Heard::Ahead(seq) => {
                tracing::info!(
                    seq,
                    "a member holds more of our own messages: pulling them first"
                );
            }
            // The member holds another branch of ours: we know it does if we hold the
            // proof that our key signed two entries there (a restart after the fork).
            Heard::Conflicts => match self.own_fork_proof(room, claimed) {
                Some(seq) => self.own_forked(room, seq),
                None => {
                    tracing::warn!(%peer, "a member claims a head of our chain that we do not hold")
                }
            },
            Heard::Confirms => {}
        }
        self.own_settle(room);
        self.release_held();
    }

    /// Entries of `room` were stored from a pull: our chain may have caught up, or forked
    /// (`forked_authors` of the pull: the member serves a branch of ours that is not ours).
    pub(super) fn own_stored(&mut self, room: RoomId, forked_authors: &[crate::journal::Id]) {
        if self.own.standing(&room).is_none() {
            return;
        }
        let me = self.core.identity().id().0;
        if forked_authors.contains(&me) {
            let seq = self.own_fork_proof(room, u64::MAX).unwrap_or(0);
            if !matches!(self.own.standing(&room), Some(Standing::Forked { .. })) {
                tracing::warn!(
                    seq,
                    "our own messages in a room conflict with ones written elsewhere"
                );
            }
            self.own_forked(room, seq);
        } else if matches!(self.own.standing(&room), Some(Standing::Behind { .. }))
            && let Ok(vector) = self.core.vector(room)
        {
            self.own.stored(room, vector.get(&me).copied());
        }
        self.own_settle(room);
        self.release_held();
    }

    /// Our chain forked in `room` at `seq`: writes there stop, and every member in reach
    /// is asked which branch it holds.
    fn own_forked(&mut self, room: RoomId, seq: u64) {
        self.own.forked(room, seq, Instant::now());
        self.own_forks.entry(room).or_default();
        self.ask_forked(room);
    }

    fn ask_forked(&mut self, room: RoomId) {
        for peer in self.room_peer_ids(room) {
            self.start_hello(peer, room, false);
        }
    }

    /// On the sync tick: rooms where our chain forked ask every member in reach again, as
    /// members come and go and the user's other machine gives way.
    pub(super) fn own_forks_ask(&mut self) {
        let forked: Vec<RoomId> = (self.core.rooms())
            .map(|r| r.id)
            .filter(|r| matches!(self.own.standing(r), Some(Standing::Forked { .. })))
            .collect();
        for room in forked {
            self.ask_forked(room);
        }
    }

    /// A peer's vector for a room came with a machine tag: if it is ours, the peer is
    /// another machine of our user, whose branch says nothing of what the room holds.
    pub(super) fn note_machine(&mut self, peer: PeerId, hello: &crate::sync::Hello) {
        if let Some(tag) = &hello.machine
            && !self.own_machines.contains(&peer)
            && self.core.identity().is_own_machine(&peer.to_bytes(), tag)
        {
            tracing::info!(%peer, "a peer runs our identity too: another machine of ours");
            self.own_machines.insert(peer);
        }
    }

    /// Our machine tag, for a vector in a room where we hold a proof that our key signed
    /// two entries (see [`crate::sync::Hello::machine`]).
    pub(super) fn machine_tag(&self, forks: &[crate::sync::ForkRef]) -> Option<Vec<u8>> {
        let me = self.core.identity().id().0;
        forks.iter().any(|f| f.author == me).then(|| {
            let peer = self.swarm.local_peer_id().to_bytes();
            self.core.identity().machine_tag(&peer).to_vec()
        })
    }

    /// While our chain in `room` is forked: from what the members in reach hold, goes on
    /// writing on our branch, or takes up theirs (see [`crate::own_fork`]).
    fn own_settle(&mut self, room: RoomId) {
        let Some(Standing::Forked { seq, .. }) = self.own.standing(&room) else {
            return;
        };
        if !self.own.settles() {
            return;
        }
        let me = self.core.identity().id().0;
        let Ok(vector) = self.core.vector(room) else {
            return;
        };
        let mine = vector.get(&me).copied();
        let (mut members, mut machines) = (Vec::new(), Vec::new());
        let local = *self.swarm.local_peer_id();
        let mut lowest = true;
        for peer in self.room_peer_ids(room) {
            let hash_at = |seq| hash_at(self.core.journal(), room, &me, seq);
            let told = (self.reconcile.theirs(&peer, room)).map(|v| Told {
                head: v.get(&me).copied(),
                knows_fork: self.reconcile.knows_fork(&peer, room, &me),
            });
            let diverged = self.reconcile.diverged(&peer, room, &me);
            let side = crate::own_fork::side(seq, mine, told, diverged, hash_at);
            if self.own_machines.contains(&peer) {
                lowest &= local < peer;
                machines.push(side);
            } else {
                members.push(side);
            }
        }
        let seen = self.own_forks.entry(room).or_default();
        match crate::own_fork::settle(&members, &machines, lowest) {
            Settle::Keep => {
                tracing::info!(
                    seq,
                    "the room's members hold our branch of our own messages: writing on"
                );
                self.own.keep(room);
                seen.told = false;
            }
            Settle::TakeUp => {
                let now = Instant::now();
                while (seen.repaired.front())
                    .is_some_and(|at| now.duration_since(*at) >= AUTO_REPAIR_WINDOW)
                {
                    seen.repaired.pop_front();
                }
                if seen.repaired.len() >= AUTO_REPAIRS {
                    if !seen.told {
                        seen.told = true;
                        tracing::warn!(
                            seq,
                            "our own messages in a room keep forking (three repairs within a \
                             minute): left to `cryptchat repair`"
                        );
                    }
                    return;
                }
                seen.repaired.push_back(now);
                seen.told = false;
                // The other branch was signed with our key elsewhere: another machine of
                // ours, or someone who has the password. The user should know either way.
                tracing::warn!(
                    seq,
                    "the room's members hold another branch of our own messages, written \
                     with this identity elsewhere (on another machine of yours, or by \
                     someone who knows your password): taking it up and writing ours again \
                     after it"
                );
                let _ = self
                    .reconcile
                    .tx
                    .send(super::reconcile::Internal::RepairOwn(room));
            }
            Settle::Split if !seen.told => {
                seen.told = true;
                tracing::info!(
                    seq,
                    "members hold different branches of our own messages: \
                     left to `cryptchat repair`"
                );
            }
            Settle::Split | Settle::Wait => {}
        }
    }

    /// Repairs `room` by the node's own decision, if its chain there is still forked.
    pub(super) fn repair_own(&mut self, room: RoomId) {
        if !matches!(self.own.standing(&room), Some(Standing::Forked { .. })) {
            return;
        }
        let Some(name) = self.core.room(&room).map(|r| r.name.clone()) else {
            return;
        };
        match self.repair(&name) {
            Ok(r) => tracing::info!(
                messages = r.messages,
                "repaired: our messages follow the room's"
            ),
            Err(e) => tracing::error!(error = %e, "could not repair the room"),
        }
    }
}

impl Service {
    /// Our own chain in a room forked: drops what we hold of the room, asks its members
    /// for it again, and once our chain is back, writes again what of ours they lack.
    pub(super) fn repair(&mut self, name: &str) -> Result<Repaired, NodeError> {
        let room = self.core.room_by_name(name)?.id;
        if !matches!(self.own.standing(&room), Some(Standing::Forked { .. })) {
            return Err(crate::core::CoreError::NotForked(name.to_string()).into());
        }
        let (room, ours) = blocking(|| self.core.repair(name))?;
        let name = self
            .core
            .room(&room)
            .map_or(name.to_string(), |r| r.name.clone());
        // What waits to be published was written on the branch we drop.
        self.outbox.remove(&room);
        self.reconcile.restart_room(room);
        self.open_own(room);
        self.news(room);
        for peer in self.room_peer_ids(room) {
            self.start_hello(peer, room, true);
        }
        let messages = ours.iter().filter(|o| o.resend.is_some()).count();
        self.resend.insert(room, ours);
        self.emit(super::Event::Repaired {
            room_id: room.to_hex(),
            room: name.clone(),
            messages,
        });
        // Behind the history, like any write, and ahead of the writes that waited for the
        // fork to settle: the dropped branch's messages were written before them.
        let (reply, _) = tokio::sync::oneshot::channel();
        self.held.push_front(Held {
            rooms: vec![room],
            cmd: Command::Resend(name.clone(), reply),
            recheck: Instant::now(),
        });
        self.release_held();
        Ok(Repaired {
            room: name,
            messages,
        })
    }

    /// Writes again, after a repair, the messages of ours that the room's members lack.
    pub(super) fn resend_lacking(&mut self, name: &str) -> Result<(), NodeError> {
        let room = self.core.room_by_name(name)?.id;
        let Some(ours) = self.resend.remove(&room) else {
            return Ok(());
        };
        let lacking = self.core.lacking(room, ours)?;
        tracing::info!(
            count = lacking.len(),
            "writing again our messages the members lack"
        );
        for item in lacking {
            let composed = match item {
                Resend::Text(text) => blocking(|| self.core.compose(name, &text)),
                Resend::File(file) => blocking(|| self.core.compose_file(name, file)),
            };
            self.send_composed(composed)?;
        }
        Ok(())
    }
}
