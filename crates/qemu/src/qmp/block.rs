//! Typed block-layer QMP commands for storage migration (NBD server and exports, NBD client
//! nodes, the mirror and stream jobs), on top of [`Qmp::execute`].
//!
//! Nothing here takes free text from a peer: node names, job ids and export names are
//! [`DiskNodes`]' own, addresses are [`NbdAddr`]s (an IP address and a non-zero port).

use super::{Qmp, QmpError};
use crate::disk::{DiskNodes, DiskRoot, NbdAddr};
use async_trait::async_trait;
use drover_core::migration::{CopyMode, MirrorJob};
use serde_json::{json, Value};

/// The `inet` socket address QEMU's NBD client takes (`SocketAddress`).
fn inet(addr: &NbdAddr) -> Value {
    json!({"type": "inet", "host": addr.ip().to_string(), "port": addr.port().to_string()})
}

/// The same address in the legacy form `nbd-server-start` still takes (`SocketAddressLegacy`:
/// the fields under `data`).
fn inet_legacy(addr: &NbdAddr) -> Value {
    json!({"type": "inet", "data": {"host": addr.ip().to_string(), "port": addr.port().to_string()}})
}

/// Parses a `query-block-jobs` reply and picks the job `id`; None when it is not listed.
pub fn parse_block_job(reply: &Value, id: &str) -> Result<Option<MirrorJob>, QmpError> {
    let list = reply.as_array().ok_or_else(|| QmpError::Reply {
        command: "query-block-jobs".into(),
        message: "not a list".into(),
    })?;
    let Some(job) = list
        .iter()
        .find(|j| j.get("device").and_then(Value::as_str) == Some(id))
    else {
        return Ok(None);
    };
    let u = |k: &str| job.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Some(MirrorJob {
        offset: u("offset"),
        len: u("len"),
        ready: job.get("ready").and_then(Value::as_bool).unwrap_or(false),
        status: job
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        error: job.get("error").and_then(Value::as_str).map(str::to_string),
    }))
}

