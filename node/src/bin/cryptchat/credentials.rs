//! Who the user is: the username and password (from the flags, the environment, a file
//! or a prompt) that derive the identity, and the secret files they are read from.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cryptchat::identity::{Identity, KeySize};

use crate::cli::Credentials;

pub(crate) fn read_secret_file(path: &Path) -> Result<String> {
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

pub(crate) fn derive_identity(creds: &Credentials) -> Result<Arc<Identity>> {
    let username = creds.username()?;
    let password = zeroize::Zeroizing::new(read_password(creds)?);
    let size = KeySize::from_bits(creds.key_bits)?;
    eprintln!("deriving identity for {username} (argon2id, 64 MiB)...");
    Ok(Arc::new(Identity::derive(&username, &password, size)?))
}
