//! Scaffolding shared by the scripted tests of the driver and the storage migrations: a pair
//! of pretend QEMUs (source and destination) over one shared world, the endpoints to run
//! them, and looks at what they were asked.

use crate::driver::Endpoints;
use crate::qmp::{QmpError, ScriptedQmp};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The state both pretend QEMUs share.
pub(crate) type Shared<W> = Arc<Mutex<W>>;

/// Two scripted QEMUs over one world `W`.
pub(crate) struct Rig<W> {
    pub world: Shared<W>,
    pub source: ScriptedQmp,
    pub dest: ScriptedQmp,
}

impl<W: Default> Rig<W> {
    /// A world set up by `setup`, with the source and destination scripts over it.
    pub fn new(
        setup: impl FnOnce(&mut W),
        source: impl FnOnce(Shared<W>) -> ScriptedQmp,
        dest: impl FnOnce(Shared<W>) -> ScriptedQmp,
    ) -> Self {
        let world: Shared<W> = Arc::default();
        setup(&mut world.lock().expect("lock"));
        Rig {
            source: source(world.clone()),
            dest: dest(world.clone()),
            world,
        }
    }

    /// The two QEMUs as a migration's endpoints (the URIs are never dialled).
    pub fn ends(&self) -> Endpoints<'_> {
        Endpoints {
            source: &self.source,
            dest: &self.dest,
            uri: "tcp:127.0.0.1:4444".into(),
            recover_uri: "tcp:127.0.0.1:4445".into(),
        }
    }

    /// Runs `f` on the world.
    pub fn with<T>(&self, f: impl FnOnce(&mut W) -> T) -> T {
        f(&mut self.world.lock().expect("lock"))
    }
}

/// The commands that change something, in order (looks, `query-*`, left out; consecutive
/// repeats folded).
pub(crate) fn actions(q: &ScriptedQmp) -> Vec<String> {
    q.command_names()
        .into_iter()
        .filter(|n| !n.starts_with("query-"))
        .collect()
}

/// The arguments of every call of `command`, in order.
pub(crate) fn args_of(q: &ScriptedQmp, command: &str) -> Vec<Value> {
    q.calls()
        .into_iter()
        .filter(|c| c.command == command)
        .filter_map(|c| c.arguments)
        .collect()
}

/// QEMU refusing `cmd`.
pub(crate) fn refuse(cmd: &str, desc: &str) -> Result<Value, QmpError> {
    Err(QmpError::Command {
        command: cmd.into(),
        class: "GenericError".into(),
        desc: desc.into(),
    })
}

/// A `query-status` reply: running, or stopped in QEMU's run state `stopped` (e.g.
/// `postmigrate` for a source that migrated, `inmigrate` for a destination still waiting).
pub(crate) fn status_reply(running: bool, stopped: &str) -> Result<Value, QmpError> {
    let status = if running { "running" } else { stopped };
    Ok(serde_json::json!({"running": running, "status": status}))
}