/// Parses a `query-block` reply and tells which of `disk`'s roots its device sits on: the
/// entry whose `qdev` is [`DiskNodes::qdev_path`], its `inserted.node-name`.
///
/// # Errors
/// [`QmpError::Reply`] when the reply is not a list, the device is not listed or has no
/// medium, or its root is not one of Drover's two ([`DiskNodes::root_named`]): a graph Drover
/// did not make is refused, never worked on.
pub fn parse_device_root(reply: &Value, disk: &DiskNodes) -> Result<DiskRoot, QmpError> {
    let bad = |message: String| QmpError::Reply {
        command: "query-block".into(),
        message,
    };
    let list = reply.as_array().ok_or_else(|| bad("not a list".into()))?;
    let qdev = disk.qdev_path();
    let entry = list
        .iter()
        .find(|b| b.get("qdev").and_then(Value::as_str) == Some(qdev.as_str()))
        .ok_or_else(|| bad(format!("no block device '{qdev}'")))?;
    let node = entry
        .pointer("/inserted/node-name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("device '{qdev}' has no node inserted")))?;
    disk.root_named(node).ok_or_else(|| {
        bad(format!(
            "device '{qdev}' sits on node '{node}', expected '{}' or '{}'",
            disk.root_node(DiskRoot::Format),
            disk.root_node(DiskRoot::CopyOnRead)
        ))
    })
}

/// Block-layer commands; implemented for every [`Qmp`].
#[async_trait]
pub trait BlockExt: Qmp {
    /// Starts QEMU's NBD server on `addr` (the destination's for a storage pre-copy, the
    /// source's for a post-copy).
    async fn nbd_server_start(&self, addr: &NbdAddr) -> Result<(), QmpError> {
        self.execute("nbd-server-start", Some(json!({"addr": inet_legacy(addr)})))
            .await
            .map(|_| ())
    }

    /// Destination: exports the disk's format node, writable, under [`DiskNodes::export_name`].
    async fn export_disk(&self, disk: &DiskNodes) -> Result<(), QmpError> {
        let args = json!({
            "type": "nbd",
            "id": disk.export_id(),
            "node-name": disk.format_node(),
            "name": disk.export_name(),
            "writable": true,
        });
        self.execute("block-export-add", Some(args))
            .await
            .map(|_| ())
    }

    /// Stops the NBD server (QEMU removes its exports with it).
    async fn nbd_server_stop(&self) -> Result<(), QmpError> {
        self.execute("nbd-server-stop", None).await.map(|_| ())
    }

    /// Source: adds an NBD client node for the destination's export of `disk`.
    async fn add_nbd_target(&self, disk: &DiskNodes, addr: &NbdAddr) -> Result<(), QmpError> {
        let args = json!({
            "driver": "nbd",
            "node-name": disk.target_node(),
            "server": inet(addr),
            "export": disk.export_name(),
        });
        self.execute("blockdev-add", Some(args)).await.map(|_| ())
    }

    /// Which root the guest's device of `disk` sits on (`query-block`, see
    /// [`parse_device_root`]): the format node, or the copy-on-read filter on a VM that
    /// arrived by a storage post-copy or hybrid.
    async fn device_root(&self, disk: &DiskNodes) -> Result<DiskRoot, QmpError> {
        let v = self.execute("query-block", None).await?;
        parse_device_root(&v, disk)
    }

    /// Source: mirrors the disk from its device's `root` (QEMU mirrors only from a root node;
    /// [`BlockExt::device_root`] tells which) into its NBD target, whole disk (`sync: full`).
    /// The job stays listed once it ended (`auto-dismiss: false`) so its end and error can be
    /// read by polling; [`BlockExt::dismiss_job`] removes it.
    async fn start_mirror(
        &self,
        disk: &DiskNodes,
        root: DiskRoot,
        mode: CopyMode,
    ) -> Result<(), QmpError> {
        let args = json!({
            "job-id": disk.mirror_job(),
            "device": disk.root_node(root),
            "target": disk.target_node(),
            "sync": "full",
            "copy-mode": mode.qapi_name(),
            "auto-dismiss": false,
        });
        self.execute("blockdev-mirror", Some(args))
            .await
            .map(|_| ())
    }

    /// The mirror job of `disk`, None when QEMU does not list it.
    async fn mirror_job(&self, disk: &DiskNodes) -> Result<Option<MirrorJob>, QmpError> {
        let v = self.execute("query-block-jobs", None).await?;
        parse_block_job(&v, disk.mirror_job())
    }

    /// Switches a running mirror to write-blocking (QEMU allows only this direction).
    async fn mirror_write_blocking(&self, disk: &DiskNodes) -> Result<(), QmpError> {
        let args = json!({
            "id": disk.mirror_job(),
            "type": "mirror",
            "copy-mode": CopyMode::WriteBlocking.qapi_name(),
        });
        self.execute("block-job-change", Some(args))
            .await
            .map(|_| ())
    }

    /// Cancels the mirror. A READY job without `force` finishes its last sync first and
    /// leaves a point-in-time copy; with `force` it is abandoned at once.
    async fn cancel_mirror(&self, disk: &DiskNodes, force: bool) -> Result<(), QmpError> {
        let args = json!({"device": disk.mirror_job(), "force": force});
        self.execute("block-job-cancel", Some(args))
            .await
            .map(|_| ())
    }

    /// Removes a concluded job (`id`: one of [`DiskNodes`]' job ids) from QEMU's list.
    async fn dismiss_job(&self, id: &str) -> Result<(), QmpError> {
        self.execute("job-dismiss", Some(json!({"id": id})))
            .await
            .map(|_| ())
    }

    /// Storage post-copy, source: exports the disk's format node read-only under
    /// [`DiskNodes::export_name`], allowed to stay while the node is inactive (QEMU 10.0's
    /// `allow-inactive`: without it the source cannot inactivate its disk at switchover).
    async fn export_source_disk(&self, disk: &DiskNodes) -> Result<(), QmpError> {
        let args = json!({
            "type": "nbd",
            "id": disk.export_id(),
            "node-name": disk.format_node(),
            "name": disk.export_name(),
            "writable": false,
            "allow-inactive": true,
        });
        self.execute("block-export-add", Some(args))
            .await
            .map(|_| ())
    }

    /// Whether QEMU lists the disk's export (`query-block-exports`).
    async fn has_export(&self, disk: &DiskNodes) -> Result<bool, QmpError> {
        let v = self.execute("query-block-exports", None).await?;
        let list = v.as_array().ok_or_else(|| QmpError::Reply {
            command: "query-block-exports".into(),
            message: "not a list".into(),
        })?;
        Ok(list
            .iter()
            .any(|e| e.get("id").and_then(Value::as_str) == Some(disk.export_id())))
    }

    /// Activates (or inactivates) the disk's format node (`blockdev-set-active`). A storage
    /// post-copy's source activates its disk again after the switchover: QEMU's NBD server
    /// answers only reads on an inactive node, and the stream needs block status.
    async fn set_disk_active(&self, disk: &DiskNodes, active: bool) -> Result<(), QmpError> {
        let args = json!({"node-name": disk.format_node(), "active": active});
        self.execute("blockdev-set-active", Some(args))
            .await
            .map(|_| ())
    }

    /// Storage post-copy, destination: pulls every block of the overlay's backing into it,
    /// then drops the backing (`block-stream` without a base). `on-error: stop` pauses the
    /// job on a read the source cannot serve (resumed by [`BlockExt::resume_job`]);
    /// `auto-dismiss` off so its end can be polled; `speed` in bytes/s, None: unlimited.
    async fn start_stream(&self, disk: &DiskNodes, speed: Option<u64>) -> Result<(), QmpError> {
        let mut args = json!({
            "job-id": disk.stream_job(),
            "device": disk.format_node(),
            "on-error": "stop",
            "auto-dismiss": false,
        });
        if let Some(bps) = speed {
            args["speed"] = json!(bps);
        }
        self.execute("block-stream", Some(args)).await.map(|_| ())
    }

    /// The stream job of `disk`, None when QEMU does not list it.
    async fn stream_job(&self, disk: &DiskNodes) -> Result<Option<MirrorJob>, QmpError> {
        let v = self.execute("query-block-jobs", None).await?;
        parse_block_job(&v, disk.stream_job())
    }

    /// Resumes a paused job (`id`: one of [`DiskNodes`]' job ids).
    async fn resume_job(&self, id: &str) -> Result<(), QmpError> {
        self.execute("block-job-resume", Some(json!({"device": id})))
            .await
            .map(|_| ())
    }

    /// Whether `disk`'s NBD client node ([`DiskNodes::target_node`]) is in QEMU's graph
    /// (`query-named-block-nodes`, flat).
    async fn has_nbd_target(&self, disk: &DiskNodes) -> Result<bool, QmpError> {
        let v = self
            .execute("query-named-block-nodes", Some(json!({"flat": true})))
            .await?;
        let nodes = v.as_array().ok_or_else(|| QmpError::Reply {
            command: "query-named-block-nodes".into(),
            message: "the reply is not a list of nodes".into(),
        })?;
        Ok(nodes
            .iter()
            .any(|n| n["node-name"].as_str() == Some(disk.target_node())))
    }

    /// Source: removes the NBD client node.
    async fn delete_nbd_target(&self, disk: &DiskNodes) -> Result<(), QmpError> {
        let args = json!({"node-name": disk.target_node()});
        self.execute("blockdev-del", Some(args)).await.map(|_| ())
    }

    /// Source: lets a migration stopped at `pre-switchover` go on.
    async fn migrate_continue(&self) -> Result<(), QmpError> {
        let args = json!({"state": "pre-switchover"});
        self.execute("migrate-continue", Some(args))
            .await
            .map(|_| ())
    }
}

impl<T: Qmp + ?Sized> BlockExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(node: &str) -> Value {
        json!({"device": "", "qdev": "/machine/peripheral/drover-disk0-dev/virtio-backend",
               "inserted": {"node-name": node, "drv": "qcow2"}})
    }

    #[test]
    fn the_device_root_is_read_from_query_block_and_only_drovers_roots_pass() {
        let disk = DiskNodes::of(0);
        let other = json!({"device": "", "qdev": "/machine/peripheral/x/virtio-backend",
                           "inserted": {"node-name": "drover-disk0-cor"}});
        let image = json!([other, device("drover-disk0")]);
        assert_eq!(parse_device_root(&image, &disk), Ok(DiskRoot::Format));
        let overlay = json!([device("drover-disk0-cor")]);
        assert_eq!(parse_device_root(&overlay, &disk), Ok(DiskRoot::CopyOnRead));
        for (reply, says) in [
            (
                json!([device("drover-disk0-file")]),
                "sits on node 'drover-disk0-file'",
            ),
            (json!([device("#block311")]), "expected 'drover-disk0' or"),
            (json!([other]), "no block device"),
            (json!([{"qdev": disk.qdev_path()}]), "has no node inserted"),
            (json!({}), "not a list"),
        ] {
            let err = parse_device_root(&reply, &disk).expect_err(says);
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn parses_the_mirror_job_from_query_block_jobs() {
        let reply = json!([
            {"device": "other", "offset": 1, "len": 2, "ready": false, "status": "running"},
            {"device": "drover-disk0-mirror", "type": "mirror", "offset": 4096, "len": 8192,
             "ready": true, "status": "ready", "busy": false, "paused": false, "speed": 0,
             "io-status": "ok", "auto-finalize": true, "auto-dismiss": false}
        ]);
        let job = parse_block_job(&reply, "drover-disk0-mirror")
            .expect("parse")
            .expect("listed");
        assert_eq!((job.offset, job.len, job.ready), (4096, 8192, true));
        assert_eq!(job.status, "ready");
        assert_eq!(job.error, None);
        let failed = json!([{"device": "j", "status": "concluded", "error": "Input/output error"}]);
        let job = parse_block_job(&failed, "j")
            .expect("parse")
            .expect("listed");
        assert!(job.concluded());
        assert_eq!(job.error.as_deref(), Some("Input/output error"));
        assert_eq!(parse_block_job(&json!([]), "j").expect("parse"), None);
        assert!(parse_block_job(&json!({}), "j").is_err());
    }
}
