//! The `cryptchat` binary: `run` starts a node; the other subcommands talk to it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cryptchat::api::{
    BlockRequest, ContactRequest, DeleteRequest, DialRequest, Dialled, DmRequest, EditRequest,
    FetchRequest, ForgetRequest, GroupRequest, HistoryRequest, IdView, IgnoreRequest,
    InviteRequest, JoinRequest, MessageRequest, NameRequest, ReactRequest, RoomRequest,
    SendRequest, ShareRequest,
};
use cryptchat::client::Client;
use cryptchat::config::{self, ApiInfo};
use cryptchat::core::{ContactView, IgnoredView, MemberView, MessageView, RoomView};
use cryptchat::envelope::Kind;
use cryptchat::faults::FaultConfig;
use cryptchat::identity::{Identity, KeySize};
use cryptchat::service::{self, Fetched, Forgotten, NodeConfig, PeerView, Repaired, Sent, Status};
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(
    name = "cryptchat",
    version,
    about = "Serverless, end-to-end encrypted group chat"
)]
struct Cli {
    /// Where the node keeps its journal and keys (one data dir per running node).
    #[arg(long, global = true, env = "CRYPTCHAT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Credentials {
    /// Your username (with the password, it derives your identity). `run` needs it (or
    /// --username-from-hostname); `id` without it asks the running node.
    #[arg(long, env = "CRYPTCHAT_USERNAME")]
    username: Option<String>,
    /// Use this machine's host name as the username (containers scaled from one spec).
    #[arg(long)]
    username_from_hostname: bool,
    /// Read the password from this file (else CRYPTCHAT_PASSWORD, else a prompt).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// RSA key size: 2048, 3072 or 4096 (a different size is a different identity).
    #[arg(long, default_value_t = 2048)]
    key_bits: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node in the foreground.
    Run {
        #[command(flatten)]
        creds: Credentials,
        /// Address to listen on (repeatable). Default: TCP, QUIC and WebRTC-direct on all
        /// interfaces with OS-chosen ports.
        #[arg(long)]
        listen: Vec<Multiaddr>,
        /// A peer to connect to at start (repeatable), e.g. /ip4/192.0.2.1/tcp/4001.
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
    Send { room: String, text: String },
    /// Reply to a message: TO is the AUTHOR#N that `history` shows beside it (AUTHOR: a
    /// contact's name, or 8+ hex digits of a user id). The reply quotes its start.
    Reply {
        room: String,
        to: String,
        text: String,
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
    /// Stop seeing an author (a contact's name, or the 8 hex digits `history` shows): its
    /// messages, reactions and files no longer show or count, in any room; --undo sees it
    /// again.
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
        text: String,
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
    Dm { contact: String, text: String },
    /// List connected peers.
    Peers,
    /// Show the node's status.
    Status,
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
struct FaultArgs {
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
    fn config(&self) -> FaultConfig {
        FaultConfig {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            loss: self.loss,
            bandwidth_kbps: self.bandwidth_kbps,
        }
    }
}

#[derive(Subcommand)]
enum ContactCmd {
    /// Add a contact from the code they gave you (`cryptchat id` prints yours).
    Add { name: String, code: String },
    /// List contacts.
    List,
    /// Remove a contact, and leave your direct room with it (its history stays on disk:
    /// adding the contact again shows it).
    Remove { name: String },
}

/// A client command whose output is cut short (`cryptchat history lobby | head`) ends
/// quietly, as other command-line tools do, instead of panicking on the failed write: the
/// default action of SIGPIPE, which Rust programs ignore. Not for `run`, whose sockets
/// report a closed peer as an error.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the process's SIGPIPE disposition to its default, before any other
    // thread is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    cryptchat::install_crypto_provider();
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Run { .. }) {
        quiet_on_closed_pipe();
    }
    let data_dir = cli
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir);
    match cli.cmd {
        Cmd::Run {
            creds,
            listen,
            bootstrap,
            mdns,
            join,
            room_password_file,
            api_port,
            api_addr,
            faults,
            sync_interval_s,
            fetch_timeout_s,
            auto_fetch,
            auto_fetch_total,
        } => {
            init_tracing();
            let room_password = room_password_file
                .as_deref()
                .map(read_secret_file)
                .transpose()?;
            refuse_if_running(&data_dir)?;
            let identity = derive_identity(&creds)?;
            let mut cfg = NodeConfig::new(data_dir.clone());
            if !listen.is_empty() {
                cfg.listen = listen;
            }
            cfg.bootstrap = bootstrap;
            cfg.swarm.mdns = mdns;
            if !(0.1..=3600.0).contains(&sync_interval_s) {
                bail!("--sync-interval-s must be between 0.1 and 3600");
            }
            cfg.sync_interval = Duration::from_secs_f64(sync_interval_s);
            if !(1.0..=86_400.0).contains(&fetch_timeout_s) {
                bail!("--fetch-timeout-s must be between 1 and 86400");
            }
            cfg.fetch_timeout = Duration::from_secs_f64(fetch_timeout_s);
            cfg.auto_fetch = auto_fetch;
            cfg.auto_fetch_total = auto_fetch_total;
            let faults = faults.config();
            faults.validate().map_err(anyhow::Error::msg)?;
            cfg.swarm.faults.set(faults);
            tokio::runtime::Runtime::new()?.block_on(run(
                identity,
                cfg,
                join,
                room_password,
                (api_addr, api_port),
                cli.json,
            ))
        }
        Cmd::Id { creds } => {
            let view = if creds.username.is_none() && !creds.username_from_hostname {
                // The identity is the running node's: no password to type again.
                Client::for_data_dir(&data_dir)
                    .and_then(|c| c.get::<IdView>("/id"))
                    .map_err(|e| {
                        anyhow::anyhow!("{e}; or give --username to derive your identity here")
                    })?
            } else {
                IdView::of(&*derive_identity(&creds)?)
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("username:     {}", view.username);
                println!("user id:      {}", view.user_id);
                println!("peer id:      {}", view.peer_id);
                println!("contact code: {}", view.contact_code);
            }
            Ok(())
        }
        cmd => client_command(cmd, &data_dir, cli.json),
    }
}

