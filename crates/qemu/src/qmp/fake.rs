//! A scripted QMP peer for tests: answers by a handler function and records every call.

use super::{Qmp, QmpError, QmpEvent};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Mutex;

/// One recorded command.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCall {
    pub command: String,
    pub arguments: Option<Value>,
}

type Handler = Box<dyn FnMut(&str, Option<&Value>) -> Result<Value, QmpError> + Send>;

/// A fake QEMU whose answers come from a closure (which can keep its own state to simulate a
/// migration's progress).
pub struct ScriptedQmp {
    handler: Mutex<Handler>,
    calls: Mutex<Vec<FakeCall>>,
    events: Mutex<Vec<QmpEvent>>,
}

impl ScriptedQmp {
    pub fn new(
        handler: impl FnMut(&str, Option<&Value>) -> Result<Value, QmpError> + Send + 'static,
    ) -> Self {
        ScriptedQmp {
            handler: Mutex::new(Box::new(handler)),
            calls: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    /// Every command received, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Names of the commands received, in order, without repeats of consecutive polls.
    pub fn command_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in self.calls() {
            if names.last() != Some(&c.command) {
                names.push(c.command);
            }
        }
        names
    }

    pub fn push_event(&self, name: &str, data: Value, timestamp_us: Option<u64>) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(QmpEvent {
                name: name.to_string(),
                data,
                timestamp_us,
            });
    }
}

#[async_trait]
impl Qmp for ScriptedQmp {
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FakeCall {
                command: command.to_string(),
                arguments: arguments.clone(),
            });
        let mut handler = self.handler.lock().unwrap_or_else(|e| e.into_inner());
        (handler)(command, arguments.as_ref())
    }

    fn take_events(&self) -> Vec<QmpEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
