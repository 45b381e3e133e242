//! The configuration file: what a good one gives, and that each kind of bad one is refused
//! naming the file and the key (and, for what toml itself refuses, the line).

use super::*;
use drover_core::control::Mode;

const TWO_AGENTS: &str = r#"
token_file = "token"

[[agents]]
name = "h1"
url = "http://198.18.0.11:7300"

[[agents]]
name = "h2"
url = "http://198.18.0.12:7300/"
token_file = "/etc/drover/h2.token"
"#;

fn parse(text: &str) -> Result<ManagerConfig, ConfigError> {
    let c = ManagerConfig::parse(text, Path::new("/etc/drover/manager.toml"))?;
    c.validate()?;
    Ok(c)
}

/// The dotted key an `Invalid` error names.
fn invalid_field(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

/// toml's message for what it refuses.
fn parse_error(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Parse { message, .. }) => message,
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn only_the_agents_are_needed_and_every_default_is_the_owning_types() {
    let c = parse(TWO_AGENTS).expect("valid");
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(
        c.control,
        ControlSettings::default(),
        "core's defaults, not copies"
    );
    assert_eq!(c.cadence, LoopConfig::default());
    assert_eq!(c.poll, PollConfig::default());
    assert_eq!(c.retention, Retention::default());
    assert_eq!(c.api, ApiConfig::default());
    assert_eq!(c.api.listen.to_string(), crate::api::DEFAULT_LISTEN);
    let names: Vec<_> = c.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["h1", "h2"]);
    assert_eq!(
        c.agents[1].url.as_str(),
        "http://198.18.0.12:7300",
        "normalised"
    );
    let inventory = c.inventory();
    assert_eq!(inventory[0].agent_url, "http://198.18.0.11:7300");
    assert_eq!(inventory[0].power, None);
}

#[test]
fn every_table_is_read_into_its_type() {
    let text = format!(
        "{TWO_AGENTS}\n{}",
        r#"
[api]
listen = "0.0.0.0:7900"
token_file = "api.token"

[loop]
interval_s = 0.5
compact_every_s = 120

[poll]
timeout_s = 0.4
miss_limit = 5

[retention]
raw_s = 300

[control]
mode = "recommend"
hot = 0.85
hot_samples = 5
standby = false

[control.power.h2]
idle_w = 60
peak_w = 180
"#
    );
    let c = parse(&text).expect("valid");
    assert_eq!(
        (c.cadence.interval_s, c.cadence.compact_every_s),
        (0.5, 120.0)
    );
    assert_eq!(
        c.cadence.keep_final_plans_s,
        LoopConfig::default().keep_final_plans_s
    );
    assert_eq!((c.poll.timeout_s, c.poll.miss_limit), (0.4, 5));
    assert_eq!(c.retention.raw_s, 300);
    assert_eq!(c.api.listen.port(), 7900);
    assert_eq!(c.api.token_file, Some(PathBuf::from("api.token")));
    assert_eq!(c.control.mode, Mode::Recommend);
    assert_eq!((c.control.hot, c.control.hot_samples), (0.85, 5));
    assert!(!c.control.standby);
    assert_eq!(c.control.target, ControlSettings::default().target);
    let h2 = &c.inventory()[1];
    assert_eq!(
        h2.power,
        Some(PowerModel {
            idle_w: 60.0,
            peak_w: 180.0
        })
    );
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.toml");
    let err = ManagerConfig::load(&path).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("nope.toml") && text.contains("cannot read"),
        "{text}"
    );
}

/// "line N", N being the line of `text` that starts with `needle`.
fn line_of(text: &str, needle: &str) -> String {
    let n = text
        .lines()
        .position(|l| l.starts_with(needle))
        .expect("the needle is in the text");
    format!("line {}", n + 1)
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = format!("{TWO_AGENTS}\nhott = 1\n");
    let top = parse_error(&text);
    assert!(top.contains("unknown field `hott`"), "{top}");
    assert!(top.contains(&line_of(&text, "hott")), "{top}");
    let text = format!("{TWO_AGENTS}\n[control]\nhott = 0.9\n");
    let nested = parse_error(&text);
    assert!(nested.contains("unknown field `hott`"), "{nested}");
    assert!(nested.contains(&line_of(&text, "hott")), "{nested}");
    let agent = parse_error("[[agents]]\nname = \"h1\"\nurl = \"http://a:1\"\ntoken = \"x\"\n");
    assert!(agent.contains("unknown field `token`"), "{agent}");
    let table = parse_error(&format!("{TWO_AGENTS}\n[loops]\ninterval_s = 1\n"));
    assert!(table.contains("unknown field `loops`"), "{table}");
}