fn init_tracing() {
    // libp2p-kad's warnings are about states a node meets in normal use (a first node,
    // alone, has no one to bootstrap from), which cryptchat reports in its own words.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_kad=error,webrtc=warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn read_secret_file(path: &Path) -> Result<String> {
    let s = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read password file {}", path.display()))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        bail!("password file {} is empty", path.display());
    }
    Ok(s)
}

impl Credentials {
    fn username(&self) -> Result<String> {
        if self.username_from_hostname {
            let name = std::fs::read_to_string("/etc/hostname")
                .context("--username-from-hostname: cannot read /etc/hostname")?;
            return Ok(name.trim().to_string());
        }
        self.username
            .clone()
            .context("no username: pass --username or set CRYPTCHAT_USERNAME")
    }
}

fn read_password(creds: &Credentials) -> Result<String> {
    if let Some(f) = &creds.password_file {
        return read_secret_file(f);
    }
    if let Ok(p) = std::env::var("CRYPTCHAT_PASSWORD")
        && !p.is_empty()
    {
        return Ok(p);
    }
    rpassword::prompt_password(format!("password for {}: ", creds.username()?))
        .context("no password: set CRYPTCHAT_PASSWORD, pass --password-file, or run in a terminal")
}

/// A node already running on the data dir is said before the password is asked and
/// derived for nothing. (Its journal's lock says so too, later, if its API does not answer.)
fn refuse_if_running(data_dir: &std::path::Path) -> Result<()> {
    match Client::for_data_dir(data_dir).and_then(|c| c.get::<IdView>("/id")) {
        Ok(id) => bail!(
            "a node for {} ({}) is already running on {}: stop it first, or use another \
             --data-dir",
            id.username,
            &id.user_id[..16],
            data_dir.display()
        ),
        Err(_) => Ok(()),
    }
}

fn derive_identity(creds: &Credentials) -> Result<Arc<Identity>> {
    let username = creds.username()?;
    let password = zeroize::Zeroizing::new(read_password(creds)?);
    let size = KeySize::from_bits(creds.key_bits)?;
    eprintln!("deriving identity for {username} (argon2id, 64 MiB)...");
    Ok(Arc::new(Identity::derive(&username, &password, size)?))
}

async fn run(
    identity: Arc<Identity>,
    cfg: NodeConfig,
    join: Vec<String>,
    room_password: Option<String>,
    (api_addr, api_port): (Option<std::net::IpAddr>, u16),
    json: bool,
) -> Result<()> {
    let data_dir = cfg.data_dir.clone();
    let alone = cfg.bootstrap.is_empty() && !cfg.swarm.mdns;
    let node = service::start(identity.clone(), cfg).await?;
    let (listener, addr) = cryptchat::api::bind(api_addr, api_port)
        .await
        .context("cannot bind the local API")?;
    let token = hex::encode(cryptchat::crypto::random_key()?.as_slice());
    config::write_private(&data_dir.join(config::TOKEN_FILE), token.as_bytes())?;
    let info = ApiInfo {
        addr: addr.to_string(),
        pid: std::process::id(),
    };
    config::write_private(
        &data_dir.join(config::API_FILE),
        serde_json::to_string(&info)?.as_bytes(),
    )?;
    let server = tokio::spawn(cryptchat::api::serve(listener, node.clone(), token));
    for room in join {
        let view = node.join(&room, room_password.clone()).await?;
        tracing::info!(room = %view.name, "joined");
    }
    // Give the transports a moment to report their addresses, then say where we are.
    let mut status = node.status().await?;
    for _ in 0..20 {
        if !status.listen_addrs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = node.status().await?;
    }
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        // One write, so that whoever reads the output sees all of it or none.
        let mut out = format!(
            "cryptchat node for {} ({}) is running\nlocal API: http://{addr}/  (token in {})\n",
            identity.username(),
            identity.id().short(),
            data_dir.join(config::TOKEN_FILE).display()
        );
        for a in &status.listen_addrs {
            out += &format!("listening on {a}\n");
        }
        if alone {
            out += "no --bootstrap address and no --mdns: this node waits for others to dial it \
                    (give them an address above)\n";
        }
        print!("{out}");
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(data_dir.join(config::API_FILE));
    let _ = node.shutdown().await;
    server.abort();
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(())
}

/// A message's time in the reader's time zone: the time of day for today's, with the date
/// before it for older ones (a history reaches back days).
fn clock(ms: u64) -> String {
    clock_at(ms, chrono::Local::now())
}

