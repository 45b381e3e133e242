//! Dirty bitmaps, block jobs by id and node facts for the storage hybrid's push, on top of
//! [`Qmp::execute`]. Node, bitmap and job names come from [`crate::disk::DiskNodes`]' names
//! (derived, never a peer's text).

use super::{parse_block_job, BlockExt, Qmp, QmpError};
use drover_core::migration::MirrorJob;
use serde_json::{json, Value};
use std::time::Duration;

/// `block-dirty-bitmap-add` on `node`: `granularity` bytes (None: QEMU's default, the
/// cluster size), `disabled` (records nothing) or enabled; never persistent.
pub(crate) async fn add_bitmap(
    qmp: &dyn Qmp,
    node: &str,
    name: &str,
    granularity: Option<u64>,
    disabled: bool,
) -> Result<(), QmpError> {
    let mut args = json!({"node": node, "name": name, "disabled": disabled});
    if let Some(g) = granularity {
        args["granularity"] = json!(g);
    }
    qmp.execute("block-dirty-bitmap-add", Some(args))
        .await
        .map(|_| ())
}

pub(crate) async fn remove_bitmap(qmp: &dyn Qmp, node: &str, name: &str) -> Result<(), QmpError> {
    let args = json!({"node": node, "name": name});
    qmp.execute("block-dirty-bitmap-remove", Some(args))
        .await
        .map(|_| ())
}

/// The node `node` as `query-named-block-nodes` (flat) lists it.
pub(crate) async fn named_node(qmp: &dyn Qmp, node: &str) -> Result<Value, QmpError> {
    let v = qmp
        .execute("query-named-block-nodes", Some(json!({"flat": true})))
        .await?;
    let reply = |message: String| QmpError::Reply {
        command: "query-named-block-nodes".into(),
        message,
    };
    v.as_array()
        .ok_or_else(|| reply("not a list".into()))?
        .iter()
        .find(|n| n.get("node-name").and_then(Value::as_str) == Some(node))
        .cloned()
        .ok_or_else(|| reply(format!("no node '{node}'")))
}

/// Bytes the bitmap `name` on `node` marks (its `count`).
pub(crate) async fn bitmap_count(qmp: &dyn Qmp, node: &str, name: &str) -> Result<u64, QmpError> {
    parse_bitmap_count(&named_node(qmp, node).await?, name)
}

pub(crate) fn parse_bitmap_count(node: &Value, name: &str) -> Result<u64, QmpError> {
    node.get("dirty-bitmaps")
        .and_then(Value::as_array)
        .and_then(|l| {
            l.iter()
                .find(|b| b.get("name").and_then(Value::as_str) == Some(name))
        })
        .and_then(|b| b.get("count").and_then(Value::as_u64))
        .ok_or_else(|| QmpError::Reply {
            command: "query-named-block-nodes".into(),
            message: format!("no dirty bitmap '{name}' with a count"),
        })
}

/// The size the image file under `node` takes on the host, bytes (`image.actual-size`).
pub(crate) async fn file_size(qmp: &dyn Qmp, node: &str) -> Result<u64, QmpError> {
    let n = named_node(qmp, node).await?;
    n.pointer("/image/actual-size")
        .and_then(Value::as_u64)
        .ok_or_else(|| QmpError::Reply {
            command: "query-named-block-nodes".into(),
            message: format!("no actual-size for '{node}'"),
        })
}

pub(crate) async fn push_job(qmp: &dyn Qmp, id: &str) -> Result<Option<MirrorJob>, QmpError> {
    let v = qmp.execute("query-block-jobs", None).await?;
    parse_block_job(&v, id)
}

/// Force-cancels the push job if it still runs, then dismisses it once concluded (bounded:
/// a second at most).
pub(crate) async fn abandon_job(qmp: &dyn Qmp, id: &str) -> Result<(), QmpError> {
    for _ in 0..100 {
        match push_job(qmp, id).await? {
            None => return Ok(()),
            Some(j) if j.concluded() => return qmp.dismiss_job(id).await,
            Some(j) => {
                if j.status != "aborting" {
                    let args = json!({"device": id, "force": true});
                    qmp.execute("block-job-cancel", Some(args)).await?;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    Err(QmpError::Reply {
        command: "block-job-cancel".into(),
        message: format!("job '{id}' did not conclude within a second"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bitmap_count_is_read_from_the_nodes_list() {
        let node = json!({"node-name": "drover-disk0", "dirty-bitmaps": [
            {"name": "drover-disk0-hot", "count": 17825792, "granularity": 65536},
            {"name": "drover-disk0-dirty", "count": 0, "granularity": 65536}]});
        assert_eq!(
            parse_bitmap_count(&node, "drover-disk0-hot").expect("count"),
            17825792
        );
        assert_eq!(
            parse_bitmap_count(&node, "drover-disk0-dirty").expect("count"),
            0
        );
        let err = parse_bitmap_count(&node, "other").expect_err("missing");
        assert!(err.to_string().contains("other"), "{err}");
        assert!(parse_bitmap_count(&json!({}), "x").is_err());
    }
}
