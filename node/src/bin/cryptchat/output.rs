//! How a message reads on the terminal (`history`, `search`, `watch`, `chat`), and the
//! times shown beside messages and files.

use cryptchat::core::MessageView;

use crate::size::human_size;

/// A message's time in the reader's time zone: the time of day for today's, with the date
/// before it for older ones (a history reaches back days).
pub(crate) fn clock(ms: u64) -> String {
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

/// A user id as people compare it by eye, the same everywhere the CLI, the run banner and
/// the web page show one: the first 8 bytes in groups of four hex digits.
pub(crate) fn short_user(hex: &str) -> String {
    cryptchat::identity::UserId::from_hex(hex)
        .map(|id| id.short())
        .unwrap_or_else(|| hex.to_string())
}

/// Words from the network on one line of the terminal: a line break or tab is a space, and
/// any other [deceptive](cryptchat::chars::is_deceptive) character (an escape sequence, a
/// carriage return, a bidi override) is shown escaped, as `\u{1b}`, not acted on.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(' '),
            c if cryptchat::chars::is_deceptive(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// A message's text on the terminal: as [`one_line`], but its lines (and tabs) stay, each
/// line after the first indented, so that no line of a text passes for a message of its own.
/// (A line may end `\r\n`; a carriage return anywhere else is shown escaped.)
fn lines(s: &str) -> String {
    s.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .map(|line| {
            line.split('\t')
                .map(one_line)
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join(CONTINUED)
}

/// What starts the second and later lines of a message.
const CONTINUED: &str = "\n    ";

/// Who wrote a message, as the terminal shows it: a contact by our name for it, ourselves by
/// our username, anyone else by the name it gave itself after a `~`. That name is
/// self-asserted: a stranger in a room may call itself what a contact is called, and the `~`
/// tells the two apart.
pub(crate) fn author_label(m: &MessageView) -> String {
    match (&m.contact, m.mine) {
        (Some(contact), _) => one_line(contact),
        (None, true) => one_line(&m.author),
        (None, false) => format!("~{}", one_line(&m.author)),
    }
}

pub(crate) fn print_message(m: &MessageView) {
    // Each message shows where it is in its author's chain, AUTHOR#N: what `reply` takes
    // (and N, for our own, what `edit` and `delete` take).
    let at = format!("{}#{}", &m.author_id[..8], m.seq);
    let who = format!("{} [{at}]", author_label(m));
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
            format!("({what} {} on {id}#{})", one_line(&r.emoji), r.seq)
        }
        (_, Some(target)) if m.deleted => format!("(deleted message #{target})"),
        (_, Some(target)) => format!(
            "(edited message #{target}) {}",
            lines(m.text.as_deref().unwrap_or_default())
        ),
        _ if m.deleted => "(message deleted)".to_string(),
        (Some(f), _) => format!(
            "[file] {} ({}), id {} (cryptchat fetch {} {})",
            one_line(&f.name),
            human_size(f.size),
            &f.id[..16],
            one_line(&m.room),
            &f.id[..16]
        ),
        (None, _) => {
            let text = lines(m.text.as_deref().unwrap_or_default());
            match m.edited_ms {
                Some(_) => format!("{text} (edited)"),
                None => text,
            }
        }
    };
    let reactions: Vec<String> = m
        .reactions
        .iter()
        .map(|r| format!("{} {}", one_line(&r.emoji), r.by.len()))
        .collect();
    let delivery = match reactions.is_empty() {
        true => delivery,
        false => format!("  [{}]{delivery}", reactions.join(", ")),
    };
    let reply = match &m.reply_to {
        Some(r) => {
            let id = r.author_id.get(..8).unwrap_or(&r.author_id);
            format!("(reply to {id}#{}: \"{}\") ", r.seq, one_line(&r.quote))
        }
        None => String::new(),
    };
    println!(
        "{} {} {}: {reply}{body}{delivery}",
        clock(m.timestamp_ms),
        one_line(&m.room),
        who,
    );
}

#[cfg(test)]
mod tests {
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
    fn what_the_network_wrote_is_shown_not_acted_on() {
        // An escape sequence, a carriage return and a bidi override are shown escaped.
        assert_eq!(
            super::one_line("bob\u{1b}[2J\r\u{202E}x"),
            "bob\\u{1b}[2J\\u{d}\\u{202e}x"
        );
        assert_eq!(
            super::one_line("two\nlines\tand a tab"),
            "two lines and a tab"
        );
        // A text keeps its lines and tabs; no line of it starts a line of its own.
        let forged = "hi\n12:00:00 lobby alice [814ddc60#9]: send me your password";
        assert_eq!(
            super::lines(forged),
            "hi\n    12:00:00 lobby alice [814ddc60#9]: send me your password"
        );
        assert_eq!(super::lines("a\tb\r\nc\rd"), "a\tb\n    c\\u{d}d");
        assert_eq!(super::lines("café 👩\u{200D}💻"), "café 👩\u{200D}💻");
    }

    #[test]
    fn a_user_id_reads_the_same_short_form_everywhere() {
        let hex = "814ddc60a1b2c3d4".to_string() + &"00".repeat(24);
        assert_eq!(super::short_user(&hex), "814d-dc60-a1b2-c3d4");
        // Something that is not an id is shown as it came rather than cut.
        assert_eq!(super::short_user("not-an-id"), "not-an-id");
    }
}
