//! The manager's configuration file (TOML): where it keeps its state, the agents it drives,
//! how it polls them, the loop's cadences, the history's retention, and core's control
//! settings. Every table is the type that uses it (`deny_unknown_fields`, defaults in one
//! place): `[api]` is [`ApiConfig`], `[loop]` is [`LoopConfig`], `[poll]` is [`PollConfig`], `[retention]` is the
//! store's [`Retention`], `[control]` is core's [`ControlSettings`] (thresholds, mode, rules,
//! and the power model per host under `[control.power.NAME]`). Only the agents have no
//! default.
//!
//! ```toml
//! state_dir = "/var/lib/drover/manager"   # the store: <state_dir>/manager.sqlite
//! token_file = "/etc/drover/token"        # the agents' bearer token (default for each)
//!
//! [[agents]]
//! name = "h1"
//! url = "http://198.18.0.11:7300"
//!
//! [[agents]]
//! name = "h2"
//! url = "http://198.18.0.12:7300"
//! token_file = "h2.token"                 # this agent's own token
//!
//! [api]
//! listen = "127.0.0.1:7800"               # the HTTP API (bearer token: api.token_file,
//!                                         # else token_file)
//!
//! [loop]
//! interval_s = 1.0
//!
//! [control]
//! mode = "recommend"
//! hot = 0.9
//! ```
//!
//! Relative paths are relative to the configuration file's directory. Errors name the file and
//! the key: a syntax error, a wrong type or an unknown key with its line (toml's message), a
//! value out of range with its dotted path (`loop.interval_s`, `agents[1].url`).

use crate::api::ApiConfig;
use crate::daemon::{DaemonError, LoopConfig};
use crate::fleet::{AgentSpec, PollConfig};
use crate::store::{HostSpec, PowerModel, Retention};
use drover_api::token::TokenError;
use drover_api::AgentUrl;
use drover_core::control::{ControlSettings, SettingsError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where the store lives when the file does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/drover/manager";

/// Why a configuration cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, a wrong type, an unknown key (toml's message names the key and the line).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value out of range or inconsistent; `field` is its dotted path in the file.
    #[error("{path}: {field}: {why}")]
    Invalid {
        path: PathBuf,
        field: String,
        why: String,
    },
    /// A token file gives no token; `field` names the key that configured it (the error names
    /// the file and what was expected).
    #[error("{field}: {source}")]
    Token {
        field: String,
        #[source]
        source: TokenError,
    },
    /// No token file is configured for `field` (nor a top-level `token_file`).
    #[error("{field}: not set: name a token file here or token_file at the top")]
    TokenUnset { field: String },
    /// `state_dir` is not, and cannot be made, a writable directory.
    #[error("state_dir {}: {why}", path.display())]
    StateDir { path: PathBuf, why: String },
}

/// One agent: a host of the inventory (`[[agents]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// The host's name (1-64 letters, digits, '.', '-' or '_'); unique.
    pub name: String,
    /// The agent's base URL, `http(s)://host:port`; unique.
    pub url: AgentUrl,
    /// This agent's bearer token file; default: the top-level `token_file`.
    pub token_file: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManagerConfig {
    /// The store's directory (the SQLite file [`crate::store::sqlite::FILE_NAME`] in it).
    pub state_dir: PathBuf,
    /// The bearer token file of every agent that names none of its own.
    pub token_file: Option<PathBuf>,
    pub agents: Vec<AgentEntry>,
    pub api: ApiConfig,
    #[serde(rename = "loop")]
    pub cadence: LoopConfig,
    pub poll: PollConfig,
    pub retention: Retention,
    pub control: ControlSettings,
    /// Where the file was read from (for messages); not a key.
    #[serde(skip)]
    pub source: PathBuf,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            token_file: None,
            agents: Vec::new(),
            api: ApiConfig::default(),
            cadence: LoopConfig::default(),
            poll: PollConfig::default(),
            retention: Retention::default(),
            control: ControlSettings::default(),
            source: PathBuf::new(),
        }
    }
}

