//! `netsim run SCENARIO`: runs a scenario and prints a report (plus JSON and SVG files).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use netsim::{BaselineSwarm, Options, Scenario, Transport};

#[derive(Parser)]
#[command(
    name = "netsim",
    about = "Run many cryptchat nodes on one machine, with faults"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a scenario file.
    Run {
        scenario: PathBuf,
        /// Also run the plain-gossipsub baseline and report ratios against it.
        #[arg(long)]
        baseline: bool,
        /// The swarm the baseline runs: `plain` (gossipsub and identify) or `cryptchat`
        /// (cryptchat's own swarm, every protocol in it, carrying the same plain messages).
        #[arg(long, value_enum, default_value_t = BaselineSwarm::Plain, requires = "baseline")]
        baseline_swarm: BaselineSwarm,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the number of nodes (to find where a scenario breaks).
        #[arg(long)]
        nodes: Option<usize>,
        /// Override the message rate (per sender per room per second).
        #[arg(long)]
        rate: Option<f64>,
        /// Override the count of every counted room spec (`count = ...`).
        #[arg(long)]
        rooms: Option<usize>,
        /// Give every node a runtime and a thread of its own, as if it were its own process,
        /// instead of running all nodes on one shared runtime.
        #[arg(long)]
        runtime_per_node: bool,
        /// What the nodes connect over, instead of the scenario's `transport`: QUIC needs
        /// one socket per node instead of two per connection, for runs past the descriptor
        /// limit.
        #[arg(long, value_enum)]
        transport: Option<Transport>,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the latency/delivery plot here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    cryptchat::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "netsim=info,cryptchat=warn,libp2p=error,webrtc=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let Cli {
        cmd:
            Cmd::Run {
                scenario,
                baseline,
                baseline_swarm,
                seed,
                nodes,
                rooms,
                rate,
                runtime_per_node,
                transport,
                json,
                svg,
            },
    } = Cli::parse();
    let mut s = Scenario::load_with(&scenario, rooms)?;
    if let Some(seed) = seed {
        s.seed = seed;
    }
    if let Some(n) = nodes {
        s.nodes = n;
    }
    if let Some(r) = rate {
        s.load.rate = r;
    }
    if let Some(t) = transport {
        s.transport = t;
    }
    s.validate()?;
    let rt = tokio::runtime::Runtime::new()?;
    let base = if baseline {
        let opts = Options {
            baseline: true,
            baseline_swarm,
            runtime_per_node,
            ..Default::default()
        };
        Some(rt.block_on(netsim::run(&s, &opts))?)
    } else {
        None
    };
    let opts = Options {
        runtime_per_node,
        ..Default::default()
    };
    let report = rt.block_on(netsim::run(&s, &opts))?;
    print!("{}", report.table(base.as_ref()));
    if let Some(path) = json {
        let doc = serde_json::json!({ "cryptchat": report, "baseline": base });
        std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    }
    if let Some(path) = svg {
        std::fs::write(&path, netsim::svg::render(&report, base.as_ref()))?;
    }
    if !report.complete() {
        eprintln!("warning: delivery was incomplete or journals differ");
        std::process::exit(2);
    }
    Ok(())
}
