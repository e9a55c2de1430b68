//! Where a node keeps its files, and how client commands find the running node.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Journal file name inside the data dir.
pub const JOURNAL_FILE: &str = "journal.redb";
/// WebRTC certificate (PEM) inside the data dir.
pub const CERT_FILE: &str = "webrtc-cert.pem";
/// The node's libp2p key (see [`crate::net::load_or_create_peer_key`]).
pub const PEER_KEY_FILE: &str = "peer.key";
/// Local API endpoint of the running node.
pub const API_FILE: &str = "api.json";
/// Bearer token for the local API (mode 0600).
pub const TOKEN_FILE: &str = "api.token";
/// Files uploaded through the API wait here while they are sealed (cleared at start).
pub const UPLOADS_DIR: &str = "uploads";

/// The platform's data dir for cryptchat (e.g. ~/.local/share/cryptchat).
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("cryptchat")
}

/// Creates the data dir (mode 0700 on Unix).
pub fn ensure_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a file readable by its owner only, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What `cryptchat run` publishes for client commands in the same data dir.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiInfo {
    /// Loopback address of the HTTP API, e.g. "127.0.0.1:41234".
    pub addr: String,
    pub pid: u32,
}
