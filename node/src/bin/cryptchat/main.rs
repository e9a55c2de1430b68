//! The `cryptchat` binary: `run` starts a node; the other subcommands talk to it.
//!
//! This file holds the start (arguments parsed, then `run` or a client command) and the
//! node run in the foreground; the modules hold the rest.

mod chat;
mod cli;
mod commands;
mod credentials;
mod output;
mod size;
mod terminal;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cryptchat::api::IdView;
use cryptchat::client::Client;
use cryptchat::config::{self, ApiInfo};
use cryptchat::identity::Identity;
use cryptchat::service::{self, NodeConfig};

use crate::cli::{Cli, Cmd};
use crate::commands::client_command;
use crate::credentials::{derive_identity, read_secret_file};
use crate::terminal::quiet_on_closed_pipe;

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
            no_auto_repair,
            no_mailbox,
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
            // Peers that knew this node find it where it was (see `listen_ports`).
            cfg.keep_ports = true;
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
            cfg.settle_forks = !no_auto_repair;
            if no_mailbox {
                cfg.mailbox_after = None;
            }
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
                // The peer id is the data dir's, made at its first run (none before).
                let key = cryptchat::net::read_peer_key(&data_dir.join(config::PEER_KEY_FILE))
                    .map_err(anyhow::Error::msg)?;
                let peer = key.map(|k| k.public().to_peer_id());
                IdView::of(&*derive_identity(&creds)?, peer)
            };
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("username:     {}", view.username);
                println!("user id:      {}", view.user_id);
                println!(
                    "peer id:      {}",
                    view.peer_id.as_deref().unwrap_or(
                        "none yet (a data dir's own, made when a node first runs on it)"
                    )
                );
                println!("contact code: {}", view.contact_code);
            }
            Ok(())
        }
        cmd => client_command(cmd, &data_dir, cli.json),
    }
}

fn init_tracing() {
    // libp2p-kad's warnings are about states a node meets in normal use (a first node,
    // alone, has no one to bootstrap from), which cryptchat reports in its own words; so
    // are webrtc-ice's (every WebRTC-direct dial logs "pingAllCandidates called with no
    // candidate pairs" before its first candidate pair).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,libp2p=warn,libp2p_kad=error,webrtc=warn,webrtc_ice=error",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A node already running on the data dir is said before the password is asked and
/// derived for nothing. (Its journal's lock says so too, later, if its API does not answer.)
fn refuse_if_running(data_dir: &std::path::Path) -> Result<()> {
    match Client::for_data_dir(data_dir).and_then(|c| c.get::<IdView>("/id")) {
        Ok(id) => bail!(
            "a node for {} ({}) is already running on {}: stop it first, or use another \
             --data-dir",
            id.username,
            output::short_user(&id.user_id),
            data_dir.display()
        ),
        Err(_) => Ok(()),
    }
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
    let no_bootstrap = cfg.bootstrap.is_empty() && !cfg.swarm.mdns;
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
    let mut server = tokio::spawn(cryptchat::api::serve(listener, node.clone(), token));
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
        if no_bootstrap && status.known_peers > 0 {
            out += &format!(
                "no --bootstrap address: dialling the peers this node knew before ({} kept)\n",
                status.known_peers
            );
        } else if no_bootstrap {
            out += "no --bootstrap address and no --mdns: this node waits for others to dial it \
                    (give them an address above)\n";
        }
        print!("{out}");
    }
    // Stopped through the API, or by itself (see below).
    let by_api = tokio::select! {
        _ = wait_for_signal() => false,
        _ = node.stopped() => true,
    };
    tracing::info!(by_api, "shutting down");
    let _ = std::fs::remove_file(data_dir.join(config::API_FILE));
    if by_api {
        // The request that stopped the node gets its answer (clients of `watch` keep the
        // server from ending by itself: a moment is all they get).
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
    } else {
        let _ = node.shutdown().await;
    }
    server.abort();
    match node.failure() {
        Some(why) => Err(anyhow::anyhow!("the node stopped: {why}")),
        None => Ok(()),
    }
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
