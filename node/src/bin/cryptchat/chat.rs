//! `cryptchat chat`: a room in the terminal, and the `/commands` typed there.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use cryptchat::api::{
    DeleteRequest, EditRequest, HistoryRequest, IgnoreRequest, InviteRequest, MessageRequest,
    ReactRequest, RoomRequest, SendRequest,
};
use cryptchat::client::Client;
use cryptchat::core::{IgnoredView, MessageView, RoomView};
use cryptchat::service::Sent;

use crate::commands::{ignored_label, parse_message_ref};
use crate::output::print_message;
use crate::terminal::wait_note;

/// `cryptchat chat`: the room's last `last` messages, then its new ones as they arrive (on
/// a thread of their own), while each line read from stdin is sent. Ends at the end of
/// stdin, or when the node stops.
pub(crate) fn chat(c: &Client, data_dir: &Path, room: &str, last: usize, json: bool) -> Result<()> {
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
    let here = cryptchat::room::local_name(room);
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
                    Ok(sent) => {
                        eprintln!("invited {}", contacts.join(", "));
                        // Members added to a group: the chat goes on in its successor.
                        if let Some(s) = sent.iter().find(|s| !s.message.room.starts_with('@')) {
                            eprintln!(
                                "-- {room} goes on in a new room with them; its earlier messages \
                                 are in '{}' --",
                                s.message.room
                            );
                        }
                    }
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

#[cfg(test)]
mod tests {
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
}
