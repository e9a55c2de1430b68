//! netsim: runs many real cryptchat nodes (the node library, in-process, on loopback) with
//! faults, and measures delivery, latency, traffic, convergence, CPU and memory — next to a
//! plain-gossipsub baseline run of the same scenario.

pub mod baseline;
pub mod node;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod svg;

pub use baseline::BaselineSwarm;
pub use report::Report;
pub use run::{Options, run};
pub use scenario::{Scenario, Transport};