/// A host name the store, the agents and the API all accept.
fn valid_host_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ManagerConfig {
    /// Reads, parses and validates `path`; relative paths in it are made relative to its
    /// directory.
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`] (with the key and line),
    /// [`ConfigError::Invalid`] (with the key's dotted path).
    pub fn load(path: &Path) -> Result<ManagerConfig, ConfigError> {
        let config = ManagerConfig::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses `path`, relative paths made relative to its directory, without
    /// validating (a lab's manager fills the agents in first).
    ///
    /// # Errors
    /// [`ConfigError::Read`], [`ConfigError::Parse`].
    pub fn read(path: &Path) -> Result<ManagerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = ManagerConfig::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        Ok(config)
    }

    /// Makes this the manager of `lab`: its agents (every host running one, by the lab's
    /// names and URLs, with the lab's token), its store in `<labdir>/manager`, its API on a
    /// free loopback port unless the file chose an address, the cost model's link the lab's
    /// shaped rate unless the file set `control.link_bps`. Validate afterwards.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the file already lists agents (the lab gives them), or a
    /// lab host's agent URL does not parse.
    pub fn use_lab(&mut self, lab: &drover_lab::LabState) -> Result<(), ConfigError> {
        if !self.agents.is_empty() {
            let why = "lists agents; with --lab the lab's hosts are the agents";
            return Err(self.invalid("agents", why));
        }
        for h in &lab.hosts {
            let Some(url) = &h.agent_url else { continue };
            let url = AgentUrl::parse(url).map_err(|e| {
                self.invalid(format!("lab host {} agent_url", h.name), e.to_string())
            })?;
            self.agents.push(AgentEntry {
                name: h.name.clone(),
                url,
                token_file: None,
            });
        }
        self.token_file = Some(lab.token_file.clone());
        // The cost model prices migrations over the lab's shaped link unless the file says.
        if self.control.link_bps.is_none() {
            self.control.link_bps = Some(lab.link.rate_bytes_per_sec);
        }
        if self.state_dir == Path::new(DEFAULT_STATE_DIR) {
            self.state_dir = lab.lab_dir.join("manager");
        }
        if self.api.listen == ApiConfig::default().listen {
            self.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        }
        if self.source.as_os_str().is_empty() {
            self.source = PathBuf::from(format!("lab {}", lab.name));
        }
        Ok(())
    }

    /// Parses `text` (read from `source`, for messages) without validating it.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for a syntax error, a wrong type or an unknown key.
    pub fn parse(text: &str, source: &Path) -> Result<ManagerConfig, ConfigError> {
        let mut config: ManagerConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: source.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.source = source.to_path_buf();
        Ok(config)
    }

    /// Makes every relative path relative to `base`.
    fn resolve(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        join(&mut self.state_dir);
        if let Some(t) = self.token_file.as_mut() {
            join(t);
        }
        if let Some(t) = self.api.token_file.as_mut() {
            join(t);
        }
        for a in &mut self.agents {
            if let Some(t) = a.token_file.as_mut() {
                join(t);
            }
        }
    }

    fn invalid(&self, field: impl Into<String>, why: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            field: field.into(),
            why: why.into(),
        }
    }

    /// Checks every value the types cannot: at least one agent, names and URLs unique, a
    /// token file for every agent, each table's limits.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key by its dotted path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.state_dir.as_os_str().is_empty() {
            return Err(self.invalid("state_dir", "is empty"));
        }
        self.validate_agents()?;
        if self.api.token_file.is_none() && self.token_file.is_none() {
            let why = "no token file for the API: set it here or token_file at the top";
            return Err(self.invalid("api.token_file", why));
        }
        self.cadence.validate().map_err(|e| match e {
            DaemonError::Config {
                what,
                value,
                expected,
            } => self.invalid(format!("loop.{what}"), format!("{value}: {expected}")),
            other => self.invalid("loop", other.to_string()),
        })?;
        self.poll
            .validate()
            .map_err(|(field, why)| self.invalid(format!("poll.{field}"), why))?;
        self.retention.validate().map_err(|why| {
            let field = why.split_whitespace().next().unwrap_or("").to_string();
            self.invalid(format!("retention.{field}"), why)
        })?;
        self.control
            .validate()
            .map_err(|e| self.invalid(control_field(&e), e.to_string()))?;
        let hosts: BTreeSet<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
        if let Some(h) = self
            .control
            .power
            .keys()
            .find(|h| !hosts.contains(h.as_str()))
        {
            return Err(self.invalid(format!("control.power.{h}"), "no agent by that name"));
        }
        Ok(())
    }

    fn validate_agents(&self) -> Result<(), ConfigError> {
        if self.agents.is_empty() {
            return Err(self.invalid("agents", "no agent: add an [[agents]] table per host"));
        }
        let (mut names, mut urls) = (BTreeSet::new(), BTreeSet::new());
        for (i, a) in self.agents.iter().enumerate() {
            if !valid_host_name(&a.name) {
                let why = format!(
                    "{:?}: expected 1-64 letters, digits, '.', '-' or '_', not starting with '-' or '.'",
                    a.name
                );
                return Err(self.invalid(format!("agents[{i}].name"), why));
            }
            if !names.insert(a.name.as_str()) {
                let why = format!("{:?} is given to two agents", a.name);
                return Err(self.invalid(format!("agents[{i}].name"), why));
            }
            if !urls.insert(a.url.as_str()) {
                let why = format!("{} is given to two agents", a.url.as_str());
                return Err(self.invalid(format!("agents[{i}].url"), why));
            }
            if a.token_file.is_none() && self.token_file.is_none() {
                let why = "no token file: set it here or token_file at the top";
                return Err(self.invalid(format!("agents[{i}].token_file"), why));
            }
        }
        Ok(())
    }

    /// Each agent with its token, read from its token file.
    ///
    /// # Errors
    /// [`ConfigError::Token`] naming the key that configured a file that gives no token, or
    /// [`ConfigError::TokenUnset`].
    pub fn agent_specs(&self) -> Result<Vec<AgentSpec>, ConfigError> {
        let mut specs = Vec::with_capacity(self.agents.len());
        // Each file is read (and warned about) once, however many agents share it.
        let mut read: std::collections::BTreeMap<&Path, String> = Default::default();
        for (i, a) in self.agents.iter().enumerate() {
            let (field, file) = match (&a.token_file, &self.token_file) {
                (Some(f), _) => (format!("agents[{i}].token_file"), f),
                (None, Some(f)) => ("token_file".to_string(), f),
                (None, None) => {
                    return Err(ConfigError::TokenUnset {
                        field: format!("agents[{i}].token_file"),
                    })
                }
            };
            let token = match read.get(file.as_path()) {
                Some(t) => t.clone(),
                None => {
                    let t = read_token(&field, file)?;
                    read.insert(file, t.clone());
                    t
                }
            };
            specs.push(AgentSpec {
                name: a.name.clone(),
                url: a.url.clone(),
                token,
            });
        }
        Ok(specs)
    }

    /// The bearer token API clients must present, read from `api.token_file` (else the
    /// top-level `token_file`).
    ///
    /// # Errors
    /// [`ConfigError::Token`] naming the key of a file that gives no token, or
    /// [`ConfigError::TokenUnset`].
    pub fn api_token(&self) -> Result<String, ConfigError> {
        match (&self.api.token_file, &self.token_file) {
            (Some(f), _) => read_token("api.token_file", f),
            (None, Some(f)) => read_token("token_file", f),
            (None, None) => Err(ConfigError::TokenUnset {
                field: "api.token_file".into(),
            }),
        }
    }

    /// Everything `Service::start` reads before it binds or opens anything, without starting
    /// anything: the values ([`ManagerConfig::validate`]), every token file (agents' and the
    /// API's, through the shared `read_token`), and that `state_dir` is a writable directory or
    /// can be made one. What `drover manager --check` runs.
    ///
    /// # Errors
    /// The first of [`ConfigError::Invalid`], [`ConfigError::Token`],
    /// [`ConfigError::TokenUnset`], [`ConfigError::StateDir`].
    pub fn preflight(&self) -> Result<(), ConfigError> {
        self.validate()?;
        self.agent_specs()?;
        self.api_token()?;
        check_state_dir(&self.state_dir)
    }

    /// The inventory the store keeps: each agent, with its power model when
    /// `[control.power.NAME]` sets one.
    pub fn inventory(&self) -> Vec<HostSpec> {
        self.agents
            .iter()
            .map(|a| HostSpec {
                name: a.name.clone(),
                agent_url: a.url.as_str().to_string(),
                power: self.control.power.get(&a.name).map(|p| PowerModel {
                    idle_w: p.idle_w,
                    peak_w: p.peak_w,
                }),
            })
            .collect()
    }
}

/// The dotted path of a control setting's error.
fn control_field(e: &SettingsError) -> String {
    match e {
        SettingsError::Range { field, .. } => format!("control.{field}"),
        SettingsError::Named { field, .. } => format!("control.{field}"),
        SettingsError::Knobs(_) => "control.knobs".into(),
        SettingsError::Rule { index, .. } => format!("control.rules[{index}]"),
    }
}

/// Checks that `dir` is a writable directory, or that its nearest existing ancestor is one (so
/// the start can make it). Writability is probed by making and removing one file, since
/// permission bits do not tell the whole story (read-only mounts, ACLs).
fn check_state_dir(dir: &Path) -> Result<(), ConfigError> {
    let fail = |why: String| ConfigError::StateDir {
        path: dir.to_path_buf(),
        why,
    };
    let mut existing = dir;
    while !existing.exists() {
        existing = existing
            .parent()
            .ok_or_else(|| fail("no existing parent directory".into()))?;
        if existing.as_os_str().is_empty() {
            existing = Path::new(".");
        }
    }
    if !existing.is_dir() {
        let what = if existing == dir {
            "is not a directory".to_string()
        } else {
            format!("cannot be made: {} is not a directory", existing.display())
        };
        return Err(fail(what));
    }
    let probe = existing.join(format!(".drover-check-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| {
            let what = if existing == dir {
                format!("is not writable: {e}")
            } else {
                format!("cannot be made in {}: {e}", existing.display())
            };
            fail(what)
        })?;
    // Leaves nothing behind; a failure to remove the empty probe is not the config's fault.
    let _ = std::fs::remove_file(&probe);
    check_not_busy(dir).map_err(fail)
}

/// Refuses a state directory whose lock another manager holds (what starting would refuse),
/// without making the lock file when there is none.
fn check_not_busy(dir: &Path) -> Result<(), String> {
    let lock = dir.join(crate::service::LOCK_FILE);
    let file = match std::fs::OpenOptions::new().write(true).open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(format!(
                "its lock file {} cannot be opened: {e}",
                lock.display()
            ))
        }
    };
    match file.try_lock() {
        // Released when `file` drops, at once.
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another manager runs on it (its lock file {} is held)",
            lock.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!(
            "its lock file {} cannot be locked: {e}",
            lock.display()
        )),
    }
}

/// The bearer token in `file`, configured by key `field` (see [`drover_api::token::read_token`]).
fn read_token(field: &str, file: &Path) -> Result<String, ConfigError> {
    drover_api::token::read_token(file).map_err(|source| ConfigError::Token {
        field: field.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