#[test]
fn wrong_types_and_bad_urls_are_refused_with_their_line() {
    let text = format!("{TWO_AGENTS}\n[loop]\ninterval_s = \"fast\"\n");
    let kind = parse_error(&text);
    assert!(kind.contains(&line_of(&text, "interval_s")), "{kind}");
    assert!(kind.contains("expected f64"), "{kind}");
    let url = parse_error("token_file = \"t\"\n[[agents]]\nname = \"h1\"\nurl = \"h1:7300\"\n");
    assert!(url.contains("line 4"), "{url}");
    assert!(
        url.contains("expected an agent URL with host and port"),
        "{url}"
    );
    let syntax = parse_error("state_dir = \n");
    assert!(syntax.contains("line 1"), "{syntax}");
}

#[test]
fn values_out_of_range_are_named_by_their_dotted_path() {
    let with = |table: &str| format!("{TWO_AGENTS}\n{table}\n");
    for (table, field) in [
        ("[loop]\ninterval_s = 0", "loop.interval_s"),
        ("[loop]\ninterval_s = -1", "loop.interval_s"),
        ("[loop]\nbackoff_first_s = 0", "loop.backoff_first_s"),
        ("[loop]\ncompact_slices = 0", "loop.compact_slices"),
        ("[poll]\nmiss_limit = 0", "poll.miss_limit"),
        ("[poll]\ntimeout_s = 0", "poll.timeout_s"),
        ("[retention]\nraw_s = 10", "retention.raw_s"),
        ("[control]\nhot = 5.0", "control.hot"),
        ("[control]\ncold = 0.8", "control.cold"),
        ("[control]\ntechniques = []", "control.techniques"),
        ("[control]\nlink_bps = 0", "control.link_bps"),
        ("[control]\nlink_bps = 1", "control.link_bps"),
        (
            "[control.balance]\nspread = 0\nevery_s = 60",
            "control.balance.spread",
        ),
        (
            "[control.power.h9]\nidle_w = 1\npeak_w = 2",
            "control.power.h9",
        ),
        ("state_dir = \"\"", "state_dir"),
    ] {
        let text = if table.starts_with('[') {
            with(table)
        } else {
            format!("{table}\n{TWO_AGENTS}")
        };
        assert_eq!(invalid_field(&text), field, "{table}");
    }
    let err = parse(&with("[loop]\ninterval_s = 0")).expect_err("zero");
    let text = err.to_string();
    assert!(
        text.starts_with("/etc/drover/manager.toml: loop.interval_s: 0"),
        "{text}"
    );
}

#[test]
fn the_agents_must_be_there_unique_and_each_with_a_token() {
    assert_eq!(invalid_field("token_file = \"t\"\n"), "agents");
    let twice = format!("{TWO_AGENTS}\n[[agents]]\nname = \"h1\"\nurl = \"http://h3:7300\"\n");
    assert_eq!(invalid_field(&twice), "agents[2].name");
    let same_url =
        format!("{TWO_AGENTS}\n[[agents]]\nname = \"h3\"\nurl = \"http://198.18.0.11:7300\"\n");
    assert_eq!(invalid_field(&same_url), "agents[2].url");
    let bad_name = "token_file = \"t\"\n[[agents]]\nname = \"h 1\"\nurl = \"http://a:1\"\n";
    assert_eq!(invalid_field(bad_name), "agents[0].name");
    let no_token = "[[agents]]\nname = \"h1\"\nurl = \"http://a:1\"\n";
    assert_eq!(invalid_field(no_token), "agents[0].token_file");
    let agent_token_only =
        "[[agents]]\nname = \"h1\"\nurl = \"http://a:1\"\ntoken_file = \"h1.token\"\n";
    assert_eq!(invalid_field(agent_token_only), "api.token_file");
    let bad_listen = parse_error(&format!("{TWO_AGENTS}\n[api]\nlisten = \"everywhere\"\n"));
    assert!(bad_listen.contains("listen"), "{bad_listen}");
}

