//! Typed QMP commands used by Drover, on top of [`Qmp::execute`].

use super::{Qmp, QmpError};
use async_trait::async_trait;
use drover_core::migration::{Capability, MigrationStatus, ParameterUpdate, Progress, RamProgress};
use serde_json::{json, Map, Value};

/// `query-status`, reduced to what Drover needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    pub running: bool,
    /// QEMU's RunState name, e.g. `running`, `paused`, `inmigrate`, `postmigrate`.
    pub status: String,
}

fn reply_error(command: &str, message: impl Into<String>) -> QmpError {
    QmpError::Reply {
        command: command.to_string(),
        message: message.into(),
    }
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Parses a `query-migrate` reply into core's [`Progress`].
pub fn parse_progress(now_ms: u64, v: &Value) -> Result<Progress, QmpError> {
    let status = match v.get("status").and_then(Value::as_str) {
        None => None,
        Some(s) => Some(
            s.parse::<MigrationStatus>()
                .map_err(|e| reply_error("query-migrate", e.to_string()))?,
        ),
    };
    // QEMU leaves `ram` out before the start and after a cancel or failure: not reported is
    // not the same as nothing sent.
    let ram = v
        .get("ram")
        .filter(|r| r.is_object())
        .map(|ram| RamProgress {
            transferred: u64_at(ram, "transferred"),
            remaining: u64_at(ram, "remaining"),
            total: u64_at(ram, "total"),
            dirty_sync_count: u64_at(ram, "dirty-sync-count"),
            postcopy_requests: u64_at(ram, "postcopy-requests"),
        });
    Ok(Progress {
        now_ms,
        status,
        ram,
        downtime_ms: v.get("downtime").and_then(Value::as_u64),
        total_time_ms: v.get("total-time").and_then(Value::as_u64),
        throttle_pct: v.get("cpu-throttle-percentage").and_then(Value::as_u64),
        error: v
            .get("error-desc")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The JSON object for a `migrate-set-parameters` update (only set fields).
pub fn parameters_json(p: &ParameterUpdate) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            m.insert(k.to_string(), json!(v));
        }
    };
    put("max-bandwidth", p.max_bandwidth);
    put("max-postcopy-bandwidth", p.max_postcopy_bandwidth);
    put("downtime-limit", p.downtime_limit_ms);
    put(
        "cpu-throttle-initial",
        p.cpu_throttle_initial.map(u64::from),
    );
    put(
        "cpu-throttle-increment",
        p.cpu_throttle_increment.map(u64::from),
    );
    put("max-cpu-throttle", p.max_cpu_throttle.map(u64::from));
    put("vcpu-dirty-limit", p.vcpu_dirty_limit_mb_s);
    Value::Object(m)
}

/// Typed commands; implemented for every [`Qmp`].
#[async_trait]
pub trait QmpExt: Qmp {
    async fn query_status(&self) -> Result<VmStatus, QmpError> {
        let v = self.execute("query-status", None).await?;
        let running = v
            .get("running")
            .and_then(Value::as_bool)
            .ok_or_else(|| reply_error("query-status", "no 'running' field"))?;
        let status = v
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        Ok(VmStatus { running, status })
    }

    async fn query_migrate(&self, now_ms: u64) -> Result<Progress, QmpError> {
        let v = self.execute("query-migrate", None).await?;
        parse_progress(now_ms, &v)
    }

    /// Names of the migration capabilities this QEMU knows.
    async fn supported_capabilities(&self) -> Result<Vec<String>, QmpError> {
        let v = self.execute("query-migrate-capabilities", None).await?;
        let list = v
            .as_array()
            .ok_or_else(|| reply_error("query-migrate-capabilities", "not a list"))?;
        Ok(list
            .iter()
            .filter_map(|c| {
                c.get("capability")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect())
    }

    /// Turns `caps` on and every other capability Drover manages off.
    async fn set_capabilities(&self, caps: &[Capability]) -> Result<(), QmpError> {
        let list: Vec<Value> = Capability::ALL
            .iter()
            .map(|c| json!({"capability": c.qapi_name(), "state": caps.contains(c)}))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(|_| ())
    }

    async fn set_parameters(&self, update: &ParameterUpdate) -> Result<(), QmpError> {
        let args = parameters_json(update);
        if args.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        self.execute("migrate-set-parameters", Some(args))
            .await
            .map(|_| ())
    }

    async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(|_| ())
    }

    /// Resumes a paused post-copy towards a destination that runs `migrate-recover`.
    async fn migrate_resume(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri, "resume": true })))
            .await
            .map(|_| ())
    }

    async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(|_| ())
    }

    async fn migrate_recover(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-recover", Some(json!({ "uri": uri })))
            .await
            .map(|_| ())
    }

    async fn migrate_start_postcopy(&self) -> Result<(), QmpError> {
        self.execute("migrate-start-postcopy", None)
            .await
            .map(|_| ())
    }

    async fn migrate_cancel(&self) -> Result<(), QmpError> {
        self.execute("migrate_cancel", None).await.map(|_| ())
    }

    /// Forces a post-copy into the paused state (as a network failure would).
    async fn migrate_pause(&self) -> Result<(), QmpError> {
        self.execute("migrate-pause", None).await.map(|_| ())
    }

    async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(|_| ())
    }

    /// Starts a dirty page rate measurement over `ms` milliseconds (page sampling, 4096 pages per
    /// GiB: the most QEMU allows; short windows on small guests are too coarse with fewer).
    async fn calc_dirty_rate(&self, ms: u64) -> Result<(), QmpError> {
        let args = json!({"calc-time": ms, "calc-time-unit": "millisecond", "sample-pages": 4096});
        self.execute("calc-dirty-rate", Some(args))
            .await
            .map(|_| ())
    }

    /// The last measurement's dirty rate in MB/s, once measured.
    async fn query_dirty_rate(&self) -> Result<Option<u64>, QmpError> {
        let v = self.execute("query-dirty-rate", None).await?;
        match v.get("status").and_then(Value::as_str) {
            Some("measured") => Ok(v.get("dirty-rate").and_then(Value::as_u64)),
            _ => Ok(None),
        }
    }

    async fn quit(&self) -> Result<(), QmpError> {
        self.execute("quit", None).await.map(|_| ())
    }
}

