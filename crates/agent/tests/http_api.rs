//! The HTTP API without QEMU: authentication, error mapping, hostile input, re-attach of a dead
//! VM as `lost`. The agent runs in-process on a loopback port.

use common::{ghost, stand_in_config, vm, TOKEN};
use drover_agent::model::VmRole;
use drover_agent::{start, AgentConfig, RunningAgent};
use drover_api::{AgentClient, AgentUrl, MigrationRequest, PowerState, VmStatus};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

mod common;

/// Stand-in image files, and a QEMU that does not exist: creating a VM must fail cleanly.
fn config(dir: &Path) -> AgentConfig {
    let mut c = stand_in_config(dir);
    c.qemu_binary = "/nonexistent/qemu-system-x86_64".into();
    c
}

async fn agent(dir: &Path) -> (RunningAgent, String) {
    common::run(config(dir)).await
}

/// Sends a raw request; returns status and JSON body (Null if not JSON).
async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, Value, String) {
    let http = reqwest::Client::new();
    let mut req = http.request(method.parse().expect("method"), url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

fn has_error(v: &Value) -> bool {
    v.get("error")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

#[tokio::test]
async fn auth_and_hostile_requests_get_json_4xx_and_the_agent_stays_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url) = agent(dir.path()).await;
    let u = |p: &str| format!("{url}{p}");

    let (s, v, _) = send("GET", &u("/v1/health"), None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));

    for (token, what) in [
        (None, "no token"),
        (Some("wrong"), "wrong token"),
        (Some(""), "empty token"),
    ] {
        let (s, v, _) = send("GET", &u("/v1/vms"), token, None).await;
        assert_eq!(s, 401, "{what}");
        assert!(has_error(&v), "{what}: {v}");
    }
    let (s, _, _) = send("GET", &u("/metrics"), None, None).await;
    assert_eq!(s, 401);
    // The scheme is case-insensitive (RFC 9110).
    let lower = reqwest::Client::new()
        .get(u("/v1/vms"))
        .header("Authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .expect("send");
    assert_eq!(lower.status().as_u16(), 200);

    let t = Some(TOKEN);
    let cases: Vec<(&str, String, Option<Vec<u8>>, u16)> = vec![
        ("POST", u("/v1/vms"), Some(b"{not json".to_vec()), 400),
        ("POST", u("/v1/vms"), Some(b"".to_vec()), 400),
        (
            "POST",
            u("/v1/vms"),
            Some(br#"{"name":1,"memory_bytes":134217728}"#.to_vec()),
            400,
        ),
        (
            "POST",
            u("/v1/vms"),
            Some(br#"{"name":"a","memory_bytes":134217728,"bogus":1}"#.to_vec()),
            400,
        ),
        (
            "POST",
            u("/v1/vms"),
            Some(br#"{"name":"a","memory_bytes":134217728,"vcpus":0}"#.to_vec()),
            422,
        ),
        ("POST", u("/v1/vms"), Some(vec![b' '; 200_000]), 413),
        ("POST", u("/v1/vms"), Some(vec![0xff, 0xfe, 0x00]), 400),
        ("GET", u("/v1/vms/nope"), None, 404),
        ("GET", u("/v1/vms/bad%20name"), None, 422),
        ("GET", u("/v1/vms/%ff%fe"), None, 400),
        ("DELETE", u("/v1/vms/nope"), None, 404),
        (
            "POST",
            u("/v1/vms/nope/migrations"),
            Some(br#"{"to":"http://127.0.0.1:1","technique":"precopy"}"#.to_vec()),
            404,
        ),
        (
            "POST",
            u("/v1/vms/nope/migrations"),
            Some(br#"{"to":"http://x","technique":"warp"}"#.to_vec()),
            422,
        ),
        (
            "POST",
            u("/v1/vms/nope/qmp"),
            Some(br#"{"execute":"quit"}"#.to_vec()),
            422,
        ),
        (
            "POST",
            u("/v1/vms/nope/qmp"),
            Some(br#"{"execute":"query-status"}"#.to_vec()),
            404,
        ),
        (
            "POST",
            u("/v1/vms/nope/workload"),
            Some(br#"{"workload":"cpu:demand=90"}"#.to_vec()),
            404,
        ),
        (
            "POST",
            u("/v1/vms/nope/workload"),
            Some(br#"{"workload":"cpu:demand=900"}"#.to_vec()),
            422,
        ),
        (
            "POST",
            u("/v1/vms/nope/workload"),
            Some(br#"{"workload":"idle","now":true}"#.to_vec()),
            400,
        ),
        ("POST", u("/v1/vms/nope/workload"), None, 400),
        // A second control line smuggled into the spec never reaches the guest.
        (
            "POST",
            u("/v1/vms/nope/workload"),
            Some(br#"{"workload":"cpu:demand=9\nset 99 idle"}"#.to_vec()),
            422,
        ),
        ("GET", u("/v1/migrations/nope"), None, 404),
        ("DELETE", u("/v1/migrations/nope"), None, 404),
        ("POST", u("/v1/incoming/nope/commit"), None, 404),
        ("DELETE", u("/v1/incoming/nope"), None, 404),
        (
            "POST",
            u("/v1/incoming"),
            Some(br#"{"config":{}}"#.to_vec()),
            400,
        ),
        ("GET", u("/v1/nowhere"), None, 404),
        (
            "GET",
            u(&format!("/v1/vms/{}", "a".repeat(5000))),
            None,
            414,
        ),
        ("PUT", u("/v1/vms"), None, 405),
        // Valid request, but this QEMU binary does not exist: a clean 500, not a crash.
        (
            "POST",
            u("/v1/vms"),
            Some(br#"{"name":"a","memory_bytes":134217728}"#.to_vec()),
            500,
        ),
    ];
    for (method, url, body, want) in cases {
        let (s, v, text) = send(method, &url, t, body).await;
        assert_eq!(s, want, "{method} {url}: {text}");
        assert!(has_error(&v), "{method} {url}: not a JSON error: {text}");
    }
    // The failed create left nothing behind: the name is free and nothing is listed.
    let (s, v, _) = send("GET", &u("/v1/vms"), t, None).await;
    assert_eq!((s, v), (200, json!([])));

    let (s, v, _) = send("GET", &u("/v1/metrics"), t, None).await;
    assert_eq!(s, 200);
    assert!(v["host"]["cpus"].as_f64().is_some_and(|c| c > 0.0), "{v}");
    let (s, _, text) = send("GET", &u("/metrics"), t, None).await;
    assert_eq!(s, 200);
    assert!(text.contains("drover_host_cpus"), "{text}");

    let (s, v, _) = send("GET", &u("/v1/health"), None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url) = agent(dir.path()).await;
    let (s, doc, _) = send("GET", &format!("{url}/v1/openapi.json"), Some(TOKEN), None).await;
    assert_eq!(s, 200);
    assert_eq!(doc, drover_api::openapi::document());
    for r in drover_api::openapi::ROUTES {
        let path = r.path.replace("{name}", "x").replace("{id}", "x");
        let method = r.method.as_str().to_ascii_uppercase();
        let (s, v, text) = send(&method, &format!("{url}{path}"), Some(TOKEN), None).await;
        assert_ne!(s, 405, "{method} {path} is documented but not routed");
        assert_ne!(v["error"], "no such route", "{method} {path}: {text}");
        let documented: Vec<u16> = std::iter::once(r.ok.0)
            .chain(r.errors.iter().copied())
            .collect();
        assert!(
            documented.contains(&s),
            "{method} {path} answered undocumented {s}: {text}"
        );
    }
}

#[tokio::test]
async fn a_vm_whose_qemu_died_is_reported_lost_not_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let store = drover_agent::store::Store::open(&cfg.state_dir).expect("store");
    // A pid that certainly is not a QEMU named "ghost" any more.
    let pid = save_ghost(&cfg, "ghost", "idle");
    let agent = start(cfg).await.expect("start");
    let client = client_of(&agent);
    let vms = client.list_vms().await.expect("list");
    assert_eq!(vms.len(), 1);
    assert_eq!(vms[0].status, VmStatus::Lost);
    assert!(
        vms[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains(&pid.to_string())),
        "{:?}",
        vms[0]
    );
    // A lost VM cannot be migrated, but can be deleted (which forgets it).
    let err = client
        .migrate(
            "ghost",
            &MigrationRequest {
                id: None,
                to: AgentUrl::parse("http://127.0.0.1:1").expect("url"),
                technique: drover_core::migration::Technique::Precopy,
                measure: true,
                knobs: drover_core::migration::PlanKnobs::default(),
            },
        )
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(409), "{err}");
    client.delete_vm("ghost").await.expect("delete");
    assert!(client.list_vms().await.expect("list").is_empty());
    assert!(store.load_vms().expect("load").is_empty());
}

/// Records a VM named `name` whose QEMU is certainly gone (it comes back `lost`); returns the
/// pid it had.
fn save_ghost(cfg: &AgentConfig, name: &str, workload: &str) -> u32 {
    let store = drover_agent::store::Store::open(&cfg.state_dir).expect("store");
    let record = ghost(vm(name, workload), VmRole::Running, store.run_dir(name));
    store.save_vm(&record).expect("save");
    record.pid
}

fn client_of(agent: &RunningAgent) -> AgentClient {
    common::client(&format!("http://{}", agent.addr))
}

fn stop(agent: RunningAgent) {
    agent.server.abort();
    agent.state.abort_tasks();
}

/// Standby and wake through the API: standby refuses new and incoming VMs until the host is
/// woken, waking lasts the wake delay (an hour here, so the test never waits for it), both
/// are idempotent, and the state is in health, metrics, Prometheus and a restarted agent.
#[tokio::test]
async fn standby_refuses_vms_until_woken_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.wake_delay = Duration::from_secs(3600);
    let agent = start(cfg.clone()).await.expect("start");
    let c = client_of(&agent);
    assert_eq!(c.health().await.expect("health").power, PowerState::Active);

    let standby = c.standby().await.expect("standby");
    assert_eq!(standby.state, PowerState::Standby);
    assert_eq!(standby.ready_at_unix_ms, None);
    assert_eq!(c.standby().await.expect("again"), standby, "idempotent");
    assert_eq!(c.health().await.expect("health").power, PowerState::Standby);
    assert_eq!(
        c.metrics().await.expect("metrics").host.power,
        PowerState::Standby
    );
    let url = format!("http://{}", agent.addr);
    let (_, _, text) = send("GET", &format!("{url}/metrics"), Some(TOKEN), None).await;
    assert!(
        text.contains("drover_host_power_state{state=\"standby\"} 1.0"),
        "{text}"
    );

    let vm = vm("a", "idle");
    let e = c.create_vm(&vm).await.expect_err("refused in standby");
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("host is in standby"), "{e}");
    let incoming = serde_json::to_vec(&json!({"config": vm, "migration_id": "m-1"})).expect("json");
    let (s, v, _) = send(
        "POST",
        &format!("{url}/v1/incoming"),
        Some(TOKEN),
        Some(incoming),
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (409, Some("host is in standby")));

    let waking = c.wake().await.expect("wake");
    assert_eq!(waking.state, PowerState::Waking);
    let ready = waking.ready_at_unix_ms.expect("a deadline");
    assert_eq!(ready - waking.since_unix_ms, 3_600_000);
    assert_eq!(c.wake().await.expect("again"), waking, "idempotent");
    let e = c.create_vm(&vm).await.expect_err("refused while waking");
    assert_eq!(e.status(), Some(409));
    assert!(e.to_string().contains("host is waking"), "{e}");
    let e = c.standby().await.expect_err("still booting");
    assert_eq!(e.status(), Some(409), "{e}");

    // A restarted agent is still waking, towards the same deadline.
    stop(agent);
    let agent = start(cfg).await.expect("restart");
    let c = client_of(&agent);
    assert_eq!(c.health().await.expect("health").power, PowerState::Waking);
    assert_eq!(c.wake().await.expect("wake"), waking);
    stop(agent);
}

/// With no wake delay a woken host is active at once and takes VMs again (this QEMU does not
/// exist, so the create gets as far as starting it: 500, not 409).
#[tokio::test]
async fn a_host_with_no_wake_delay_is_active_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.wake_delay = Duration::ZERO;
    let agent = start(cfg).await.expect("start");
    let c = client_of(&agent);
    c.standby().await.expect("standby");
    assert_eq!(c.wake().await.expect("wake").state, PowerState::Active);
    let vm = vm("a", "idle");
    let e = c.create_vm(&vm).await.expect_err("no QEMU");
    assert_eq!(e.status(), Some(500), "{e}");
    // The failed start released its admission: the host may stand by.
    assert_eq!(
        c.standby().await.expect("standby").state,
        PowerState::Standby
    );
    stop(agent);
}

/// Standby names what is still on the host, a lost VM included (it may still run, unseen);
/// once it is deleted the host may stand by. A lost VM takes no workload change.
#[tokio::test]
async fn standby_names_the_vms_still_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    save_ghost(&cfg, "ghost", "cpu:demand=10");
    let agent = start(cfg).await.expect("start");
    let c = client_of(&agent);
    let e = c.standby().await.expect_err("a VM is there");
    assert_eq!(e.status(), Some(409));
    assert!(e.to_string().contains("1 VM(s) (ghost)"), "{e}");
    let e = c
        .set_workload("ghost", "cpu:demand=90")
        .await
        .expect_err("lost");
    assert_eq!(e.status(), Some(409), "{e}");
    let e = c
        .set_workload("ghost", "cpu:demand=9000")
        .await
        .expect_err("not sent");
    assert_eq!(e.status(), None, "checked before sending: {e}");
    c.delete_vm("ghost").await.expect("delete");
    assert_eq!(c.standby().await.expect("empty").state, PowerState::Standby);
    stop(agent);
}

/// The reviewer's crash: a body nested thousands of levels deep (here as deep as the 64 KiB
/// body limit allows) on every POST path that reads a body is a 400 naming where it went too
/// deep, and the agent still answers afterwards.
#[tokio::test]
async fn deeply_nested_bodies_are_refused_on_every_post_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_agent, url) = agent(dir.path()).await;
    let depth = 32_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    for (path, field) in [
        ("/v1/vms", "name"),
        ("/v1/vms/a/workload", "workload"),
        ("/v1/vms/a/qmp", "arguments"),
        ("/v1/vms/a/migrations", "to"),
        ("/v1/incoming", "config"),
    ] {
        let body = format!(r#"{{"{field}":{nested}}}"#).into_bytes();
        assert!(
            body.len() <= drover_agent::api::BODY_LIMIT,
            "{}",
            body.len()
        );
        let (s, v, text) = send("POST", &format!("{url}{path}"), Some(TOKEN), Some(body)).await;
        assert_eq!(s, 400, "{path}: {text}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("{field}[0]")) && error.contains("32 levels"),
            "{path}: {error}"
        );
    }
    let (s, v, _) = send("GET", &format!("{url}/v1/health"), None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
}

/// `DELETE /v1/incoming/NAME` on a VM that never was incoming says just that; on one that
/// was and has been committed, it says which migration delivered it.
#[tokio::test]
async fn aborting_a_vm_that_is_not_incoming_says_which_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    save_ghost(&cfg, "plain", "idle");
    save_ghost(&cfg, "arrived", "idle");
    let store = drover_agent::store::Store::open(&cfg.state_dir).expect("store");
    let mut arrived = store
        .load_vms()
        .expect("load")
        .into_iter()
        .find(|v| v.config.name == "arrived")
        .expect("saved");
    arrived.arrived_by = Some("m-9".into());
    store.save_vm(&arrived).expect("save");
    let agent = start(cfg).await.expect("start");
    let client = client_of(&agent);
    let err = client.abort_incoming("plain").await.expect_err("refused");
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(
        err.to_string()
            .ends_with("VM 'plain' is not an incoming migration"),
        "{err}"
    );
    let err = client.abort_incoming("arrived").await.expect_err("refused");
    assert_eq!(err.status(), Some(409), "{err}");
    assert!(
        err.to_string()
            .contains("not an incoming migration any more")
            && err.to_string().contains("migration m-9"),
        "{err}"
    );
    stop(agent);
}
