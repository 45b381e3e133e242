//! Operator commands, run by the loop between looks with the same discipline as a look: the
//! memory they change and its journal are stored before any action goes out, and the
//! actions' outcomes are recorded and stored after.

use super::{Daemon, LookError};
use crate::fleet::Fleet;
use crate::handle::{Command, ManagerError, Op, Reply};
use crate::store::{SettingsRecord, StoreError};
use drover_api::request::RequestError;
use drover_core::control::{self, Action, ControlError, ControlSettings, JournalEntry, Outcome};
use serde_json::Value;

impl From<LookError> for ManagerError {
    fn from(e: LookError) -> Self {
        match e {
            LookError::Store(e) => ManagerError::Store(e),
            LookError::Crashed(_) => ManagerError::Stopped,
        }
    }
}

impl<F: Fleet + 'static> Daemon<F> {
    /// Runs one command and answers it; true when it asks the loop to stop.
    pub(super) async fn command(&mut self, cmd: Command) -> bool {
        let stop = matches!(cmd.op, Op::Shutdown);
        let result = self.operate(cmd.op).await;
        if let Err(e) = &result {
            tracing::info!("operator command refused: {e}");
        }
        // The caller may have given up waiting; the command is done either way.
        let _ = cmd.reply.send(result);
        self.publish(None);
        stop
    }

    async fn operate(&mut self, op: Op) -> Result<Reply, ManagerError> {
        let now = self.clock.now_s();
        let mut next = self.state.clone();
        match op {
            Op::Approve(id) => {
                let settings = self.settings.settings.clone();
                match control::approve(&mut next, &id, &self.observation, &settings, now) {
                    Ok(journal) => self.commit(next, journal, None, now)?,
                    Err(ControlError::Expired { plan, why, journal }) => {
                        // Refused, but the plan *was* expired: that is stored.
                        self.commit(next, journal, None, now)?;
                        return Err(ManagerError::Expired { plan, why });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Op::CancelPlan(id) => {
                let out = control::cancel_plan(&mut next, &id, now)?;
                self.commit(next, out.journal, None, now)?;
                self.carry_out(&out.actions).await?;
            }
            Op::Drain(host) => {
                let journal = control::drain(&mut next, &host, now)?;
                self.commit(next, journal, None, now)?;
            }
            Op::Undrain(host) => {
                let journal = control::undrain(&mut next, &host, now)?;
                self.commit(next, journal, None, now)?;
            }
            Op::Wake(host) => return self.wake(host, now).await,
            Op::PatchSettings {
                patch,
                expected_version,
            } => return self.patch_settings(&patch, expected_version, now),
            Op::Shutdown => {}
        }
        Ok(Reply::Done)
    }

    /// An operator's wake: journaled and stored, then asked; the agent's refusal is the
    /// command's error (and recorded, as core records a failed wake).
    async fn wake(&mut self, host: String, now: f64) -> Result<Reply, ManagerError> {
        if !self.fleet.hosts().contains(&host) {
            return Err(ManagerError::UnknownHost(host));
        }
        let line = JournalEntry {
            at_s: now,
            subject: "host".into(),
            id: host.clone(),
            what: "wake asked by an operator".into(),
        };
        self.commit(self.state.clone(), vec![line], None, now)?;
        let outcomes = self.carry_out(&[Action::Wake { host }]).await?;
        match outcomes.into_iter().next() {
            Some(Outcome::Wake {
                error: Some(error), ..
            }) => Err(ManagerError::Agent(error)),
            _ => Ok(Reply::Done),
        }
    }

    /// Applies a JSON merge patch (RFC 7396) to the settings, checks the result as the
    /// configuration file's settings are checked, and stores it as a new version.
    fn patch_settings(
        &mut self,
        patch: &Value,
        expected_version: Option<u64>,
        now: f64,
    ) -> Result<Reply, ManagerError> {
        let found = self.settings.version;
        if let Some(expected) = expected_version.filter(|e| *e != found) {
            return Err(ManagerError::SettingsConflict { expected, found });
        }
        let mut doc = serde_json::to_value(&self.settings.settings)
            .map_err(|e| ManagerError::Settings(e.to_string()))?;
        merge(&mut doc, patch);
        // drover-api's rule for every body: structure (type, unknown field) 400, values 422.
        let settings: ControlSettings =
            drover_api::request::read_value(&doc, "settings").map_err(|e| match e {
                RequestError::Syntax(m) => ManagerError::SettingsShape(m),
                RequestError::Invalid(m) => ManagerError::Settings(m),
            })?;
        settings
            .validate()
            .map_err(|e| ManagerError::Settings(e.to_string()))?;
        if settings == self.settings.settings {
            // Nothing changed (`{}`, or values already set): no new version, nothing journaled.
            return Ok(Reply::Settings(Box::new(self.settings.clone())));
        }
        let version = self
            .store
            .put_settings(&settings, now, Some(found))
            .map_err(|e| match e {
                StoreError::SettingsConflict {
                    expected, found, ..
                } => ManagerError::SettingsConflict { expected, found },
                e => ManagerError::Store(e),
            })?;
        self.settings = SettingsRecord {
            version,
            updated_s: now,
            settings,
        };
        Ok(Reply::Settings(Box::new(self.settings.clone())))
    }
}

/// RFC 7396: objects merge key by key, `null` removes a key (its default comes back), any
/// other value replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge;
    use serde_json::json;

    #[test]
    fn a_merge_patch_merges_objects_and_removes_nulls() {
        let mut doc = json!({"hot": 0.9, "balance": {"spread": 0.2, "every_s": 60}, "link_bps": 5});
        merge(
            &mut doc,
            &json!({"hot": 0.95, "balance": {"spread": 0.3}, "link_bps": null}),
        );
        assert_eq!(
            doc,
            json!({"hot": 0.95, "balance": {"spread": 0.3, "every_s": 60}})
        );
    }
}
