//! [`RemoteQmp`]: a [`Qmp`] whose commands run on a VM behind another agent, so the migration
//! driver works unchanged across hosts. Only the forwardable set (`drover_api::qmp`) can be
//! expressed; anything else fails here, before it is sent.

use async_trait::async_trait;
use drover_api::qmp::ForwardedQmp;
use drover_api::{AgentClient, ClientError};
use drover_qemu::qmp::{Qmp, QmpError, QmpEvent};
use serde_json::Value;

/// QMP to a VM behind another agent (the migration destination).
pub struct RemoteQmp {
    pub client: AgentClient,
    pub vm: String,
}

#[async_trait]
impl Qmp for RemoteQmp {
    async fn execute(&self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let cmd = ForwardedQmp::from_parts(command, arguments.as_ref())
            .map_err(|e| QmpError::Protocol(e.to_string()))?;
        let ret = self.client.qmp(&self.vm, &cmd).await.map_err(|e| match e {
            ClientError::Api {
                qmp_class: Some(class),
                qmp_desc,
                ..
            } => QmpError::Command {
                command: command.to_string(),
                class,
                desc: qmp_desc.unwrap_or_default(),
            },
            // The VM vanished on the far side: to the driver that is a closed QMP connection.
            ClientError::Api {
                status: 404 | 409, ..
            } => QmpError::Closed,
            other => QmpError::Io(other.to_string()),
        })?;
        serde_json::to_value(ret).map_err(|e| QmpError::Protocol(e.to_string()))
    }

    fn take_events(&self) -> Vec<QmpEvent> {
        // The driver polls; events are not forwarded between agents.
        Vec::new()
    }

    fn forwards_events(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_qemu_forwards_no_events() {
        let q = RemoteQmp {
            client: AgentClient::new(
                drover_api::AgentUrl::parse("http://127.0.0.1:9").expect("url"),
                "t",
            ),
            vm: "vm1".into(),
        };
        assert!(!q.forwards_events() && q.take_events().is_empty());
    }
}
