//! The client commands: each asks the node running on the data dir, through its local
//! API, and prints the answer (as JSON with `--json`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cryptchat::api::{
    BlockRequest, ContactRequest, DeleteRequest, DialRequest, Dialled, DmRequest, EditRequest,
    FetchRequest, ForgetRequest, GroupRequest, HistoryRequest, IgnoreRequest, InviteRequest,
    JoinRequest, MessageRequest, NameRequest, ReactRequest, RoomRequest, SendRequest, ShareRequest,
    Stopped,
};
use cryptchat::client::Client;
use cryptchat::core::{ContactView, IgnoredView, MemberView, MessageView, RoomView};
use cryptchat::envelope::Kind;
use cryptchat::faults::FaultConfig;
use cryptchat::service::{Fetched, Forgotten, PeerView, Repaired, Sent, Status};

use crate::chat::chat;
use crate::cli::{Cmd, ContactCmd};
use crate::credentials::read_secret_file;
use crate::output::{author_label, clock, one_line, print_message, short_user};
use crate::size::human_size;
use crate::terminal::{progress_line, wait_note};

pub(crate) fn client_command(cmd: Cmd, data_dir: &Path, json: bool) -> Result<()> {
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
                println!("joined {} ({})", one_line(&v.name), messages(v.messages))
            })
        }
        Cmd::Leave { room } => {
            let v: RoomView = c.post("/leave", &NameRequest { name: room })?;
            print(json, &v, |v| println!("left {}", one_line(&v.name)))
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
                        one_line(&r.name),
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
                    // As messages show them: a name that is its own word after a `~`.
                    let who = match (&m.contact, &m.name) {
                        (Some(c), _) => format!("{} (contact)", one_line(c)),
                        (None, Some(n)) if m.me => one_line(n),
                        (None, Some(n)) => format!("~{}", one_line(n)),
                        (None, None) => "(no message yet)".to_string(),
                    };
                    let you = match (m.me, m.ignored) {
                        (true, _) => "  (you)",
                        (false, true) => "  (ignored)",
                        (false, false) => "",
                    };
                    println!(
                        "{}  {who:<24} {}{you}",
                        short_user(&m.user_id),
                        messages_in(m.messages, 6)
                    );
                }
            })
        }
        Cmd::Send { room, text } => {
            let text = message_text(text)?;
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
            let text = message_text(text)?;
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
            let text = message_text(text)?;
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
            let text = message_text(text)?;
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
                    let who = author_label(m);
                    println!(
                        "{}  {:>10}  {}  {}  (from {} at {})",
                        &f.id[..16],
                        human_size(f.size),
                        if f.held { "held" } else { "    " },
                        one_line(&f.name),
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
                let from = match v.chunks_from_dht {
                    0 => "from peers".to_string(),
                    n if n == v.chunks_fetched => "from the DHT".to_string(),
                    n => format!("{n} of them from the DHT"),
                };
                println!(
                    "fetched {} ({}) to {}; {} chunks {from}",
                    one_line(&v.name),
                    human_size(v.size),
                    v.path,
                    v.chunks_fetched
                )
            })
        }
        Cmd::Forget { room, id } => {
            let v: Forgotten = c.post("/forget", &ForgetRequest { room, id })?;
            print(json, &v, |v| {
                println!(
                    "forgot {}: {} freed",
                    one_line(&v.name),
                    human_size(v.freed)
                )
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
                    short_user(&v.user_id),
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
            let group = room.clone();
            let v: Vec<Sent> = c.post("/invite", &InviteRequest { room, contacts })?;
            print(json, &v, |v| {
                for s in v {
                    match s.message.room.strip_prefix('@') {
                        Some(contact) => println!("invited {contact}"),
                        // The group's members were told in the group itself.
                        None => println!(
                            "{group} goes on in a new room with them (a group's members are \
                             fixed); its earlier messages are in '{}'",
                            s.message.room
                        ),
                    }
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
                let mut members = v.members.clone();
                members.sort();
                println!(
                    "created group {} ({}); each member's node joins it when your invitation \
                     reaches it (in your direct room)",
                    v.name,
                    members.join(", ")
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
                println!(
                    "peers: {} connected, {} known   nat: {}",
                    s.connected_peers, s.known_peers, s.nat
                );
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
                        "settling" => {
                            ", your messages conflict with ones written elsewhere: \
                             finding out which go on (writes wait)"
                        }
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
                let disk = match s.disk_free {
                    Some(free) if s.disk_low => format!(
                        "; the disk has {} free: nearly full, files are refused",
                        human_size(free)
                    ),
                    Some(free) => format!("; {} free on the disk", human_size(free)),
                    None => String::new(),
                };
                println!(
                    "files: {} held here{disk}, {} announced, {} holder lookups ({} holders found), {} chunks served",
                    human_size(s.file_bytes),
                    a.file_announcements,
                    a.file_lookups,
                    a.file_holders_found,
                    a.chunks_served
                );
                println!(
                    "dht store: {} own keys, {} records of others ({} keys), {} refused; \
                     mailboxes: {} ours, {} of others ({}), {} refused",
                    s.dht.own_keys,
                    s.dht.other_records,
                    s.dht.other_keys,
                    s.dht.refused,
                    s.dht.own_values,
                    s.dht.other_values,
                    human_size(s.dht.other_value_bytes as u64),
                    s.dht.values_refused
                );
                let m = &s.mailboxes;
                println!(
                    "mailboxes: {} put ({} found no DHT node), {} read ({} found), {} messages taken from them",
                    m.put, m.unplaced, m.read, m.found, m.taken
                );
            })
        }
        Cmd::Stop => {
            let v: Stopped = c.post_unbounded("/stop", &())?;
            // Stopped: the process exits right after, removing its API file as it goes.
            let api_file = data_dir.join(cryptchat::config::API_FILE);
            let start = std::time::Instant::now();
            while api_file.exists() && start.elapsed() < std::time::Duration::from_secs(5) {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            print(json, &v, |v| {
                println!(
                    "stopped the node for {} ({})",
                    v.username,
                    short_user(&v.user_id)
                )
            })
        }
        Cmd::Dial { addr } => {
            let v: Dialled = c.post("/dial", &DialRequest { addr })?;
            print(json, &v, |v| println!("connected to {}", v.peer_id))
        }
        Cmd::Watch { rooms } => {
            let rooms: Vec<String> = rooms
                .iter()
                .map(|r| cryptchat::room::local_name(r))
                .collect();
            let events = c.subscribe()?;
            if !json {
                let which = match rooms.len() {
                    0 => "every room".to_string(),
                    _ => rooms.join(", "),
                };
                eprintln!("watching {which} (Ctrl-C stops)");
            }
            for data in events {
                let data = data?;
                let message = match serde_json::from_str(&data) {
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
            }
            // The stream ends only when the node stops.
            if !json {
                eprintln!("the node stopped");
            }
            Ok(())
        }
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

/// A message's text from its words on the command line (`send lobby see you at 5` needs no
/// quotes), or from standard input for `-` alone, to its end (one final line break left out).
fn message_text(words: crate::cli::Words) -> Result<String> {
    if words.text != ["-"] {
        return Ok(words.text.join(" "));
    }
    use std::io::Read;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("type the message, then Ctrl-D on a line of its own");
    }
    let mut text = String::new();
    stdin
        .lock()
        .read_to_string(&mut text)
        .context("cannot read the message from standard input")?;
    let end = text.strip_suffix('\n').unwrap_or(&text);
    Ok(end.strip_suffix('\r').unwrap_or(end).to_string())
}

fn print<T: serde::Serialize>(json: bool, value: &T, human: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        human(value);
    }
    Ok(())
}

/// A path made absolute against the current directory (the node may run elsewhere).
fn absolute(p: PathBuf) -> Result<PathBuf> {
    Ok(if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// The reaction a sent reaction carries.
fn req_emoji(s: &Sent) -> &str {
    s.message.react.as_ref().map_or("", |r| r.emoji.as_str())
}

/// `AUTHOR#N`, as `history` shows a message, into the API's form.
pub(crate) fn parse_message_ref(s: &str) -> Result<MessageRequest> {
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
        println!(
            "no member reachable now: it goes out when one is, and members you know of can \
             also get it from your mailbox in the DHT"
        );
    }
}

fn print_sent(s: &Sent) {
    if s.published {
        println!("sent to {} (#{})", s.message.room, s.message.seq);
    } else {
        println!(
            "stored in {} (#{}); no member reachable now: it goes out when one is, and \
             members you know of can also get it from your mailbox in the DHT",
            s.message.room, s.message.seq
        );
    }
}

/// An ignored author as people name it: our contact name for it, then its user id.
pub(crate) fn ignored_label(v: &IgnoredView) -> String {
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
    use super::{messages, messages_in};

    #[test]
    fn counts_of_messages_read_as_english() {
        assert_eq!(messages(1), "1 message");
        assert_eq!(messages(0), "0 messages");
        assert_eq!(messages_in(12, 6), "    12 messages");
        assert_eq!(messages_in(1, 6), "     1 message");
    }
}
