//! netsim: runs many cryptchat nodes on one machine (filled in by its own issue).
