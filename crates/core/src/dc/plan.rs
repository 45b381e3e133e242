//! What a policy decides: an ordered list of migrations.

use super::model::{HostId, VmId};
use crate::migration::Technique;
use serde::{Deserialize, Serialize};

/// Why a VM moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MoveReason {
    /// Its host is (or is about to be) overloaded.
    Overload,
    /// Its host is being emptied so it can be switched off.
    Underload,
}

/// One migration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub vm: VmId,
    /// The VM's host when the plan was made.
    pub from: HostId,
    pub to: HostId,
    pub reason: MoveReason,
    pub technique: Technique,
}

/// A round's decisions, to be executed in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub moves: Vec<Move>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    pub fn len(&self) -> usize {
        self.moves.len()
    }
}