#[test]
fn paths_are_relative_to_the_file_and_tokens_are_read_per_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "shared-secret\n").expect("token");
    std::fs::write(dir.path().join("h2.token"), "  h2-secret ").expect("token");
    let text = TWO_AGENTS
        .replace("/etc/drover/h2.token", "h2.token")
        .replace(
            "token_file = \"token\"",
            "token_file = \"token\"\nstate_dir = \"state\"",
        );
    let path = dir.path().join("manager.toml");
    std::fs::write(&path, text).expect("config");
    let c = ManagerConfig::load(&path).expect("valid");
    assert_eq!(c.state_dir, dir.path().join("state"));
    let specs = c.agent_specs().expect("tokens");
    assert_eq!(
        (specs[0].token.as_str(), specs[1].token.as_str()),
        ("shared-secret", "h2-secret")
    );
    assert!(
        !format!("{specs:?}").contains("secret"),
        "Debug hides tokens"
    );

    std::fs::write(dir.path().join("h2.token"), "\n").expect("token");
    match c.agent_specs() {
        Err(ConfigError::Token { field, source }) => {
            assert_eq!(field, "agents[1].token_file");
            assert!(matches!(source, TokenError::Empty { .. }), "{source}");
        }
        other => panic!("expected a token error, got {other:?}"),
    }
    std::fs::remove_file(dir.path().join("token")).expect("rm");
    match c.agent_specs() {
        Err(e @ ConfigError::Token { .. }) => {
            let text = e.to_string();
            assert!(
                text.starts_with("token_file: cannot read token file")
                    && text.contains(&dir.path().join("token").display().to_string()),
                "{text}"
            );
        }
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[test]
fn preflight_reads_every_token_and_checks_the_state_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "shared-secret\n").expect("token");
    std::fs::write(dir.path().join("h2.token"), "h2-secret").expect("token");
    let text = TWO_AGENTS
        .replace("/etc/drover/h2.token", "h2.token")
        .replace(
            "token_file = \"token\"",
            "token_file = \"token\"\nstate_dir = \"state/sub\"\n[api]\ntoken_file = \"api.token\"",
        );
    let path = dir.path().join("manager.toml");
    std::fs::write(&path, text).expect("config");
    let c = ManagerConfig::load(&path).expect("valid values");

    // The API's token file is missing: validate passes, preflight names it.
    match c.preflight() {
        Err(ConfigError::Token { field, .. }) => assert_eq!(field, "api.token_file"),
        other => panic!("expected the API token refused, got {other:?}"),
    }
    std::fs::write(dir.path().join("api.token"), "  \n").expect("token");
    assert!(matches!(c.preflight(), Err(ConfigError::Token { .. })));
    std::fs::write(dir.path().join("api.token"), "api-secret").expect("token");

    // A state_dir that can be made passes and is not made.
    c.preflight().expect("all good");
    assert!(!dir.path().join("state").exists(), "--check starts nothing");
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 4);

    // A file where the state_dir (or its parent) should be.
    std::fs::write(dir.path().join("state"), "").expect("file");
    let e = c.preflight().expect_err("parent is a file").to_string();
    assert!(e.contains("is not a directory"), "{e}");
    let mut c2 = c.clone();
    c2.state_dir = dir.path().join("state");
    let e = c2.preflight().expect_err("a file").to_string();
    assert!(e.ends_with("state: is not a directory"), "{e}");

    // A state_dir another manager runs on: its lock is held.
    std::fs::remove_file(dir.path().join("state")).expect("rm");
    std::fs::create_dir(dir.path().join("state")).expect("dir");
    c2.preflight().expect("free");
    let lock = dir.path().join("state").join(crate::service::LOCK_FILE);
    let held = std::fs::File::create(&lock).expect("lock file");
    c2.preflight().expect("an unheld lock file is free");
    held.lock().expect("hold it");
    let e = c2.preflight().expect_err("held").to_string();
    assert!(e.contains("another manager runs on it"), "{e}");
    drop(held);
    c2.preflight().expect("free again");
}
