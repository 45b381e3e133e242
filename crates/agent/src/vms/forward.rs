//! What a migration destination takes from its source beyond the memory migration: the
//! forwarded storage commands each storage mode sends (and nothing of the other mode's), and
//! how its disk is attached. Nothing from the peer reaches QEMU unless it is exactly what this
//! agent expects: its own NBD address, Drover's own node, export and job names.

use super::VmsError;
use crate::model::VmRole;
use drover_api::qmp::ForwardedQmp;
use drover_core::migration::PostcopySettings;
use drover_qemu::disk::{DiskNodes, DiskSpec, NbdAddr, NbdBacking};
use std::net::SocketAddr;
use std::path::PathBuf;

/// How an incoming VM's disk arrives, which decides the storage commands it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncomingDisk {
    /// No disk: no storage command.
    None,
    /// Storage pre-copy: its QEMU serves the target on this NBD address (the one this agent
    /// made): `nbd-server-start` there, Drover's writable export, `nbd-server-stop`.
    Target(SocketAddr),
    /// Storage post-copy: it runs on an overlay of the source's export and streams it:
    /// `block-stream` of the disk, `block-job-resume`/`job-dismiss` of that stream,
    /// `query-block-jobs`, `query-named-block-nodes`, `cont`.
    Overlay,
    /// Storage hybrid: it runs on an overlay as [`IncomingDisk::Overlay`] and takes its
    /// commands, and before the switchover the source pushes the hot blocks into that overlay
    /// through an NBD server on this address (the one this agent made): the pre-copy's
    /// `nbd-server-start` there, Drover's writable export, `nbd-server-stop`.
    Hybrid(SocketAddr),
}

impl IncomingDisk {
    /// From an incoming role's NBD address (pre-copy, hybrid) and source export (post-copy,
    /// hybrid).
    pub fn of(nbd: Option<SocketAddr>, source_nbd: Option<SocketAddr>) -> Self {
        match (nbd, source_nbd) {
            (Some(a), Some(_)) => IncomingDisk::Hybrid(a),
            (None, Some(_)) => IncomingDisk::Overlay,
            (Some(a), None) => IncomingDisk::Target(a),
            (None, None) => IncomingDisk::None,
        }
    }

    /// The NBD address the source may start a server on: a pre-copy's or hybrid's own.
    fn own_nbd(self) -> Option<SocketAddr> {
        match self {
            IncomingDisk::Target(a) | IncomingDisk::Hybrid(a) => Some(a),
            IncomingDisk::None | IncomingDisk::Overlay => None,
        }
    }

    /// Whether it runs on an overlay of the source's export (takes the stream's commands).
    fn streams(self) -> bool {
        matches!(self, IncomingDisk::Overlay | IncomingDisk::Hybrid(_))
    }
}

