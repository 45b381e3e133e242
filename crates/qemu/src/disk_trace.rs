//! Where on its disk a guest reads and writes, from QEMU's own trace events: the virtio-blk
//! device's `virtio_blk_handle_read` / `virtio_blk_handle_write` (one per guest request, with
//! its first 512-byte sector and sector count), switched on over QMP (`trace-event-set-state`)
//! for a profiling window only. QEMU's `log` trace backend (the Debian build's) writes them to
//! the VM's log file (`-D`, [`crate::launcher::RunPaths::trace_log`]), one line each:
//!
//! ```text
//! virtio_blk_handle_write vdev 0x55d0c0 req 0x7f3a10 sector 2048 nsectors 8
//! ```
//!
//! Only the guest's own requests are counted: block jobs (a storage migration's mirror or
//! stream) go through other block backends and never reach these device events.

use crate::qmp::{Qmp, QmpError};
use drover_core::migration::wan::DiskRequest;
use serde_json::json;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The two events, reads first.
pub const EVENTS: [&str; 2] = ["virtio_blk_handle_read", "virtio_blk_handle_write"];

/// Bytes in a virtio-blk sector (the unit of the events' `sector` and `nsectors`).
const SECTOR_BYTES: u64 = 512;

/// Most of the log one window reads, bytes (about 700,000 requests): a guest that makes more
/// in one window is profiled from the window's first part.
pub const MAX_WINDOW_LOG_BYTES: u64 = 64 << 20;

/// Errors of this module.
#[derive(Debug, Error)]
pub enum DiskTraceError {
    #[error("switching QEMU's trace events: {0}")]
    Qmp(#[from] QmpError),
    #[error("QEMU trace log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Switches both events on or off in the VM's QEMU.
pub async fn set_events(qmp: &dyn Qmp, enable: bool) -> Result<(), DiskTraceError> {
    for name in EVENTS {
        let args = json!({"name": name, "enable": enable});
        qmp.execute("trace-event-set-state", Some(args)).await?;
    }
    Ok(())
}

/// The log's length now, bytes: where a window's lines will start (0 for a log QEMU has not
/// written yet).
pub fn log_position(log: &Path) -> Result<u64, DiskTraceError> {
    match std::fs::metadata(log) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(DiskTraceError::Log {
            path: log.to_path_buf(),
            source,
        }),
    }
}

/// The requests logged from byte `from` on (at most [`MAX_WINDOW_LOG_BYTES`] of log); lines
/// that are not the two events are skipped.
pub fn read_requests(log: &Path, from: u64) -> Result<Vec<DiskRequest>, DiskTraceError> {
    let err = |source| DiskTraceError::Log {
        path: log.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(log).map_err(err)?;
    file.seek(SeekFrom::Start(from)).map_err(err)?;
    let mut text = Vec::new();
    file.take(MAX_WINDOW_LOG_BYTES)
        .read_to_end(&mut text)
        .map_err(err)?;
    // A last line cut by the cap, or still being written, is dropped: its numbers may be cut.
    let whole = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    text.truncate(whole);
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(parse_line)
        .collect())
}

/// One logged request, or None for any other line. The event name may carry a prefix (the log
/// backend's `PID@SECONDS:` when QEMU stamps messages); `sector` and `nsectors` are read by
/// name.
pub fn parse_line(line: &str) -> Option<DiskRequest> {
    let mut words = line.split_whitespace();
    let event = words.next()?;
    let write = if event.ends_with(EVENTS[1]) {
        true
    } else if event.ends_with(EVENTS[0]) {
        false
    } else {
        return None;
    };
    let (mut sector, mut count) = (None, None);
    while let Some(key) = words.next() {
        let value = words.next()?;
        match key {
            "sector" => sector = value.parse::<u64>().ok(),
            "nsectors" => count = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    Some(DiskRequest {
        write,
        offset_bytes: sector?.checked_mul(SECTOR_BYTES)?,
        len_bytes: count?.checked_mul(SECTOR_BYTES)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_events_and_skips_everything_else() {
        let w = parse_line("virtio_blk_handle_write vdev 0x55d0 req 0x7f3a sector 2048 nsectors 8");
        assert_eq!(
            w,
            Some(DiskRequest {
                write: true,
                offset_bytes: 2048 * 512,
                len_bytes: 4096
            })
        );
        let r = parse_line(
            "1234@1700000000.5:virtio_blk_handle_read vdev 0x1 req 0x2 sector 0 nsectors 1",
        );
        assert_eq!(
            r.map(|r| (r.write, r.offset_bytes, r.len_bytes)),
            Some((false, 0, 512))
        );
        for other in [
            "",
            "blk_co_preadv blk 0x1 bs 0x2 offset 0 bytes 4096 flags 0x0",
            "virtio_blk_handle_write vdev 0x1 req 0x2 sector 12",
            "virtio_blk_handle_write vdev 0x1 req 0x2 sector x nsectors 8",
            "virtio_blk_handle_write vdev 0x1 req 0x2 sector 99999999999999999 nsectors 8",
            "qemu-system-x86_64: warning: something else",
        ] {
            assert_eq!(parse_line(other), None, "{other:?}");
        }
    }

    #[test]
    fn reads_from_a_position_and_drops_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("trace.log");
        assert_eq!(log_position(&log).unwrap(), 0, "no log yet");
        std::fs::write(
            &log,
            "virtio_blk_handle_read vdev 0 req 0 sector 1 nsectors 1\n",
        )
        .unwrap();
        let from = log_position(&log).unwrap();
        let body = "virtio_blk_handle_write vdev 0 req 0 sector 8 nsectors 8\n\
                    virtio_blk_handle_write vdev 0 req 0 sector 16 nsectors 1";
        std::fs::write(
            &log,
            format!("{}{body}", std::fs::read_to_string(&log).unwrap()),
        )
        .unwrap();
        let got = read_requests(&log, from).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].write, got[0].offset_bytes), (true, 4096));
        let missing = read_requests(&dir.path().join("none.log"), 0).unwrap_err();
        assert!(missing.to_string().contains("none.log"), "{missing}");
    }
}