fn clock_at(ms: u64, now: chrono::DateTime<chrono::Local>) -> String {
    use chrono::TimeZone;
    let Some(t) = i64::try_from(ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
    else {
        return "??:??:??".to_string();
    };
    let format = if t.date_naive() == now.date_naive() {
        "%H:%M:%S"
    } else {
        "%Y-%m-%d %H:%M:%S"
    };
    t.format(format).to_string()
}

fn print_message(m: &MessageView) {
    // Each message shows where it is in its author's chain, AUTHOR#N: what `reply` takes
    // (and N, for our own, what `edit` and `delete` take).
    let at = format!("{}#{}", &m.author_id[..8], m.seq);
    let who = match &m.contact {
        Some(c) => format!("{c} [{at}]"),
        None => format!("{} [{at}]", m.author),
    };
    let delivery = if m.mine {
        format!("  [delivered to {} of {}]", m.delivered_to, m.known_members)
    } else {
        String::new()
    };
    let body = match (&m.file, m.revises) {
        _ if m.react.is_some() => {
            let r = m.react.as_deref().expect("checked");
            let id = r.author_id.get(..8).unwrap_or(&r.author_id);
            let what = if r.undo { "took back" } else { "reacted" };
            format!("({what} {} on {id}#{})", r.emoji, r.seq)
        }
        (_, Some(target)) if m.deleted => format!("(deleted message #{target})"),
        (_, Some(target)) => format!(
            "(edited message #{target}) {}",
            m.text.as_deref().unwrap_or_default()
        ),
        _ if m.deleted => "(message deleted)".to_string(),
        (Some(f), _) => format!(
            "[file] {} ({}), id {} (cryptchat fetch {} {})",
            f.name,
            human_size(f.size),
            &f.id[..16],
            m.room,
            &f.id[..16]
        ),
        (None, _) => {
            let text = m.text.clone().unwrap_or_default();
            match m.edited_ms {
                Some(_) => format!("{text} (edited)"),
                None => text,
            }
        }
    };
    let reactions: Vec<String> = m
        .reactions
        .iter()
        .map(|r| format!("{} {}", r.emoji, r.by.len()))
        .collect();
    let delivery = match reactions.is_empty() {
        true => delivery,
        false => format!("  [{}]{delivery}", reactions.join(", ")),
    };
    let reply = match &m.reply_to {
        Some(r) => {
            let id = r.author_id.get(..8).unwrap_or(&r.author_id);
            format!("(reply to {id}#{}: \"{}\") ", r.seq, r.quote)
        }
        None => String::new(),
    };
    println!(
        "{} {} {}: {reply}{body}{delivery}",
        clock(m.timestamp_ms),
        m.room,
        who,
    );
}

/// `cryptchat chat`: the room's last `last` messages, then its new ones as they arrive (on
/// a thread of their own), while each line read from stdin is sent. Ends at the end of
/// stdin, or when the node stops.
fn chat(c: &Client, data_dir: &Path, room: &str, last: usize, json: bool) -> Result<()> {
    use std::io::BufRead;
    let show = move |m: &MessageView| {
        if json {
            println!("{}", serde_json::to_string(m).unwrap_or_default());
        } else {
            print_message(m);
        }
    };
    // Subscribed before the history is read: nothing falls between the two. What chat shows
    // is read (see `history`).
    let events = c.subscribe()?;
    let read = RoomRequest {
        room: room.to_string(),
    };
    let _: RoomView = c.post("/read", &read)?;
    let req = HistoryRequest::last(room.to_string(), last);
    let shown: Vec<MessageView> = c.post("/history", &req)?;
    shown.iter().for_each(show);
    let seen: std::collections::HashSet<String> = shown.into_iter().map(|m| m.hash).collect();
    if std::io::stdin().is_terminal() {
        eprintln!(
            "-- {room}: type a message and press Enter to send it; /help lists commands; \
             Ctrl-D leaves --"
        );
    }
    let here = room.to_string();
    let reader = Client::for_data_dir(data_dir)?;
    std::thread::spawn(move || {
        for data in events {
            let Ok(data) = data else { break };
            if let Ok(cryptchat::service::Event::Message(m)) = serde_json::from_str(&data)
                && m.room == here
                && !seen.contains(&m.hash)
            {
                show(&m);
                let _ = reader.post::<_, RoomView>("/read", &read);
            }
        }
        eprintln!("the node stopped");
        std::process::exit(1);
    });
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        // What is sent comes back through the event stream, as the room shows it.
        let _note = wait_note(data_dir, room, json);
        let sent = match ChatLine::parse(&line) {
            Ok(ChatLine::Skip) => continue,
            Ok(ChatLine::Help) => {
                eprintln!("{CHAT_HELP}");
                continue;
            }
            Ok(ChatLine::Send(text)) => c.post::<_, Sent>("/send", &SendRequest::new(room, text)),
            Ok(ChatLine::Reply(to, text)) => {
                let req = SendRequest {
                    reply_to: Some(to),
                    ..SendRequest::new(room, text)
                };
                c.post::<_, Sent>("/send", &req)
            }
            Ok(ChatLine::React(to, emoji)) => {
                c.post::<_, Sent>("/react", &ReactRequest::new(room, to, emoji, false))
            }
            Ok(ChatLine::Edit(seq, text)) => {
                let room = room.to_string();
                c.post::<_, Sent>("/edit", &EditRequest { room, seq, text })
            }
            Ok(ChatLine::Delete(seq)) => {
                let room = room.to_string();
                c.post::<_, Sent>("/delete", &DeleteRequest { room, seq })
            }
            Ok(ChatLine::Invite(contacts)) => {
                let req = InviteRequest {
                    room: room.to_string(),
                    contacts: contacts.clone(),
                };
                match c.post::<_, Vec<Sent>>("/invite", &req) {
                    Ok(_) => eprintln!("invited {}", contacts.join(", ")),
                    Err(e) => eprintln!("not invited: {e}"),
                }
                continue;
            }
            Ok(ChatLine::Ignore(author)) => {
                let room = room.to_string();
                let req = IgnoreRequest {
                    room,
                    author,
                    undo: false,
                };
                match c.post::<_, IgnoredView>("/ignore", &req) {
                    Ok(v) => eprintln!("ignoring {}", ignored_label(&v)),
                    Err(e) => eprintln!("not ignored: {e}"),
                }
                continue;
            }
            Err(why) => {
                eprintln!("{why}");
                continue;
            }
        };
        if let Err(e) = sent {
            eprintln!("not sent: {e}");
        }
    }
    Ok(())
}

