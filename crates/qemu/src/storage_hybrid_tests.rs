use super::*;
use crate::qmp::ScriptedQmp;
use drover_core::migration::{HybridStep, StorageMode};
use serde_json::json;

fn target() -> HybridTarget {
    let addr = |s: &str| NbdAddr::new(s.parse().expect("addr")).expect("nbd");
    HybridTarget {
        disk: DiskNodes::of(0),
        source_nbd: addr("127.0.0.1:10901"),
        dest_nbd: addr("127.0.0.1:10902"),
    }
}

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

#[test]
fn names_derive_from_the_disks_node() {
    let n = PushNames::of(&DiskNodes::of(0));
    assert_eq!(
        (
            n.hot.as_str(),
            n.dirty.as_str(),
            n.scratch.as_str(),
            n.job.as_str()
        ),
        (
            "drover-disk0-hot",
            "drover-disk0-dirty",
            "drover-disk0-hotset",
            "drover-disk0-push"
        )
    );
}

/// The destination refuses its export: the push rolls back what it set up (the
/// destination's server) and the pull half's (the source's server); no memory migration.
#[tokio::test]
async fn a_refused_destination_export_rolls_everything_back() {
    let source = ScriptedQmp::new(|_, _| Ok(json!({})));
    let dest = ScriptedQmp::new(|cmd, _| match cmd {
        "block-export-add" => Err(QmpError::Command {
            command: cmd.into(),
            class: "GenericError".into(),
            desc: "Permission conflict".into(),
        }),
        _ => Ok(json!({})),
    });
    let mut session = HybridSession::export(&source, &target(), HybridConfig::default())
        .await
        .expect("export");
    let ends = Endpoints {
        source: &source,
        dest: &dest,
        uri: "tcp:127.0.0.1:1".into(),
        recover_uri: "tcp:127.0.0.1:2".into(),
    };
    let hot = HotSet::from_ranges(64 << 20, 65536, &[]).expect("hot");
    let dir = tempfile::tempdir().expect("dir");
    let run = session
        .migrate(
            &ends,
            &hot,
            dir.path(),
            MigrationPlan::fixed(drover_core::migration::Technique::Precopy),
            &DriverConfig::default(),
            &Clock::default(),
            None,
        )
        .await
        .expect("run");
    assert_eq!(run.outcome, PostcopyOutcome::RolledBack, "{run:?}");
    assert!(run.memory.is_none());
    assert_eq!(run.storage.mode, StorageMode::Hybrid);
    let error = run.storage.error.clone().expect("error");
    assert!(
        error.contains(HybridStep::DestExportAdd.name()) && error.contains("Permission"),
        "{error}"
    );
    assert_eq!(
        dest.command_names(),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert_eq!(
        source.command_names(),
        ["nbd-server-start", "block-export-add", "nbd-server-stop"]
    );
    assert!(run.errors.is_empty(), "{:?}", run.errors);
}
