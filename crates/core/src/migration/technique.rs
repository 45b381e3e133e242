//! Migration techniques and their tunables.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// How a VM's memory moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Technique {
    /// Iterative pre-copy rounds, then a stop-and-copy of what is still dirty.
    Precopy,
    /// Switch execution at once; pages follow in the background and on demand.
    Postcopy,
    /// Pre-copy a fraction of RAM (or some rounds), then post-copy the rest.
    Hybrid,
    /// Let the cost model pick one of the above from the VM's measured behaviour.
    Auto,
}

impl Technique {
    /// The techniques that move memory (everything but `Auto`).
    pub const CONCRETE: [Technique; 3] =
        [Technique::Precopy, Technique::Postcopy, Technique::Hybrid];
    /// Every technique, in the order benchmarks print them.
    pub const ALL: [Technique; 4] = [
        Technique::Precopy,
        Technique::Postcopy,
        Technique::Hybrid,
        Technique::Auto,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Technique::Precopy => "precopy",
            Technique::Postcopy => "postcopy",
            Technique::Hybrid => "hybrid",
            Technique::Auto => "auto",
        }
    }

    /// Whether QEMU's `postcopy-ram` capability must be on (on both sides) before starting.
    pub fn needs_postcopy_capability(self) -> bool {
        matches!(self, Technique::Postcopy | Technique::Hybrid)
    }
}

impl fmt::Display for Technique {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown technique '{0}': expected precopy, postcopy, hybrid or auto")]
pub struct UnknownTechnique(pub String);

impl FromStr for Technique {
    type Err = UnknownTechnique;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "precopy" | "pre-copy" | "pre" => Ok(Technique::Precopy),
            "postcopy" | "post-copy" | "post" => Ok(Technique::Postcopy),
            "hybrid" => Ok(Technique::Hybrid),
            "auto" => Ok(Technique::Auto),
            _ => Err(UnknownTechnique(s.to_string())),
        }
    }
}

/// When a hybrid migration switches from pre-copy to post-copy: whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HybridSwitch {
    /// Fraction of guest RAM (0..=1) sent by pre-copy before switching.
    pub ram_fraction: f64,
    /// Pre-copy rounds (completed dirty-bitmap syncs) before switching.
    pub max_rounds: u32,
}

impl Default for HybridSwitch {
    fn default() -> Self {
        // One full first pass moves the cold pages cheaply; what is hot after it is cheaper to
        // fault in than to resend.
        HybridSwitch {
            ram_fraction: 1.0,
            max_rounds: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for t in Technique::ALL {
            assert_eq!(t.as_str().parse::<Technique>(), Ok(t));
        }
        assert_eq!("Post-Copy".parse::<Technique>(), Ok(Technique::Postcopy));
        assert!("teleport".parse::<Technique>().is_err());
    }
}