const CHAT_HELP: &str = "\
/reply AUTHOR#N TEXT  reply to a message (AUTHOR#N as shown beside it)
/react AUTHOR#N EMOJI react to a message
/edit N TEXT          change your message #N
/delete N             delete your message #N
/invite NAME...       invite contacts to this room (their node joins it)
/ignore AUTHOR        stop seeing an author (cryptchat ignore --undo sees it again)
/help                 this list
//TEXT                send a message that starts with /";

/// What a line typed in `cryptchat chat` asks for.
#[derive(Debug, PartialEq)]
enum ChatLine {
    Send(String),
    Reply(MessageRequest, String),
    React(MessageRequest, String),
    Edit(u64, String),
    Delete(u64),
    /// Contacts to invite to the room.
    Invite(Vec<String>),
    /// An author to ignore.
    Ignore(String),
    Help,
    /// A blank line: nothing to do.
    Skip,
}

impl ChatLine {
    /// A line that starts with `/` is a command (`//` sends the rest as it is); any other
    /// line is a message.
    fn parse(line: &str) -> Result<ChatLine, String> {
        if line.trim().is_empty() {
            return Ok(ChatLine::Skip);
        }
        if let Some(text) = line.strip_prefix("//") {
            return Ok(ChatLine::Send(format!("/{text}")));
        }
        let Some(command) = line.strip_prefix('/') else {
            return Ok(ChatLine::Send(line.to_string()));
        };
        let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
        let (arg, text) = rest
            .trim_start()
            .split_once(' ')
            .unwrap_or((rest.trim(), ""));
        let text = text.trim().to_string();
        let seq = || {
            arg.trim_start_matches('#')
                .parse::<u64>()
                .map_err(|_| format!("/{name} takes your message's number N (as in #N)"))
        };
        let needs_text = |what: ChatLine| match text.is_empty() {
            true => Err(format!("/{name}: what should it say? (/help)")),
            false => Ok(what),
        };
        match name {
            "reply" => {
                let to = parse_message_ref(arg).map_err(|e| format!("/reply: {e}"))?;
                needs_text(ChatLine::Reply(to, text.clone()))
            }
            "react" => {
                let to = parse_message_ref(arg).map_err(|e| format!("/react: {e}"))?;
                needs_text(ChatLine::React(to, text.clone()))
            }
            "edit" => needs_text(ChatLine::Edit(seq()?, text.clone())),
            "delete" if text.is_empty() => Ok(ChatLine::Delete(seq()?)),
            "delete" => Err("/delete takes only the message's number".to_string()),
            "invite" => {
                let contacts: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
                match contacts.is_empty() {
                    true => Err("/invite: which contacts? (/invite NAME...)".to_string()),
                    false => Ok(ChatLine::Invite(contacts)),
                }
            }
            "ignore" if !arg.is_empty() && text.is_empty() => Ok(ChatLine::Ignore(arg.to_string())),
            "ignore" => Err("/ignore takes one author (a contact, or 8+ hex digits)".to_string()),
            "help" => Ok(ChatLine::Help),
            _ => Err(format!(
                "unknown command /{name} (/help lists them; //TEXT sends a message that starts with /)"
            )),
        }
    }
}

