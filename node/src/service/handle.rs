//! The handle through which everything else talks to a running node: each call is a
//! [`Command`] sent to the service's task, which owns the swarm, and answered on a oneshot.

use std::path::PathBuf;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::files::{self, Fetched, Target};
use super::{Event, NodeError, PeerView, Sent, Status};
use crate::core::{ContactView, CoreError, IgnoredView, MemberView, MessageView, Query, RoomView};
use crate::envelope::Kind;
use crate::identity::Identity;
use crate::journal::Journal;
use crate::room::Room;

pub(super) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// How long [`NodeHandle::dial`] waits for a connection (an unreachable host may not answer
/// a TCP dial for minutes).
pub const DIAL_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

pub(super) enum Command {
    Status(Reply<Status>),
    Peers(Reply<Vec<PeerView>>),
    Join(Room, Reply<RoomView>),
    Leave(String, Reply<RoomView>),
    /// The user read the room.
    MarkRead(String, Reply<RoomView>),
    Rooms(Reply<Vec<RoomView>>),
    Send(String, String, Reply<Sent>),
    /// Reply in a room with a text to the message (author, seq).
    Reply(String, String, (String, u64), Reply<Sent>),
    /// React in a room to the message (author, seq) with an emoji, or take it back.
    React(String, (String, u64), String, bool, Reply<Sent>),
    /// Edit (`Some` text) or delete (`None`) our message seq in a room.
    Revise(String, u64, Option<String>, Reply<Sent>),
    History(String, Query, Reply<Vec<MessageView>>),
    Members(String, Reply<Vec<MemberView>>),
    AddContact(String, String, Reply<ContactView>),
    Contacts(Reply<Vec<ContactView>>),
    RemoveContact(String, Reply<ContactView>),
    /// Room, author, undo.
    Ignore(String, String, bool, Reply<IgnoredView>),
    /// Room, contacts.
    Invite(String, Vec<String>, Reply<Vec<Sent>>),
    Ignored(Reply<Vec<IgnoredView>>),
    /// Take up the members' branch of our forked chain in a room (see [`super::own`]).
    Repair(String, Reply<super::Repaired>),
    /// After a repair, write again our messages the room's members lack (queued by the
    /// node itself, behind the room's history like any write).
    Resend(String, Reply<()>),
    CreateGroup(String, Vec<String>, Reply<RoomView>),
    Dial(Multiaddr, Reply<PeerId>),
    Block(Vec<PeerId>, bool, Reply<()>),
    SyncNow(Reply<()>),
    PublishRaw(String, Vec<u8>, Reply<()>),
    AskMembers(PeerId, String, Reply<Vec<(PeerId, Vec<Multiaddr>)>>),
    ShareFile(String, crate::files::FileRef, Reply<Sent>),
    Fetch(String, String, files::Waiter),
    /// A file found before (see [`FileReader::known`]): no lookup in the history.
    FetchKnown(files::KnownFile, files::Waiter),
    Forget(String, String, Reply<files::Forgotten>),
    Shutdown(Reply<()>),
}

impl Command {
    /// Answers a write that will not run (see [`super::own`]) with `e`.
    pub(super) fn fail(self, e: NodeError) {
        match self {
            Command::Send(.., r)
            | Command::Reply(.., r)
            | Command::React(.., r)
            | Command::Revise(.., r)
            | Command::ShareFile(.., r) => {
                let _ = r.send(Err(e));
            }
            Command::Resend(room, _) => {
                tracing::error!(error = %e, room, "our messages past a fork were not written again");
            }
            Command::Invite(.., r) => {
                let _ = r.send(Err(e));
            }
            Command::CreateGroup(.., r) => {
                let _ = r.send(Err(e));
            }
            // Only writes are held: anything else is dropped, and its caller told the node
            // stopped answering.
            _ => tracing::error!("a command that writes nothing was held"),
        }
    }
}

/// Cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) events: broadcast::Sender<Event>,
    pub(super) identity: Arc<Identity>,
    /// This data dir's peer id (not the identity's: see [`crate::net::load_or_create_peer_key`]).
    pub(super) peer_id: libp2p::PeerId,
    pub(super) faults: crate::faults::Faults,
    /// The event loop's journal: a file's chunks are sealed and stored off the loop. Weak,
    /// so that a stopped node closes its journal even while handles remain.
    pub(super) journal: std::sync::Weak<Journal>,
    /// Where files uploaded through the API wait while they are sealed.
    pub(super) uploads: PathBuf,
    pub(super) failure: Arc<std::sync::OnceLock<String>>,
}

