//! Drover's cluster manager: the I/O around core's control step. It observes every host's
//! agent, persists what it saw and decided, carries the step's actions out, and serves the
//! operator's API. This crate holds the store so far (`store`); the fleet, the collector, the
//! loop and the API follow (issue 9).

pub mod store;