/// A thread that writes on stderr beside a request under way: told to stop, and joined,
/// when dropped.
struct Beside {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Beside {
    fn spawn(f: impl FnOnce(std::sync::mpsc::Receiver<()>) + Send + 'static) -> Beside {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        Beside {
            stop,
            thread: Some(std::thread::spawn(move || f(stopped))),
        }
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A line on stderr that shows a fetch's progress, read from the node's status twice a
/// second until dropped.
fn progress_line(data_dir: &Path, id: &str) -> Beside {
    let (data_dir, id) = (data_dir.to_path_buf(), id.to_ascii_lowercase());
    Beside::spawn(move |stopped| {
        let Ok(c) = Client::for_data_dir(&data_dir) else {
            return;
        };
        let mut shown = false;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(Duration::from_millis(500))
        {
            let Ok(status) = c.get::<Status>("/status") else {
                continue;
            };
            if let Some(f) = status.fetches.iter().find(|f| f.id.starts_with(&id)) {
                let pct = (f.held * 100).checked_div(f.chunks).unwrap_or(0);
                eprint!(
                    "\r\x1b[Kfetching {}: {} of {} chunks ({pct}%)",
                    f.name, f.held, f.chunks
                );
                shown = true;
            }
        }
        if shown {
            eprint!("\r\x1b[K");
        }
    })
}

/// Says on a terminal why a write has not gone out after a moment: the node holds a write
/// in a room until it knows it holds what its user wrote there before, maybe from another
/// machine (docs/protocol.md, "Our own chain first"). Without it `send` looks stuck.
/// `None` when nobody reads stderr (or the output is JSON).
fn wait_note(data_dir: &Path, room: &str, json: bool) -> Option<Beside> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let (data_dir, room) = (data_dir.to_path_buf(), room.to_string());
    Some(Beside::spawn(move |stopped| {
        if stopped.recv_timeout(Duration::from_millis(700)).is_ok() {
            return;
        }
        let Ok(status) = Client::for_data_dir(&data_dir).and_then(|c| c.get::<Status>("/status"))
        else {
            return;
        };
        let own = status.rooms.iter().find(|r| r.name == room);
        let why = match own.map(|r| r.own_chain.as_str()) {
            Some("unconfirmed") => {
                "waiting until a member confirms this node holds what you wrote there \
                 before (with no member to ask, it goes out within seconds; at most 20 s)"
            }
            Some("catching up") => "taking up what you wrote there before, from a member, first",
            _ => return,
        };
        eprintln!("{room}: {why}...");
    }))
}

/// A size as a user writes it: bytes, or a number with K, M or G (KiB, MiB and GiB also
/// accepted; powers of 1,024).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use K, M or G")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a size: {s:?} (e.g. 4M, 512K, 1048576)"))?;
    let bytes = (value * scale as f64).round();
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("size out of range: {s:?}"));
    }
    Ok(bytes as u64)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// A path made absolute against the current directory (the node may run elsewhere).
fn absolute(p: PathBuf) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