impl<T: Qmp + ?Sized> QmpExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_query_migrate_reply() {
        let v = json!({
            "status": "active", "total-time": 1234, "expected-downtime": 300,
            "ram": {"transferred": 1000, "remaining": 2000, "total": 4000,
                    "dirty-sync-count": 3, "postcopy-requests": 7}
        });
        let p = parse_progress(42, &v).expect("parse");
        assert_eq!(p.status, Some(MigrationStatus::Active));
        let ram = p.ram.expect("ram block");
        assert_eq!(
            (
                ram.transferred,
                ram.remaining,
                ram.total,
                ram.dirty_sync_count
            ),
            (1000, 2000, 4000, 3)
        );
        assert_eq!(ram.postcopy_requests, 7);
        assert_eq!(p.total_time_ms, Some(1234));
        assert_eq!(p.now_ms, 42);
        assert!(parse_progress(0, &json!({"status": "bogus"})).is_err());
        assert_eq!(parse_progress(0, &json!({})).expect("empty").status, None);
        // QEMU 10 after a cancel: no RAM block, which is "not reported", not zero.
        let cancelled = parse_progress(0, &json!({"status": "cancelled"})).expect("parse");
        assert_eq!(cancelled.ram, None);
    }

    #[test]
    fn parameter_json_has_only_set_fields() {
        let p = ParameterUpdate {
            downtime_limit_ms: Some(500),
            max_cpu_throttle: Some(99),
            ..ParameterUpdate::default()
        };
        assert_eq!(
            parameters_json(&p),
            json!({"downtime-limit": 500, "max-cpu-throttle": 99})
        );
    }
}
