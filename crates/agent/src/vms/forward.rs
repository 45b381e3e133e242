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
    /// `query-block-jobs`, `cont`.
    Overlay,
}

impl IncomingDisk {
    /// From an incoming role's NBD address (pre-copy) and source export (post-copy).
    pub fn of(nbd: Option<SocketAddr>, source_nbd: Option<SocketAddr>) -> Self {
        match (nbd, source_nbd) {
            (_, Some(_)) => IncomingDisk::Overlay,
            (Some(a), None) => IncomingDisk::Target(a),
            (None, None) => IncomingDisk::None,
        }
    }
}

/// Checks a forwarded storage command for incoming VM `name`, whose disk arrives as `disk`:
/// `nbd-server-start` on exactly the address this agent made, `block-export-add` of exactly
/// Drover's export of disk 0's format node (the parser has checked it is nbd and writable),
/// `block-stream` of exactly disk 0's format node under its stream's id (the parser has
/// checked `on-error: stop` and `auto-dismiss` off), `block-job-resume`/`job-dismiss` of that
/// stream only; each only for its mode. Other commands pass.
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
    match (cmd, disk) {
        (ForwardedQmp::NbdServerStart(a), IncomingDisk::Target(own)) => {
            if a.addr.socket_addr() != Some(own) {
                return Err(refuse(
                    "arguments.addr",
                    format!("{}:{}", a.addr.data.host, a.addr.data.port),
                    format!("the NBD address {own} this agent made"),
                ));
            }
            Ok(())
        }
        (ForwardedQmp::BlockExportAdd(a), IncomingDisk::Target(_)) => {
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
        (ForwardedQmp::NbdServerStop, IncomingDisk::Target(_)) => Ok(()),
        (ForwardedQmp::BlockStream(a), IncomingDisk::Overlay) => {
            if a.device != nodes.format_node() {
                return Err(refuse(
                    "arguments.device",
                    a.device.clone(),
                    format!("its disk's node {}", nodes.format_node()),
                ));
            }
            stream_job("arguments.job-id", &a.job_id)
        }
        (ForwardedQmp::BlockJobResume(a), IncomingDisk::Overlay) => {
            stream_job("arguments.device", &a.device)
        }
        (ForwardedQmp::JobDismiss(a), IncomingDisk::Overlay) => stream_job("arguments.id", &a.id),
        (ForwardedQmp::QueryBlockJobs | ForwardedQmp::Cont, IncomingDisk::Overlay) => Ok(()),
        (
            ForwardedQmp::NbdServerStart(_)
            | ForwardedQmp::BlockExportAdd(_)
            | ForwardedQmp::NbdServerStop
            | ForwardedQmp::BlockStream(_)
            | ForwardedQmp::BlockJobResume(_)
            | ForwardedQmp::JobDismiss(_)
            | ForwardedQmp::QueryBlockJobs
            | ForwardedQmp::Cont,
            _,
        ) => Err(not_here()),
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