fn client_command(cmd: Cmd, data_dir: &Path, json: bool) -> Result<()> {
    let c = Client::for_data_dir(data_dir)?;
    match cmd {
        Cmd::Join {
            room,
            room_password_file,
            room_password,
        } => {
            let password = match (room_password_file, room_password) {
                (Some(f), _) => Some(read_secret_file(&f)?),
                (None, true) => Some(rpassword::prompt_password("room password: ")?),
                (None, false) => None,
            };
            let v: RoomView = c.post(
                "/join",
                &JoinRequest {
                    name: room,
                    password,
                },
            )?;
            print(json, &v, |v| {
                println!("joined {} ({})", v.name, messages(v.messages))
            })
        }
        Cmd::Leave { room } => {
            let v: RoomView = c.post("/leave", &NameRequest { name: room })?;
            print(json, &v, |v| println!("left {}", v.name))
        }
        Cmd::Rooms => {
            let v: Vec<RoomView> = c.get("/rooms")?;
            print(json, &v, |v| {
                for r in v {
                    let unread = match r.unread {
                        0 => String::new(),
                        n => format!(", {n} unread"),
                    };
                    println!(
                        "{:<24} {:<7} {}{unread}{}",
                        r.name,
                        format!("{:?}", r.kind).to_lowercase(),
                        messages_in(r.messages, 6),
                        if r.has_password { "  (password)" } else { "" }
                    );
                }
            })
        }
        Cmd::Members { room } => {
            let v: Vec<MemberView> = c.post("/members", &RoomRequest { room })?;
            print(json, &v, |v| {
                for m in v {
                    let who = match (&m.contact, &m.name) {
                        (Some(c), _) => format!("{c} (contact)"),
                        (None, Some(n)) => n.clone(),
                        (None, None) => "(no message yet)".to_string(),
                    };
                    let you = match (m.me, m.ignored) {
                        (true, _) => "  (you)",
                        (false, true) => "  (ignored)",
                        (false, false) => "",
                    };
                    println!(
                        "{}  {who:<24} {}{you}",
                        &m.user_id[..16],
                        messages_in(m.messages, 6)
                    );
                }
            })
        }
        Cmd::Send { room, text } => {
            let note = wait_note(data_dir, &room, json);
            let v = c.post::<_, Sent>("/send", &SendRequest::new(room, text));
            drop(note);
            let v = v?;
            print(json, &v, print_sent)
        }
        Cmd::React {
            room,
            to,
            emoji,
            undo,
        } => {
            let to = parse_message_ref(&to)?;
            let note = wait_note(data_dir, &room, json);
            let v = c.post::<_, Sent>("/react", &ReactRequest::new(room, to, emoji, undo));
            drop(note);
            let v = v?;
            print(json, &v, |s| {
                let what = if undo { "took back" } else { "reacted" };
                println!("{what} {} in {}", req_emoji(s), s.message.room);
            })
        }
        Cmd::Reply { room, to, text } => {
            let reply_to = parse_message_ref(&to)?;
            let note = wait_note(data_dir, &room, json);
            let req = SendRequest {
                room,
                text,
                reply_to: Some(reply_to),
            };
            let v = c.post::<_, Sent>("/send", &req);
            drop(note);
            let v = v?;
            print(json, &v, print_sent)
        }
        Cmd::Edit { room, seq, text } => {
            let note = wait_note(data_dir, &room, json);
            let v = c.post::<_, Sent>("/edit", &EditRequest { room, seq, text });
            drop(note);
            let v = v?;
            print(json, &v, |s| print_revised(s, "edited", seq))
        }
        Cmd::Delete { room, seq } => {
            let note = wait_note(data_dir, &room, json);
            let v = c.post::<_, Sent>("/delete", &DeleteRequest { room, seq });
            drop(note);
            let v = v?;
            print(json, &v, |s| print_revised(s, "deleted", seq))
        }
        Cmd::Dm { contact, text } => {
            let note = wait_note(data_dir, &format!("@{contact}"), json);
            let v = c.post::<_, Sent>("/dm", &DmRequest { contact, text });
            drop(note);
            let v = v?;
            print(json, &v, print_sent)
        }
        Cmd::Share { room, path } => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot share {}", path.display()))?;
            let note = wait_note(data_dir, &room, json);
            let v = c.post_unbounded::<_, Sent>(
                "/share",
                &ShareRequest {
                    room,
                    path: path.display().to_string(),
                },
            );
            drop(note);
            let v = v?;
            print(json, &v, |s| {
                if let Some(f) = &s.message.file {
                    println!(
                        "shared {} ({}) as file {}; members fetch it with: cryptchat fetch {} {}",
                        f.name,
                        human_size(f.size),
                        &f.id[..16],
                        s.message.room,
                        &f.id[..16]
                    );
                }
                print_sent(s);
            })
        }
        Cmd::Files { room, limit } => {
            let req = HistoryRequest {
                kind: Some(Kind::File),
                ..HistoryRequest::last(room, limit)
            };
            let v: Vec<MessageView> = c.post("/history", &req)?;
            let files: Vec<&MessageView> = v.iter().filter(|m| m.file.is_some()).collect();
            print(json, &files, |files| {
                for m in files {
                    let f = m.file.as_ref().expect("filtered");
                    let who = m.contact.clone().unwrap_or_else(|| m.author.clone());
                    println!(
                        "{}  {:>10}  {}  {}  (from {} at {})",
                        &f.id[..16],
                        human_size(f.size),
                        if f.held { "held" } else { "    " },
                        f.name,
                        who,
                        clock(m.timestamp_ms)
                    );
                }
            })
        }
        Cmd::Fetch { room, id, output } => {
            let (path, dir) = match output.map(absolute).transpose()? {
                Some(p) if p.is_dir() => (None, Some(p)),
                Some(p) => (Some(p), None),
                None => (None, Some(std::env::current_dir()?)),
            };
            let req = FetchRequest {
                room,
                id,
                path: path.map(|p| p.display().to_string()),
                dir: dir.map(|d| d.display().to_string()),
            };
            // A fetch can take a while: show how far it has come, on a terminal only.
            let progress = (!json && std::io::stderr().is_terminal())
                .then(|| progress_line(data_dir, &req.id));
            let v = c.post_unbounded::<_, Fetched>("/fetch", &req);
            drop(progress);
            let v = v?;
            print(json, &v, |v| {
                println!(
                    "fetched {} ({}) to {}; {} chunks from peers",
                    v.name,
                    human_size(v.size),
                    v.path,
                    v.chunks_fetched
                )
            })
        }
        Cmd::Forget { room, id } => {
            let v: Forgotten = c.post("/forget", &ForgetRequest { room, id })?;
            print(json, &v, |v| {
                println!("forgot {}: {} freed", v.name, human_size(v.freed))
            })
        }
        Cmd::History { room, limit, skip } => {
            // Reading the latest messages reads the room (marked first: what arrives
            // meanwhile stays unread even if shown).
            if skip == 0 {
                let _: RoomView = c.post("/read", &RoomRequest { room: room.clone() })?;
            }
            let req = HistoryRequest {
                skip,
                ..HistoryRequest::last(room, limit)
            };
            let v: Vec<MessageView> = c.post("/history", &req)?;
            print(json, &v, |v| v.iter().for_each(print_message))
        }
        Cmd::Search {
            room,
            text,
            limit,
            skip,
        } => {
            if text.is_empty() {
                anyhow::bail!("nothing to search for: give the text to look for");
            }
            let req = HistoryRequest {
                contains: Some(text),
                skip,
                ..HistoryRequest::last(room, limit)
            };
            let v: Vec<MessageView> = c.post("/history", &req)?;
            print(json, &v, |v| {
                if v.is_empty() {
                    eprintln!("no message contains that");
                }
                v.iter().for_each(print_message)
            })
        }
        Cmd::Contact(ContactCmd::Add { name, code }) => {
            let v: ContactView = c.post("/contacts", &ContactRequest { name, code })?;
            print(json, &v, |v| {
                println!(
                    "added {} ({}); direct room: {}",
                    v.name,
                    &v.user_id[..16],
                    v.room
                )
            })
        }
        Cmd::Contact(ContactCmd::Remove { name }) => {
            let v: ContactView = c.post("/contacts/remove", &NameRequest { name })?;
            print(json, &v, |v| {
                println!("removed {} and left {}", v.name, v.room)
            })
        }
        Cmd::Ignore { room, author, undo } => {
            let v: IgnoredView = c.post("/ignore", &IgnoreRequest { room, author, undo })?;
            print(json, &v, |v| {
                let what = if undo {
                    "no longer ignoring"
                } else {
                    "ignoring"
                };
                println!("{what} {}", ignored_label(v));
            })
        }
        Cmd::Repair { room } => {
            let v: Repaired = c.post("/repair", &RoomRequest { room })?;
            print(json, &v, |v| {
                println!(
                    "{}: taking up the members' history; of your {} there, those they \
                     lack will be written again after it",
                    v.room,
                    messages(v.messages as u64)
                )
            })
        }
        Cmd::Invite { room, contacts } => {
            let v: Vec<Sent> = c.post("/invite", &InviteRequest { room, contacts })?;
            print(json, &v, |v| {
                for s in v {
                    println!("invited {}", s.message.room.trim_start_matches('@'));
                }
            })
        }
        Cmd::Ignored => {
            let v: Vec<IgnoredView> = c.get("/ignored")?;
            print(json, &v, |v| {
                if v.is_empty() {
                    println!("ignoring no one");
                }
                for i in v {
                    println!("{}", ignored_label(i));
                }
            })
        }
        Cmd::Contact(ContactCmd::List) => {
            let v: Vec<ContactView> = c.get("/contacts")?;
            print(json, &v, |v| {
                for c in v {
                    println!("{:<20} {}", c.name, c.user_id);
                }
            })
        }
        Cmd::Group { name, members } => {
            let v: RoomView = c.post("/groups", &GroupRequest { name, members })?;
            print(json, &v, |v| {
                println!(
                    "created group {} ({}); each member's node joins it when your invitation \
                     reaches it (in your direct room)",
                    v.name,
                    v.members.join(", ")
                )
            })
        }
        Cmd::Peers => {
            let v: Vec<PeerView> = c.get("/peers")?;
            print(json, &v, |v| {
                for p in v {
                    println!("{} {}", p.peer_id, p.addrs.join(" "));
                }
            })
        }
        Cmd::Status => {
            let v: Status = c.get("/status")?;
            print(json, &v, |s| {
                println!("{} ({})", s.username, s.user_id);
                println!("peer id: {}", s.peer_id);
                println!("peers: {}   nat: {}", s.connected_peers, s.nat);
                for a in &s.listen_addrs {
                    println!("listening on {a}");
                }
                for r in &s.rooms {
                    // Whether our own messages there are held, when that is news.
                    let own = match r.own_chain.as_str() {
                        "held" | "" => "",
                        "unconfirmed" if r.peers == 0 => {
                            ", no member reached yet to confirm your earlier messages here"
                        }
                        "unconfirmed" => ", your own messages not yet confirmed by a member",
                        "catching up" => ", catching up on your own messages (writes wait)",
                        "forked" => ", your messages forked: see `cryptchat repair`",
                        _ => ", your own messages: unknown state",
                    };
                    let s = if r.peers == 1 { "" } else { "s" };
                    println!(
                        "room {}: {} peer{s}, {} unpublished{own}",
                        r.name, r.peers, r.unpublished
                    );
                }
                println!(
                    "messages: {} sent, {} accepted, {} duplicates, {} rejected",
                    s.counters.sent,
                    s.counters.accepted,
                    s.counters.duplicates,
                    s.counters.rejected.values().sum::<u64>()
                );
                let a = &s.activity;
                println!(
                    "sync: {} vector exchanges sent, {} answered, {} pulls ({} entries), {} served ({} entries), {} failed",
                    a.exchanges_sent,
                    a.exchanges_answered,
                    a.pulls_sent,
                    a.entries_pulled,
                    a.pulls_served,
                    a.entries_served,
                    a.sync_failures
                );
                println!(
                    "receipts: {} sent, {} heard   connections: {} opened, {} closed   lookups: {}",
                    a.receipts_sent,
                    a.receipts_heard,
                    a.connections_opened,
                    a.connections_closed,
                    a.lookups
                );
                println!(
                    "files: {} held here, {} announced, {} holder lookups ({} holders found), {} chunks served",
                    human_size(s.file_bytes),
                    a.file_announcements,
                    a.file_lookups,
                    a.file_holders_found,
                    a.chunks_served
                );
                println!(
                    "dht store: {} own keys, {} records of others ({} keys), {} refused",
                    s.dht.own_keys, s.dht.other_records, s.dht.other_keys, s.dht.refused
                );
            })
        }
        Cmd::Dial { addr } => {
            let v: Dialled = c.post("/dial", &DialRequest { addr })?;
            print(json, &v, |v| println!("connected to {}", v.peer_id))
        }
        Cmd::Watch { rooms } => Ok(c.events(|data| {
            let message = match serde_json::from_str(data) {
                Ok(cryptchat::service::Event::Message(m)) => Some(*m),
                _ => None,
            };
            let wanted = match &message {
                Some(m) => rooms.is_empty() || rooms.contains(&m.room),
                None => rooms.is_empty(),
            };
            if wanted && json {
                println!("{data}");
            } else if let Some(m) = message.filter(|_| wanted) {
                print_message(&m);
            }
            true
        })?),
        Cmd::Chat { room, last } => chat(&c, data_dir, &room, last, json),
        Cmd::Web => {
            let url = c.web_url();
            print(json, &url, |u| println!("{u}"))
        }
        Cmd::Faults { set, faults } => {
            let v: FaultConfig = if set {
                c.post("/faults", &faults.config())?
            } else {
                c.get("/faults")?
            };
            print(json, &v, |f| {
                println!(
                    "latency {} ms, jitter {} ms, loss {}, bandwidth {}",
                    f.latency_ms,
                    f.jitter_ms,
                    f.loss,
                    if f.bandwidth_kbps == 0 {
                        "unlimited".to_string()
                    } else {
                        format!("{} kbit/s", f.bandwidth_kbps)
                    }
                )
            })
        }
        Cmd::Block { peers, unblock } => {
            let v: () = c.post(
                "/block",
                &BlockRequest {
                    peers,
                    blocked: !unblock,
                },
            )?;
            print(json, &v, |_| {
                println!("{}", if unblock { "unblocked" } else { "blocked" })
            })
        }
        Cmd::Run { .. } | Cmd::Id { .. } => unreachable!("handled before"),
    }
}

