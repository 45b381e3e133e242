//! The real QMP client over a unix socket.

use super::{Qmp, QmpError, QmpEvent};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Events kept when nobody drains them; older ones are dropped.
const EVENT_BUFFER: usize = 1024;

/// Commands sent out-of-band (`exec-oob`) when QEMU offers the `oob` capability: the two that
/// repair a paused post-copy. On a post-copy destination a vCPU thread can hold the main loop while
/// it waits for a page that will never come over a broken link, so an in-band `migrate-recover`
/// would wait behind it (it timed out after 30 s once in migrate_real); QEMU's schema marks both
/// `allow-oob`, and they then run in the monitor's own thread.
const OOB_COMMANDS: &[&str] = &["migrate-recover", "migrate-pause"];

/// Most in-band commands left unanswered before new ones are refused (out-of-band ones still go).
/// With `oob` on, QEMU queues in-band commands while one runs and stops reading the socket once
/// 7 wait (its `QMP_REQ_QUEUE_LEN_MAX` of 8), out-of-band ones included: a main loop held by a
/// missing post-copy page, polled by our monitoring, would otherwise lock out the very
/// `migrate-recover` that frees it. A command that timed out here still counts until QEMU
/// answers it.
const MAX_UNANSWERED_IN_BAND: usize = 4;

type Unanswered = Arc<Mutex<HashSet<u64>>>;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>;

/// A connected, negotiated QMP session.
pub struct QmpClient {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    events: Arc<Mutex<VecDeque<QmpEvent>>>,
    next_id: AtomicU64,
    timeout: Duration,
    reader: JoinHandle<()>,
    /// Whether `oob` was negotiated, so [`OOB_COMMANDS`] go out with `exec-oob`.
    oob: bool,
    /// In-band commands sent and not answered yet (whether or not anyone still waits).
    unanswered: Unanswered,
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave them inconsistent (plain inserts/removes).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl QmpClient {
    /// Connects to `path`, retrying until `wait` has passed (QEMU creates the socket a moment
    /// after it starts), reads the greeting and leaves capability negotiation mode, enabling
    /// out-of-band execution when the greeting offers it (see [`OOB_COMMANDS`]).
    pub async fn connect(path: &Path, wait: Duration, timeout: Duration) -> Result<Self, QmpError> {
        let stream = connect_retry(path, wait).await?;
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout {
                command: "greeting".into(),
                ms: timeout.as_millis() as u64,
            })?
            .map_err(|e| QmpError::Io(e.to_string()))?
            .ok_or(QmpError::Closed)?;
        let greeting: Value =
            serde_json::from_str(&greeting).map_err(|e| QmpError::Protocol(e.to_string()))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected a QMP greeting, got {greeting}"
            )));
        }
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<VecDeque<QmpEvent>>> = Arc::default();
        let unanswered: Unanswered = Arc::default();
        let reader = tokio::spawn(read_loop(
            lines,
            pending.clone(),
            events.clone(),
            unanswered.clone(),
        ));
        let mut client = QmpClient {
            writer: tokio::sync::Mutex::new(write),
            pending,
            events,
            next_id: AtomicU64::new(1),
            timeout,
            reader,
            oob: false,
            unanswered,
        };
        let oob = offers_oob(&greeting);
        let enable = oob.then(|| json!({ "enable": ["oob"] }));
        client.execute("qmp_capabilities", enable).await?;
        client.oob = oob;
        Ok(client)
    }

    /// Whether out-of-band execution was negotiated with this QEMU.
    pub fn out_of_band(&self) -> bool {
        self.oob
    }
}

/// Whether a greeting (`{"QMP": {"version": .., "capabilities": [..]}}`) offers `oob`.
fn offers_oob(greeting: &Value) -> bool {
    greeting["QMP"]["capabilities"]
        .as_array()
        .is_some_and(|caps| caps.iter().any(|c| c.as_str() == Some("oob")))
}

async fn connect_retry(path: &Path, wait: Duration) -> Result<UnixStream, QmpError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(QmpError::Connect {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// QMP stamps events as `{"seconds": s, "microseconds": us}`.
fn event_timestamp_us(msg: &Value) -> Option<u64> {
    let ts = msg.get("timestamp")?;
    let secs = ts.get("seconds")?.as_u64()?;
    let micros = ts.get("microseconds")?.as_u64()?;
    Some(secs * 1_000_000 + micros)
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pending: Pending,
    events: Arc<Mutex<VecDeque<QmpEvent>>>,
    unanswered: Unanswered,
) {
    while let Ok(Some(line)) = lines.next_line().await {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            tracing::warn!(%line, "ignoring unparsable QMP line");
            continue;
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let mut ev = lock(&events);
            if ev.len() >= EVENT_BUFFER {
                ev.pop_front();
            }
            ev.push_back(QmpEvent {
                name: name.to_string(),
                data: msg.get("data").cloned().unwrap_or(Value::Null),
                timestamp_us: event_timestamp_us(&msg),
            });
            continue;
        }
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            continue;
        };
        lock(&unanswered).remove(&id);
        let Some(tx) = lock(&pending).remove(&id) else {
            continue;
        };
        let reply = match (msg.get("return"), msg.get("error")) {
            (Some(ret), _) => Ok(ret.clone()),
            (None, Some(err)) => Err(QmpError::Command {
                command: String::new(),
                class: err
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                desc: err
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            }),
            _ => Err(QmpError::Protocol(format!(
                "reply without return or error: {line}"
            ))),
        };
        let _ = tx.send(reply);
    }
    // Connection gone: fail everything still waiting.
    for (_, tx) in lock(&pending).drain() {
        let _ = tx.send(Err(QmpError::Closed));
    }
}

