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

pub(crate) fn print_message(m: &MessageView) {
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
    fn a_user_id_reads_the_same_short_form_everywhere() {
        let hex = "814ddc60a1b2c3d4".to_string() + &"00".repeat(24);
        assert_eq!(super::short_user(&hex), "814d-dc60-a1b2-c3d4");
        // Something that is not an id is shown as it came rather than cut.
        assert_eq!(super::short_user("not-an-id"), "not-an-id");
    }
}