/// The reaction a sent reaction carries.
fn req_emoji(s: &Sent) -> &str {
    s.message.react.as_ref().map_or("", |r| r.emoji.as_str())
}

/// `AUTHOR#N`, as `history` shows a message, into the API's form.
fn parse_message_ref(s: &str) -> Result<MessageRequest> {
    let parsed = s
        .rsplit_once('#')
        .and_then(|(author, seq)| Some((author, seq.parse().ok()?)))
        .filter(|(author, _)| !author.is_empty());
    match parsed {
        Some((author, seq)) => Ok(MessageRequest {
            author: author.to_string(),
            seq,
        }),
        None => anyhow::bail!("name the message AUTHOR#N, as history shows it (e.g. 8ce2f3a3#12)"),
    }
}

/// What `edit` and `delete` say they did (`done`) to message #`seq`.
fn print_revised(s: &Sent, done: &str, seq: u64) {
    println!("{done} #{seq} in {}", s.message.room);
    if !s.published {
        println!("no member reachable yet: it goes out when one is");
    }
}

fn print_sent(s: &Sent) {
    if s.published {
        println!("sent to {} (#{})", s.message.room, s.message.seq);
    } else {
        println!(
            "stored in {} (#{}); no member reachable yet, it goes out when one is",
            s.message.room, s.message.seq
        );
    }
}