/// Checks a forwarded storage command for incoming VM `name`, whose disk arrives as `disk`:
/// `nbd-server-start` on exactly the address this agent made (a pre-copy's or a hybrid's),
/// `block-export-add` of exactly Drover's export of disk 0's format node (the parser has
/// checked it is nbd and writable),
/// `block-stream` of exactly disk 0's format node under its stream's id (the parser has
/// checked `on-error: stop` and `auto-dismiss` off), `block-job-resume`/`job-dismiss` of that
/// stream only, `query-named-block-nodes` (flat: the parser has checked) of an overlay; each
/// only for its mode (a hybrid takes both modes'). Other commands pass.
///
/// # Errors
/// [`VmsError::ForeignNbd`] naming the argument and what was expected.
pub fn check_storage_command(
    name: &str,
    cmd: &ForwardedQmp,
    disk: IncomingDisk,
) -> Result<(), VmsError> {
    let refuse = |field: &'static str, given: String, expected: String| VmsError::ForeignNbd {
        name: name.to_string(),
        field,
        given,
        expected,
    };
    let not_here = || {
        let why = match disk {
            IncomingDisk::None => "no storage command (it has no disk)",
            IncomingDisk::Target(_) => "no stream command (its disk arrives by storage pre-copy)",
            IncomingDisk::Overlay => {
                "no NBD server command (its disk arrives by storage post-copy)"
            }
            // Takes every storage command: only a malformed one reaches here.
            IncomingDisk::Hybrid(_) => "a storage hybrid's command",
        };
        refuse("execute", cmd.name().into(), why.into())
    };
    let nodes = DiskNodes::of(0);
    let stream_job = |field: &'static str, given: &str| {
        if given == nodes.stream_job() {
            Ok(())
        } else {
            Err(refuse(
                field,
                given.to_string(),
                format!("its disk's stream {}", nodes.stream_job()),
            ))
        }
    };
    let nbd = disk.own_nbd();
    let streams = disk.streams();
    match cmd {
        ForwardedQmp::NbdServerStart(a) => {
            let own = nbd.ok_or_else(not_here)?;
            if a.addr.socket_addr() != Some(own) {
                return Err(refuse(
                    "arguments.addr",
                    format!("{}:{}", a.addr.data.host, a.addr.data.port),
                    format!("the NBD address {own} this agent made"),
                ));
            }
            Ok(())
        }
        ForwardedQmp::BlockExportAdd(a) => {
            nbd.ok_or_else(not_here)?;
            let own = (nodes.export_id(), nodes.format_node(), nodes.export_name());
            if (a.id.as_str(), a.node_name.as_str(), a.name.as_str()) != own {
                return Err(refuse(
                    "arguments",
                    format!("id {}, node-name {}, name {}", a.id, a.node_name, a.name),
                    format!(
                        "the export of its disk (id {}, node-name {}, name {})",
                        own.0, own.1, own.2
                    ),
                ));
            }
            Ok(())
        }
        ForwardedQmp::NbdServerStop => nbd.map(|_| ()).ok_or_else(not_here),
        ForwardedQmp::BlockStream(a) if streams => {
            if a.device != nodes.format_node() {
                return Err(refuse(
                    "arguments.device",
                    a.device.clone(),
                    format!("its disk's node {}", nodes.format_node()),
                ));
            }
            stream_job("arguments.job-id", &a.job_id)
        }
        ForwardedQmp::BlockJobResume(a) if streams => stream_job("arguments.device", &a.device),
        ForwardedQmp::JobDismiss(a) if streams => stream_job("arguments.id", &a.id),
        ForwardedQmp::QueryBlockJobs
        | ForwardedQmp::Cont
        | ForwardedQmp::QueryNamedBlockNodes(_)
            if streams =>
        {
            Ok(())
        }
        ForwardedQmp::BlockStream(_)
        | ForwardedQmp::BlockJobResume(_)
        | ForwardedQmp::JobDismiss(_)
        | ForwardedQmp::QueryBlockJobs
        | ForwardedQmp::Cont
        | ForwardedQmp::QueryNamedBlockNodes(_) => Err(not_here()),
        _ => Ok(()),
    }
}

/// How the disk file at `path` is attached for incoming VM `name` of `role`: a storage
/// post-copy's destination runs on it as an overlay backed by the source's export (the
/// address was checked when the request came: `api::incoming`), anything else on the image
/// itself.
///
/// # Errors
/// [`VmsError::ForeignNbd`] for a source address the launcher cannot take (never attached as
/// a plain image instead: the guest would read an empty disk).
pub fn disk_spec(name: &str, path: PathBuf, role: &VmRole) -> Result<DiskSpec, VmsError> {
    let VmRole::Incoming {
        source_nbd: Some(addr),
        ..
    } = role
    else {
        return Ok(DiskSpec::Image(path));
    };
    let refuse = |e: drover_qemu::disk::DiskError| VmsError::ForeignNbd {
        name: name.to_string(),
        field: "source_nbd",
        given: addr.to_string(),
        expected: e.to_string(),
    };
    let source = NbdAddr::new(*addr)
        .and_then(|a| NbdBacking::new(a, &PostcopySettings::default()))
        .map_err(refuse)?;
    Ok(DiskSpec::Overlay {
        overlay: path,
        source,
    })
}
