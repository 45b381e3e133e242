//! What the agent keeps about each VM beyond its wire configuration. The wire types themselves
//! (requests, views, migration records) are the contract crate's, `drover_api`.

use drover_api::{MigrationUri, VmConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Why a VM is on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VmRole {
    /// A normal VM.
    Running,
    /// A QEMU waiting for (or receiving) migration `migration_id`; becomes `Running` on commit.
    Incoming {
        migration_id: String,
        /// Where this agent told the source its QEMU listens; the only URI a forwarded
        /// `migrate-incoming` may carry (None in records from before URIs were kept: then no
        /// forwarded URI is accepted).
        #[serde(default)]
        uri: Option<MigrationUri>,
        /// The only URI a forwarded `migrate-recover` may carry.
        #[serde(default)]
        recover_uri: Option<MigrationUri>,
        /// Where this agent told the source its QEMU's NBD server listens for a storage
        /// pre-copy: the only address a forwarded `nbd-server-start` may carry (None: a VM
        /// without a disk, and no NBD server is started).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nbd: Option<std::net::SocketAddr>,
        /// Storage post-copy: the source's NBD export its disk's overlay reads from (checked
        /// to be the source agent's own address when the request came). Its presence makes
        /// the VM a post-copy destination: launched on the overlay, taking only the stream's
        /// forwarded commands.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_nbd: Option<std::net::SocketAddr>,
    },
}

impl VmRole {
    /// The migration this VM is the destination of.
    pub fn incoming_migration(&self) -> Option<&str> {
        match self {
            VmRole::Incoming { migration_id, .. } => Some(migration_id),
            VmRole::Running => None,
        }
    }
}

/// One VM as persisted: one JSON file per VM in `<state>/vms/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub config: VmConfig,
    pub role: VmRole,
    /// The QEMU daemon's pid.
    pub pid: u32,
    /// Run directory: QMP and metrics sockets, console log, pid file.
    pub run_dir: PathBuf,
    pub created_unix_ms: u64,
    /// The migration that delivered this VM here (set when it is committed), so a repeated
    /// commit is told apart from one on a VM that never was incoming, and a migration id
    /// cannot deliver a second VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_by: Option<String>,
}