/// An ignored author as people name it: our contact name for it, then its user id.
fn ignored_label(v: &IgnoredView) -> String {
    match &v.contact {
        Some(name) => format!("{name} ({})", v.user_id),
        None => v.user_id.clone(),
    }
}

/// "1 message", "2 messages" (the count right-aligned in a column of `width`).
fn messages_in(n: u64, width: usize) -> String {
    let noun = if n == 1 { "message" } else { "messages" };
    format!("{n:>width$} {noun}")
}

fn messages(n: u64) -> String {
    messages_in(n, 0)
}

#[cfg(test)]
mod tests {
    use super::{messages, messages_in, parse_size};

    #[test]
    fn counts_of_messages_read_as_english() {
        assert_eq!(messages(1), "1 message");
        assert_eq!(messages(0), "0 messages");
        assert_eq!(messages_in(12, 6), "    12 messages");
        assert_eq!(messages_in(1, 6), "     1 message");
    }

    #[test]
    fn chat_lines_are_messages_unless_they_are_commands() {
        use super::ChatLine::{self, *};
        let parse = ChatLine::parse;
        assert_eq!(parse("hello there"), Ok(Send("hello there".into())));
        assert_eq!(parse("  "), Ok(Skip));
        assert_eq!(
            parse("//etc/hosts is a file"),
            Ok(Send("/etc/hosts is a file".into()))
        );
        assert_eq!(parse("/edit 3 new words"), Ok(Edit(3, "new words".into())));
        assert_eq!(parse("/edit #3 new words"), Ok(Edit(3, "new words".into())));
        assert_eq!(parse("/delete 4"), Ok(Delete(4)));
        assert_eq!(parse("/help"), Ok(Help));
        assert_eq!(
            parse("/invite bob  carol"),
            Ok(Invite(vec!["bob".into(), "carol".into()]))
        );
        assert_eq!(parse("/ignore 8ce2f3a3"), Ok(Ignore("8ce2f3a3".into())));
        assert!(
            matches!(parse("/react 8ce2f3a3#2 👍"), Ok(React(to, e)) if to.seq == 2 && e == "👍")
        );
        match parse("/reply 8ce2f3a3#12 sure, noon") {
            Ok(Reply(to, text)) => {
                assert_eq!((to.author.as_str(), to.seq), ("8ce2f3a3", 12));
                assert_eq!(text, "sure, noon");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "/edit three x",
            "/edit 3",
            "/delete 4 now",
            "/reply 12 x",
            "/reply a#1",
            "/invite",
            "/ignore",
            "/ignore two words",
            "/shrug",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_show_the_date_unless_they_are_today() {
        let now = chrono::Local::now();
        let ms = |t: chrono::DateTime<chrono::Local>| t.timestamp_millis() as u64;
        let today = super::clock_at(ms(now), now);
        assert_eq!(today, now.format("%H:%M:%S").to_string());
        let before = now - chrono::Duration::days(3);
        let shown = super::clock_at(ms(before), now);
        assert_eq!(shown, before.format("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(super::clock_at(u64::MAX, now), "??:??:??");
    }

    #[test]
    fn sizes_are_read_as_people_write_them() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 * 1024));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        for bad in ["4 parsecs", "M", "-1", "1.2.3K", ""] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
