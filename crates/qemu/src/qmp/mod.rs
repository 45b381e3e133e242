//! QMP: the trait every QEMU conversation goes through, its typed commands, a real client over a
//! unix socket and a scripted fake for tests.
//!
//! Only [`Qmp::execute`] talks to QEMU; the typed commands in [`QmpExt`] build on it, so the raw
//! JSON escape hatch and the fakes see exactly what a real QEMU would. Responses are matched to
//! requests by `id`, so commands may be issued concurrently; events are kept in a bounded buffer.

pub(crate) mod bitmap;
mod block;
mod client;
mod fake;
mod typed;

pub use block::{parse_block_job, parse_device_root, BlockExt};
pub use client::QmpClient;
pub use fake::{FakeCall, ScriptedQmp};
pub use typed::{QmpExt, VmStatus};

use async_trait::async_trait;
use serde_json::Value;
use thiserror::Error;

/// Everything that can go wrong talking QMP.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {message}")]
    Connect { path: String, message: String },
    #[error("QMP I/O error: {0}")]
    Io(String),
    #[error("QMP connection closed (QEMU exited?)")]
    Closed,
    #[error("QMP protocol error: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QMP command '{command}' failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP command '{command}' timed out after {ms} ms")]
    Timeout { command: String, ms: u64 },
    /// Not sent: QEMU has not answered this many earlier in-band commands (its main loop may
    /// wait for a post-copy page); sending more could make it stop reading out-of-band ones.
    #[error(
        "QMP command '{command}' not sent: QEMU has not answered {unanswered} earlier commands \
         (its main loop may be waiting for a missing post-copy page)"
    )]
    Busy { command: String, unanswered: usize },
    #[error("unexpected reply to '{command}': {message}")]
    Reply { command: String, message: String },
}

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    /// QEMU's host wall-clock stamp of the event, microseconds since the epoch.
    pub timestamp_us: Option<u64>,
}

/// A QMP conversation.
#[async_trait]
pub trait Qmp: Send + Sync {
    /// Runs one command and returns its `return` value (raw-JSON escape hatch).
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError>;

    /// Drains the events received since the last call.
    fn take_events(&self) -> Vec<QmpEvent>;

    /// Whether [`Qmp::take_events`] reports QEMU's events at all (a QEMU reached through
    /// another agent's API has none to report), so their absence is no anomaly.
    fn forwards_events(&self) -> bool {
        true
    }
}
