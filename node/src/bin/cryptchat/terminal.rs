//! What the binary does beside its output on the terminal: notes and progress written on
//! stderr while a request is under way, and how a closed pipe ends a client command.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use cryptchat::client::Client;
use cryptchat::service::Status;

/// A client command whose output is cut short (`cryptchat history lobby | head`) ends
/// quietly, as other command-line tools do, instead of panicking on the failed write: the
/// default action of SIGPIPE, which Rust programs ignore. Not for `run`, whose sockets
/// report a closed peer as an error.
pub(crate) fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: sets the process's SIGPIPE disposition to its default, before any other
    // thread is started; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A thread that writes on stderr beside a request under way: told to stop, and joined,
/// when dropped.
pub(crate) struct Beside {
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
pub(crate) fn progress_line(data_dir: &Path, id: &str) -> Beside {
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
pub(crate) fn wait_note(data_dir: &Path, room: &str, json: bool) -> Option<Beside> {
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let (data_dir, room) = (data_dir.to_path_buf(), cryptchat::room::local_name(room));
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
            Some("settling") => {
                "your messages there conflict with ones written with your identity elsewhere: \
                 waiting for the room's members to show which go on (at most 15 s)"
            }
            _ => return,
        };
        eprintln!("{room}: {why}...");
    }))
}