#[async_trait]
impl Qmp for QmpClient {
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        if self.reader.is_finished() {
            return Err(QmpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let oob = self.oob && OOB_COMMANDS.contains(&command);
        let key = if oob { "exec-oob" } else { "execute" };
        if !oob {
            let mut waiting = lock(&self.unanswered);
            if waiting.len() >= MAX_UNANSWERED_IN_BAND {
                return Err(QmpError::Busy {
                    command: command.to_string(),
                    unanswered: waiting.len(),
                });
            }
            waiting.insert(id);
        }
        let mut request = json!({ key: command, "id": id });
        if let Some(args) = arguments {
            request["arguments"] = args;
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut bytes = request.to_string().into_bytes();
        bytes.push(b'\n');
        let written = self.writer.lock().await.write_all(&bytes).await;
        if let Err(e) = written {
            lock(&self.pending).remove(&id);
            lock(&self.unanswered).remove(&id);
            return Err(QmpError::Io(e.to_string()));
        }
        let reply = tokio::time::timeout(self.timeout, rx).await;
        lock(&self.pending).remove(&id);
        match reply {
            Err(_) => Err(QmpError::Timeout {
                command: command.to_string(),
                ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(_)) => Err(QmpError::Closed),
            Ok(Ok(Err(QmpError::Command { class, desc, .. }))) => Err(QmpError::Command {
                command: command.to_string(),
                class,
                desc,
            }),
            Ok(Ok(r)) => r,
        }
    }

    fn take_events(&self) -> Vec<QmpEvent> {
        lock(&self.events).drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A tiny QMP server speaking just enough protocol, answering by a function of the request.
    async fn serve(listener: UnixListener, answer: fn(&Value) -> Option<Value>) {
        let (stream, _) = listener.accept().await.expect("accept");
        let (r, mut w) = stream.into_split();
        w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .expect("greet");
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).expect("json");
            w.write_all(b"{\"event\": \"RESUME\", \"data\": {}, \"timestamp\": {\"seconds\": 2, \"microseconds\": 5}}\n").await.expect("event");
            if let Some(mut reply) = answer(&req) {
                reply["id"] = req["id"].clone();
                w.write_all(format!("{reply}\n").as_bytes())
                    .await
                    .expect("reply");
            }
        }
    }

    fn answers(req: &Value) -> Option<Value> {
        match req["execute"].as_str() {
            Some("qmp_capabilities") => Some(json!({"return": {}})),
            Some("query-status") => Some(json!({"return": {"status": "running", "running": true}})),
            Some("hang") => None,
            _ => Some(json!({"error": {"class": "CommandNotFound", "desc": "nope"}})),
        }
    }

    #[tokio::test]
    async fn negotiates_runs_commands_and_collects_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(serve(listener, answers));
        let c = QmpClient::connect(&path, Duration::from_secs(2), Duration::from_millis(300))
            .await
            .expect("connect");
        let status = c.execute("query-status", None).await.expect("status");
        assert_eq!(status["status"], "running");
        let err = c.execute("frobnicate", None).await.unwrap_err();
        assert_eq!(
            err,
            QmpError::Command {
                command: "frobnicate".into(),
                class: "CommandNotFound".into(),
                desc: "nope".into()
            }
        );
        assert!(matches!(
            c.execute("hang", None).await,
            Err(QmpError::Timeout { .. })
        ));
        let events = c.take_events();
        assert!(events
            .iter()
            .any(|e| e.name == "RESUME" && e.timestamp_us == Some(2_000_005)));
    }

    /// Serves a greeting with `caps`, answers every request `{}` and sends the requests it saw.
    async fn serve_recording(
        listener: UnixListener,
        caps: Value,
        seen: tokio::sync::mpsc::UnboundedSender<Value>,
    ) {
        let (stream, _) = listener.accept().await.expect("accept");
        let (r, mut w) = stream.into_split();
        let greeting = json!({"QMP": {"version": {}, "capabilities": caps}});
        w.write_all(format!("{greeting}\n").as_bytes())
            .await
            .expect("greet");
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let req: Value = serde_json::from_str(&line).expect("json");
            let reply = json!({"return": {}, "id": req["id"].clone()});
            // Recorded before the reply, so the client sees every request once it has its answer.
            let _ = seen.send(req);
            w.write_all(format!("{reply}\n").as_bytes())
                .await
                .expect("reply");
        }
    }