impl NodeHandle {
    pub(super) async fn ask<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn peer_id(&self) -> libp2p::PeerId {
        self.peer_id
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(Command::Status).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerView>, NodeError> {
        self.ask(Command::Peers).await
    }

    /// Joins a named room. The password's argon2id runs off the swarm task.
    pub async fn join(&self, name: &str, password: Option<String>) -> Result<RoomView, NodeError> {
        let name = name.to_string();
        let room = tokio::task::spawn_blocking(move || Room::named(&name, password.as_deref()))
            .await
            .map_err(|_| NodeError::Stopped)?
            .map_err(CoreError::from)?;
        self.ask(|r| Command::Join(room, r)).await
    }

    /// Joins a room built by the caller (direct, group, or any [`Room`]).
    pub async fn join_room(&self, room: Room) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::Join(room, r)).await
    }

    pub async fn leave(&self, name: &str) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::Leave(name.to_string(), r)).await
    }

    /// The user has read `room` (its view then counts nothing unread).
    pub async fn mark_read(&self, room: &str) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::MarkRead(room.to_string(), r)).await
    }

    pub async fn rooms(&self) -> Result<Vec<RoomView>, NodeError> {
        self.ask(Command::Rooms).await
    }

    pub async fn send(&self, room: &str, text: &str) -> Result<Sent, NodeError> {
        self.ask(|r| Command::Send(room.to_string(), text.to_string(), r))
            .await
    }

    /// Replies in `room` to the message `seq` of `author` (a contact's name, or 8+ hex
    /// digits of a user id): the reply quotes its start.
    pub async fn reply(
        &self,
        room: &str,
        text: &str,
        author: &str,
        seq: u64,
    ) -> Result<Sent, NodeError> {
        let to = (author.to_string(), seq);
        self.ask(|r| Command::Reply(room.to_string(), text.to_string(), to, r))
            .await
    }

    /// Reacts in `room` to the message `seq` of `author` (as for [`Self::reply`]) with
    /// `emoji`, or takes our reaction back (`undo`).
    pub async fn react(
        &self,
        room: &str,
        author: &str,
        seq: u64,
        emoji: &str,
        undo: bool,
    ) -> Result<Sent, NodeError> {
        let to = (author.to_string(), seq);
        let (room, emoji) = (room.to_string(), emoji.to_string());
        self.ask(|r| Command::React(room, to, emoji, undo, r)).await
    }

    /// Edits our message `seq` in `room`: members see `text` in its place, marked edited.
    pub async fn edit(&self, room: &str, seq: u64, text: &str) -> Result<Sent, NodeError> {
        self.ask(|r| Command::Revise(room.to_string(), seq, Some(text.to_string()), r))
            .await
    }

    /// Deletes our message `seq` in `room`: members see that it was deleted, and drop
    /// their copies of its file if it shared one.
    pub async fn delete(&self, room: &str, seq: u64) -> Result<Sent, NodeError> {
        self.ask(|r| Command::Revise(room.to_string(), seq, None, r))
            .await
    }

    /// A room's last `limit` messages, in display order.
    pub async fn history(&self, room: &str, limit: usize) -> Result<Vec<MessageView>, NodeError> {
        self.query(room, Query::last(limit)).await
    }

    /// A room's last `limit` file messages (only those are loaded and opened).
    pub async fn files(&self, room: &str, limit: usize) -> Result<Vec<MessageView>, NodeError> {
        let only = Some(Kind::File);
        self.query(
            room,
            Query {
                only,
                ..Query::last(limit)
            },
        )
        .await
    }

    /// What `query` asks for of a room's history, in display order: a page further back,
    /// one kind of message, a search.
    pub async fn query(&self, room: &str, query: Query) -> Result<Vec<MessageView>, NodeError> {
        self.ask(|r| Command::History(room.to_string(), query, r))
            .await
    }

    /// A room's known members: us, everyone whose messages we hold, and those who said
    /// what they hold (receipts); a direct or group room's are its member list.
    pub async fn members(&self, room: &str) -> Result<Vec<MemberView>, NodeError> {
        self.ask(|r| Command::Members(room.to_string(), r)).await
    }

    pub async fn add_contact(&self, name: &str, code: &str) -> Result<ContactView, NodeError> {
        self.ask(|r| Command::AddContact(name.to_string(), code.to_string(), r))
            .await
    }

    pub async fn contacts(&self) -> Result<Vec<ContactView>, NodeError> {
        self.ask(Command::Contacts).await
    }

    /// Removes a contact and leaves its direct room (the history stays on disk: adding the
    /// contact again shows it).
    pub async fn remove_contact(&self, name: &str) -> Result<ContactView, NodeError> {
        self.ask(|r| Command::RemoveContact(name.to_string(), r))
            .await
    }

    /// Ignores an author of the room (`undo`: sees it again): see [`crate::core::Core::ignore`].
    pub async fn ignore(
        &self,
        room: &str,
        author: &str,
        undo: bool,
    ) -> Result<IgnoredView, NodeError> {
        self.ask(|r| Command::Ignore(room.to_string(), author.to_string(), undo, r))
            .await
    }

    /// Invites contacts to a room: see [`crate::core::Core::invite`].
    pub async fn invite(&self, room: &str, contacts: Vec<String>) -> Result<Vec<Sent>, NodeError> {
        self.ask(|r| Command::Invite(room.to_string(), contacts, r))
            .await
    }

    /// Our own chain in the room forked: drop what this node holds of the room, pull it
    /// again, and write again what only this node held of ours (see
    /// [`crate::core::Core::repair`]).
    pub async fn repair(&self, room: &str) -> Result<super::Repaired, NodeError> {
        self.ask(|r| Command::Repair(room.to_string(), r)).await
    }

    pub async fn ignored(&self) -> Result<Vec<IgnoredView>, NodeError> {
        self.ask(Command::Ignored).await
    }

    pub async fn create_group(
        &self,
        name: &str,
        members: Vec<String>,
    ) -> Result<RoomView, NodeError> {
        self.ask(|r| Command::CreateGroup(name.to_string(), members, r))
            .await
    }

    /// Sends a direct message to a contact.
    pub async fn dm(&self, contact: &str, text: &str) -> Result<Sent, NodeError> {
        let name = contact.trim_start_matches('@');
        match self.send(&format!("@{name}"), text).await {
            // No direct room: no such contact (never added, or removed).
            Err(NodeError::Core(CoreError::UnknownRoom(_))) => {
                Err(CoreError::UnknownContact(name.to_string()).into())
            }
            sent => sent,
        }
    }

    /// Connects to the peer at `addr`: its peer id once the connection is up, or why it
    /// failed. After [`DIAL_WAIT`] it gives up waiting (the dial itself goes on).
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let shown = addr.to_string();
        tokio::time::timeout(DIAL_WAIT, self.ask(|r| Command::Dial(addr, r)))
            .await
            .unwrap_or_else(|_| {
                Err(NodeError::Dial {
                    addr: shown,
                    why: format!("no answer within {} s", DIAL_WAIT.as_secs()),
                })
            })
    }

    /// Cuts off (or, with `blocked = false`, lets back) these peers: the fault injection
    /// behind simulated partitions.
    pub async fn block(&self, peers: Vec<PeerId>, blocked: bool) -> Result<(), NodeError> {
        self.ask(|r| Command::Block(peers, blocked, r)).await
    }

    /// The fault model applied to this node's links.
    pub fn faults(&self) -> &crate::faults::Faults {
        &self.faults
    }

    /// Starts a reconciliation round with every connected member of every room now.
    pub async fn sync_now(&self) -> Result<(), NodeError> {
        self.ask(Command::SyncNow).await
    }

    /// Publishes raw bytes on a room's topic, bypassing the envelope code: for tests that
    /// check how peers treat forged or malformed messages.
    pub async fn publish_raw(&self, room: &str, bytes: Vec<u8>) -> Result<(), NodeError> {
        self.ask(|r| Command::PublishRaw(room.to_string(), bytes, r))
            .await
    }

    /// Asks a connected peer which members of a room it is connected to (member exchange,
    /// as the node does by itself when a room is short of members), and returns the answer
    /// as parsed: for tests of what a member hands on.
    pub async fn ask_members(
        &self,
        peer: PeerId,
        room: &str,
    ) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, NodeError> {
        self.ask(|r| Command::AskMembers(peer, room.to_string(), r))
            .await
    }

    /// Refuses a room this node has not joined, found by its name as
    /// [`crate::core::Core::room_by_name`] finds it: before a large file is read or sealed
    /// for nothing.
    pub async fn check_room(&self, room: &str) -> Result<(), NodeError> {
        let name = crate::room::local_name(room);
        if (self.rooms().await?)
            .iter()
            .any(|r| r.name == name || r.name == room.trim())
        {
            return Ok(());
        }
        Err(CoreError::UnknownRoom(room.to_string()).into())
    }

    /// Shares the file at `path` in `room`: seals and stores its chunks (on a blocking
    /// thread), then sends the message that tells members how to fetch it.
    pub async fn share_file(&self, room: &str, path: PathBuf) -> Result<Sent, NodeError> {
        self.check_room(room).await?;
        let journal = self.journal.upgrade().ok_or(NodeError::Stopped)?;
        let file = tokio::task::spawn_blocking(move || files::seal_and_store(&journal, &path))
            .await
            .map_err(|_| NodeError::Stopped)??;
        let room = room.to_string();
        self.ask(|r| Command::ShareFile(room, file, r)).await
    }

    /// Fetches a file shared in `room` (by id, or a prefix of at least 8 hex digits) from
    /// the room's connected members, and writes it to `target`.
    pub async fn fetch_file(
        &self,
        room: &str,
        id: &str,
        target: Target,
    ) -> Result<Fetched, NodeError> {
        let (room, id) = (room.to_string(), id.to_string());
        self.ask(|r| Command::Fetch(room, id, files::Waiter::Write(target, r)))
            .await
    }

    pub async fn shutdown(&self) -> Result<(), NodeError> {
        self.ask(Command::Shutdown).await
    }

    /// Resolves once the node has stopped (through [`NodeHandle::shutdown`] on any handle,
    /// such as the API's `/stop`, or by itself: see [`NodeHandle::failure`]).
    pub async fn stopped(&self) {
        self.tx.closed().await;
    }

    /// Why the node stopped by itself, if it did: its journal could no longer be written.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }
}
