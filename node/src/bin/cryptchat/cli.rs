//! The command line as clap reads it: the subcommands and their options. Their doc
//! comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use cryptchat::faults::FaultConfig;
use libp2p::Multiaddr;

use crate::size::parse_size;

#[derive(Parser)]
#[command(
    name = "cryptchat",
    version,
    about = "Serverless, end-to-end encrypted group chat"
)]
pub(crate) struct Cli {
    /// Where the node keeps its journal and keys (one data dir per running node).
    #[arg(long, global = true, env = "CRYPTCHAT_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Args, Clone)]
pub(crate) struct Credentials {
    /// Your username (with the password, it derives your identity). `run` needs it (or
    /// --username-from-hostname); `id` without it asks the running node.
    #[arg(long, env = "CRYPTCHAT_USERNAME")]
    pub(crate) username: Option<String>,
    /// Use this machine's host name as the username (containers scaled from one spec).
    #[arg(long)]
    pub(crate) username_from_hostname: bool,
    /// Read the password from this file (else CRYPTCHAT_PASSWORD, else a prompt).
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,
    /// RSA key size: 2048, 3072 or 4096 (a different size is a different identity).
    #[arg(long, default_value_t = 2048)]
    pub(crate) key_bits: usize,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Run a node in the foreground.
    Run {
        #[command(flatten)]
        creds: Credentials,
        /// Address to listen on (repeatable). Default: TCP, QUIC and WebRTC-direct on all
        /// interfaces with OS-chosen ports. A TCP or QUIC port the OS chose is asked for
        /// again at the next start (if it is free), so that peers find the node there.
        #[arg(long)]
        listen: Vec<Multiaddr>,
        /// A peer to connect to at start (repeatable), e.g. /ip4/192.0.2.1/tcp/4001. Needed
        /// at the first start only: the node keeps the peers it was connected to, and dials
        /// them when it starts again.
        #[arg(long)]
        bootstrap: Vec<Multiaddr>,
        /// Discover peers on the local network with mDNS.
        #[arg(long)]
        mdns: bool,
        /// Join this room at start (repeatable).
        #[arg(long)]
        join: Vec<String>,
        /// Password file for the rooms given with --join.
        #[arg(long)]
        room_password_file: Option<PathBuf>,
        /// Port of the local API on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        api_port: u16,
        /// Seconds between history reconciliation rounds with each room's members.
        #[arg(long, default_value_t = 5.0)]
        sync_interval_s: f64,
        /// Seconds a file fetch waits, with no connected member able to serve what is
        /// missing, before it fails.
        #[arg(long, default_value_t = 60.0)]
        fetch_timeout_s: f64,
        /// Fetch files others share, up to this size each, without being asked (0: none;
        /// bytes, or with K, M or G: 512K, 4M, 1.5G, powers of 1,024). They are then at
        /// hand when opened, and stay available to the room while their author is offline;
        /// but anyone who may post in a room can make the node download that much per
        /// message.
        #[arg(long, default_value = "0", value_parser = parse_size)]
        auto_fetch: u64,
        /// Fetching unasked stops while the node's files (its own shares, and whatever it
        /// fetched) take up this much; it resumes when `forget` frees room, or at the next
        /// start. Files fetched by hand are not held back.
        #[arg(long, default_value = "1G", value_parser = parse_size)]
        auto_fetch_total: u64,
        /// Leave every conflict between your messages in a room and ones written with your
        /// identity elsewhere to `cryptchat repair`, even when the members agree on which
        /// go on: the node then never takes up, by itself, messages that someone who knows
        /// your password wrote.
        #[arg(long)]
        no_auto_repair: bool,
        /// Leave nothing in the DHT: messages a member has not confirmed are not put in a
        /// mailbox for it (sealed, read only by the room's members) when you go offline, and
        /// other authors' mailboxes are not read when the node comes back online.
        #[arg(long)]
        no_mailbox: bool,
        /// Address for the local API instead of 127.0.0.1 (containers: 0.0.0.0; the
        /// token still guards it).
        #[arg(long)]
        api_addr: Option<std::net::IpAddr>,
        /// Simulated faults on this node's incoming links (testing and simulation).
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Print your user id, contact code and peer id: those of the node running on the data
    /// dir, or, given a username, derived here (asks for the password).
    Id {
        #[command(flatten)]
        creds: Credentials,
    },
    /// Join a room by name (and password).
    Join {
        room: String,
        /// Read the room password from this file.
        #[arg(long)]
        room_password_file: Option<PathBuf>,
        /// Ask for the room password on the terminal.
        #[arg(long)]
        room_password: bool,
    },
    /// Leave a room (its history stays on disk).
    Leave { room: String },
    /// List joined rooms.
    Rooms,
    /// List a room's known members: you, those whose messages you hold, and those who said
    /// what they hold (names are self-asserted; contacts show by your name for them).
    Members { room: String },
    /// Send a message to a room (direct rooms are named @contact).
    Send {
        room: String,
        #[command(flatten)]
        text: Words,
    },
    /// Reply to a message: TO is the AUTHOR#N that `history` shows beside it (AUTHOR: a
    /// contact's name, or 8+ hex digits of a user id). The reply quotes its start.
    Reply {
        room: String,
        to: String,
        #[command(flatten)]
        text: Words,
    },
    /// React to a message (AUTHOR#N, as for reply) with an emoji or a short word; --undo
    /// takes your reaction back.
    React {
        room: String,
        to: String,
        emoji: String,
        #[arg(long)]
        undo: bool,
    },
    /// Stop seeing an author (a contact's name, the 8 hex digits `history` shows, or the id
    /// `members` shows): its messages, reactions and files no longer show or count, in any
    /// room; --undo sees it again.
    Ignore {
        room: String,
        author: String,
        #[arg(long)]
        undo: bool,
    },
    /// List the authors you ignore.
    Ignored,
    /// After your messages in a room forked (you wrote there from another machine, and
    /// this node wrote before it knew): take up the members' history of the room and write
    /// again, after it, what only this node held of yours.
    Repair { room: String },
    /// Invite contacts to a room: each gets an invitation in your direct room, and their
    /// node joins the room (a password room's invitation carries its key, not the password).
    Invite {
        room: String,
        #[arg(required = true)]
        contacts: Vec<String>,
    },
    /// Edit one of your messages: its number is the #N that `send` and `history` show.
    /// Members see the new text, marked edited.
    Edit {
        room: String,
        seq: u64,
        #[command(flatten)]
        text: Words,
    },
    /// Delete one of your messages (its #N): members see that it was deleted, and drop
    /// their copies of its file if it shared one.
    Delete { room: String, seq: u64 },
    /// Share a file with a room: members see it in the history and fetch it by id.
    Share { room: String, path: PathBuf },
    /// List the files shared in a room, latest last.
    Files {
        room: String,
        /// How many of the latest files to list.
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
    },
    /// Fetch a file shared in a room (by id, or its first 8+ hex digits) from the members
    /// who hold it, into the current directory or OUTPUT.
    Fetch {
        room: String,
        id: String,
        /// Where to write it: a new file's path, or an existing directory.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Drop this node's copy of a file shared in a room, to free disk space (the message
    /// stays; fetch it again from a member who holds it).
    Forget { room: String, id: String },
    /// Show a room's history: its last messages, or earlier ones with --skip.
    History {
        room: String,
        /// How many messages to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Pass over this many of the newest first (--limit 50 --skip 50: the 50 before
        /// the last 50).
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Show a room's messages whose text or file name contains TEXT (whatever its case),
    /// the newest last.
    Search {
        room: String,
        text: String,
        /// How many of the latest matches to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Pass over this many of the newest matches first.
        #[arg(long, default_value_t = 0)]
        skip: usize,
    },
    /// Manage contacts.
    #[command(subcommand)]
    Contact(ContactCmd),
    /// Create a group room with contacts as members, and invite them: a member's node joins
    /// the group when the invitation arrives in its direct room with you.
    Group { name: String, members: Vec<String> },
    /// Send a direct message to a contact.
    Dm {
        contact: String,
        #[command(flatten)]
        text: Words,
    },
    /// List connected peers.
    Peers,
    /// Show the node's status.
    Status,
    /// Stop the node running on the data dir, as Ctrl-C would: what members have not
    /// confirmed receiving goes in mailboxes first (a few seconds at most)
    Stop,
    /// Connect to a peer by address.
    Dial { addr: String },
    /// Print messages as they arrive (only those of ROOMs, if given).
    Watch { rooms: Vec<String> },
    /// Chat in a room from the terminal: its last messages, then new ones as they arrive,
    /// while every line typed is sent (Ctrl-D leaves).
    Chat {
        room: String,
        /// How many of the room's last messages to show first.
        #[arg(long, default_value_t = 20)]
        last: usize,
    },
    /// Print the address of the node's web page (with its access token: keep it private).
    Web,
    /// Show or change the simulated faults on the running node.
    Faults {
        /// Change them (else only show them).
        #[arg(long)]
        set: bool,
        #[command(flatten)]
        faults: FaultArgs,
    },
    /// Cut off peers (by peer id), or let them back with --unblock: simulated partitions.
    Block {
        peers: Vec<String>,
        #[arg(long)]
        unblock: bool,
    },
}

#[derive(Args, Clone, Default)]
pub(crate) struct FaultArgs {
    /// Added latency in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Added random jitter in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability (0..1) of losing an incoming gossip message.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Receive bandwidth cap per connection, kbit/s (0: none).
    #[arg(long, default_value_t = 0)]
    bandwidth_kbps: u64,
}

impl FaultArgs {
    pub(crate) fn config(&self) -> FaultConfig {
        FaultConfig {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            loss: self.loss,
            bandwidth_kbps: self.bandwidth_kbps,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum ContactCmd {
    /// Add a contact from the code they gave you (`cryptchat id` prints yours).
    Add { name: String, code: String },
    /// List contacts.
    List,
    /// Remove a contact, and leave your direct room with it (its history stays on disk:
    /// adding the contact again shows it).
    Remove { name: String },
}

/// A message's text as the command line gives it (read by `commands::message_text`).
#[derive(Args)]
pub(crate) struct Words {
    /// The message: its words, quoted or not; `-` alone reads it from standard input (for a
    /// message of several lines).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) text: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Cmd};

    #[test]
    fn a_message_is_its_words_quoted_or_not_whatever_they_start_with() {
        let text = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.cmd) {
            Ok(Cmd::Send { text, .. } | Cmd::Dm { text, .. }) => text.text,
            Ok(Cmd::Reply { text, .. } | Cmd::Edit { text, .. }) => text.text,
            Ok(_) => panic!("{args:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        };
        let said = ["see", "you", "at", "-5", "--json"];
        assert_eq!(
            text(&["cryptchat", "send", "lobby", "see you at 5"]),
            ["see you at 5"]
        );
        assert_eq!(
            text(&[&["cryptchat", "send", "lobby"][..], &said].concat()),
            said
        );
        assert_eq!(
            text(&["cryptchat", "dm", "bob", "hi", "there"]),
            ["hi", "there"]
        );
        assert_eq!(text(&["cryptchat", "reply", "lobby", "bob#2", "-"]), ["-"]);
        assert_eq!(
            text(&["cryptchat", "edit", "lobby", "3", "fixed", "it"]),
            ["fixed", "it"]
        );
        assert!(
            Cli::try_parse_from(["cryptchat", "send", "lobby"]).is_err(),
            "no text"
        );
    }
}