    async fn requests_with(caps: Value) -> (bool, Vec<Value>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(serve_recording(listener, caps, tx));
        let c = QmpClient::connect(&path, Duration::from_secs(2), Duration::from_secs(2))
            .await
            .expect("connect");
        for cmd in ["query-status", "migrate-recover", "migrate-pause"] {
            c.execute(cmd, None).await.expect(cmd);
        }
        let mut seen = Vec::new();
        while let Ok(req) = rx.try_recv() {
            seen.push(req);
        }
        (c.out_of_band(), seen)
    }

    #[tokio::test]
    async fn offered_oob_is_enabled_and_used_for_recovery_commands_only() {
        let (oob, seen) = requests_with(json!(["oob"])).await;
        assert!(oob);
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
        assert_eq!(seen[0]["arguments"], json!({"enable": ["oob"]}));
        assert_eq!(seen[1]["execute"], "query-status");
        assert_eq!(seen[2]["exec-oob"], "migrate-recover");
        assert_eq!(seen[3]["exec-oob"], "migrate-pause");
        assert!(seen.iter().all(|r| r["id"].is_u64()), "{seen:?}");
    }

    #[tokio::test]
    async fn without_oob_in_the_greeting_everything_is_in_band() {
        let (oob, seen) = requests_with(json!([])).await;
        assert!(!oob);
        assert!(seen[0].get("arguments").is_none(), "{seen:?}");
        assert_eq!(seen[2]["execute"], "migrate-recover");
        assert_eq!(seen[3]["execute"], "migrate-pause");
    }

    #[tokio::test]
    async fn a_qemu_that_stops_answering_gets_no_more_in_band_commands_but_oob_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Answers the negotiation and out-of-band commands only, like a QEMU whose main loop
        // waits for a page; reports every request it read.
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (r, mut w) = stream.into_split();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\n")
                .await
                .expect("greet");
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&line).expect("json");
                let answer = req["execute"] == "qmp_capabilities" || req.get("exec-oob").is_some();
                let _ = tx.send(req.clone());
                if answer {
                    let reply = json!({"return": {}, "id": req["id"].clone()});
                    w.write_all(format!("{reply}\n").as_bytes())
                        .await
                        .expect("reply");
                }
            }
        });
        let c = QmpClient::connect(&path, Duration::from_secs(2), Duration::from_millis(50))
            .await
            .expect("connect");
        for _ in 0..MAX_UNANSWERED_IN_BAND {
            assert!(matches!(
                c.execute("query-migrate", None).await,
                Err(QmpError::Timeout { .. })
            ));
        }
        let refused = c.execute("query-status", None).await.unwrap_err();
        assert_eq!(
            refused,
            QmpError::Busy {
                command: "query-status".into(),
                unanswered: MAX_UNANSWERED_IN_BAND
            }
        );
        assert!(refused.to_string().contains("post-copy page"), "{refused}");
        c.execute("migrate-recover", Some(json!({"uri": "tcp:127.0.0.1:1"})))
            .await
            .expect("out-of-band still goes");
        let mut seen = Vec::new();
        while let Ok(req) = rx.try_recv() {
            seen.push(req);
        }
        // Negotiation, the 4 unanswered, the recover: the refused one never reached QEMU.
        assert_eq!(seen.len(), 2 + MAX_UNANSWERED_IN_BAND, "{seen:?}");
        assert!(seen.iter().all(|r| r["execute"] != "query-status"));
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("none.sock");
        let Err(err) =
            QmpClient::connect(&path, Duration::from_millis(50), Duration::from_millis(50)).await
        else {
            panic!("must fail")
        };
        assert!(err.to_string().contains("none.sock"), "{err}");
    }

    #[tokio::test]
    async fn peer_closing_fails_pending_and_later_commands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (r, mut w) = stream.into_split();
            w.write_all(b"{\"QMP\": {}}\n").await.expect("greet");
            let mut lines = BufReader::new(r).lines();
            let line = lines.next_line().await.expect("read").expect("line");
            let req: Value = serde_json::from_str(&line).expect("json");
            w.write_all(format!("{{\"return\": {{}}, \"id\": {}}}\n", req["id"]).as_bytes())
                .await
                .expect("reply");
            // Read one more request and hang up without answering.
            let _ = lines.next_line().await;
        });
        let c = QmpClient::connect(&path, Duration::from_secs(2), Duration::from_secs(5))
            .await
            .expect("connect");
        let result = c.execute("query-status", None).await;
        server.await.expect("server");
        assert_eq!(result, Err(QmpError::Closed));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(c.execute("query-status", None).await, Err(QmpError::Closed));
    }
}
