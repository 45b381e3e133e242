//! The values that go in and out of a [`super::Store`] besides core's control types: inventory,
//! samples, history, retention, and [`Json`] for what the store keeps as it was sent (the
//! agents' migration records).

use super::error::{Result, StoreError};
use super::records::JournalEntry;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON document, as text. Made from a value with [`Json::of`] or from text with
/// [`Json::parse`] (both check it), read back with [`Json::to`]. It serializes as the document
/// itself, not as a string, so a record holding it is plain JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json(String);

impl Json {
    /// `value` as JSON.
    ///
    /// # Errors
    /// [`StoreError::Json`] when serde cannot serialize it (a map with non-string keys).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Result<Json> {
        serde_json::to_string(value)
            .map(Json)
            .map_err(|source| StoreError::Json {
                what: format!("cannot serialize a {}", std::any::type_name::<T>()),
                source,
            })
    }

    /// `text`, once checked to be one JSON document.
    ///
    /// # Errors
    /// [`StoreError::Json`] when it is not.
    pub fn parse(text: impl Into<String>) -> Result<Json> {
        let text = text.into();
        serde_json::from_str::<IgnoredAny>(&text).map_err(|source| StoreError::Json {
            what: "not a JSON document".into(),
            source,
        })?;
        Ok(Json(text))
    }

    /// Text the store wrote itself (checked when it went in).
    pub(crate) fn stored(text: String) -> Json {
        Json(text)
    }

    /// The document read as a `T`.
    ///
    /// # Errors
    /// [`StoreError::Json`] when it does not have `T`'s shape.
    pub fn to<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.0).map_err(|source| StoreError::Json {
            what: format!("cannot read a {}", std::any::type_name::<T>()),
            source,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Json, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(Json(raw.get().to_string()))
    }
}

/// How long metric history and decisions are kept. Read from the manager's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// 1 s samples are kept this long before they are rolled up to 1 minute, s (60..=3600).
    pub raw_s: u32,
    /// 1-minute rollups are kept this many days (1..=3650).
    pub rollup_days: u32,
    /// Decision records (observation, memory, settings of the step that made a plan) are kept
    /// this many days (1..=3650); a plan older than that can no longer be replayed.
    pub decision_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        // Ten minutes of seconds is what detection and the forecasts look at; a week of minutes
        // covers a weekly pattern and a post-mortem of last week's incident.
        Retention {
            raw_s: 600,
            rollup_days: 7,
            decision_days: 7,
        }
    }
}

impl Retention {
    /// Every limit, in one place.
    ///
    /// # Errors
    /// A message naming the key and its range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(60..=3600).contains(&self.raw_s) {
            return Err(format!("raw_s {} is not within 60..=3600", self.raw_s));
        }
        if !(1..=3650).contains(&self.rollup_days) {
            return Err(format!(
                "rollup_days {} is not within 1..=3650",
                self.rollup_days
            ));
        }
        if !(1..=3650).contains(&self.decision_days) {
            return Err(format!(
                "decision_days {} is not within 1..=3650",
                self.decision_days
            ));
        }
        Ok(())
    }

    /// Where a compaction at `now_s` cuts.
    pub(crate) fn cuts(&self, now_s: f64) -> Cuts {
        let day = 86_400.0;
        Cuts {
            raw_before: ((now_s - f64::from(self.raw_s)) / 60.0).floor() * 60.0,
            rollups_before: now_s - f64::from(self.rollup_days) * day,
            decisions_before: now_s - f64::from(self.decision_days) * day,
        }
    }
}

/// Where a compaction cuts: samples before `raw_before` are rolled up (a whole minute, so no
/// minute is split between two compactions), rollups starting before `rollups_before` and
/// decisions made before `decisions_before` are deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cuts {
    pub raw_before: f64,
    pub rollups_before: f64,
    pub decisions_before: f64,
}

/// A host's power draw (idle and peak watts; linear in CPU between).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerModel {
    pub idle_w: f64,
    pub peak_w: f64,
}

/// A host as an operator or the configuration adds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSpec {
    pub name: String,
    pub agent_url: String,
    /// None: the settings' default power model.
    pub power: Option<PowerModel>,
}

/// A host in the inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub agent_url: String,
    pub power: Option<PowerModel>,
    /// When it was (last) added, s (manager clock).
    pub added_s: f64,
    /// When it was removed, if it was (its history is kept).
    pub removed_s: Option<f64>,
    /// As of the last look.
    pub reachable: bool,
    /// When its agent last answered, s.
    pub last_seen_s: Option<f64>,
}

/// A VM as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    /// The host that last reported it running.
    pub host: String,
    pub first_seen_s: f64,
    pub last_seen_s: f64,
}

/// One measurement of a host or a VM. Every number is finite and non-negative. Rates are kept
/// to whole bytes/s ([`Sample::stored`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// CPU demand over capacity (host: over its CPUs; VM: over its vCPUs).
    pub load: f64,
    /// CPU demand, cores (used plus what a cap kept from it).
    pub cpu_cores: f64,
    /// Memory (host: given to its VMs; VM: its size or resident set), bytes.
    pub memory_bytes: u64,
    /// Page dirty rate, bytes/s; None until measured.
    pub dirty_bps: Option<f64>,
    pub rx_bps: f64,
    pub tx_bps: f64,
}

impl Sample {
    /// The sample as the stores keep it: rates rounded to whole bytes/s. A fraction of a byte
    /// means nothing here, and SQLite keeps such an integer in 4 bytes where a REAL takes 8
    /// (a sixth of a sample row, a quarter of a rollup row).
    pub fn stored(&self) -> Sample {
        Sample {
            dirty_bps: self.dirty_bps.map(f64::round),
            rx_bps: self.rx_bps.round(),
            tx_bps: self.tx_bps.round(),
            ..*self
        }
    }
}

/// What one look at a host found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLook {
    pub name: String,
    pub reachable: bool,
    /// None when its agent did not answer.
    pub sample: Option<Sample>,
}

/// A VM one look found running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmLook {
    pub name: String,
    /// The host that reports it running (must be in the inventory).
    pub host: String,
    pub sample: Option<Sample>,
}

/// Everything one look found, stored in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// When, s (manager clock, finite, non-negative).
    pub at_s: f64,
    pub hosts: Vec<HostLook>,
    pub vms: Vec<VmLook>,
    /// Journal lines the collector wants stored with it (a host became unreachable).
    pub journal: Vec<JournalEntry>,
}

/// Whose metric history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    Host,
    Vm,
}

impl SeriesKind {
    pub fn name(self) -> &'static str {
        match self {
            SeriesKind::Host => "host",
            SeriesKind::Vm => "vm",
        }
    }
}

/// One host's or VM's metric history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub kind: SeriesKind,
    pub name: String,
}

impl SeriesKey {
    pub fn host(name: &str) -> SeriesKey {
        SeriesKey {
            kind: SeriesKind::Host,
            name: name.to_string(),
        }
    }

    pub fn vm(name: &str) -> SeriesKey {
        SeriesKey {
            kind: SeriesKind::Vm,
            name: name.to_string(),
        }
    }
}

/// A sample and when it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub at_s: f64,
    pub sample: Sample,
}

/// Mean and maximum of one quantity over a minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanMax {
    pub mean: f64,
    pub max: f64,
}

/// One minute of samples, rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    /// The minute's start, s (a multiple of 60).
    pub start_s: f64,
    /// How many samples it summarizes.
    pub samples: u32,
    pub load: MeanMax,
    pub cpu_cores: MeanMax,
    pub memory_bytes: MeanMax,
    /// Over the samples that had a dirty rate; None when none had.
    pub dirty_bps: Option<MeanMax>,
    pub rx_bps: MeanMax,
    pub tx_bps: MeanMax,
}

/// A series' history since some time, oldest first: minutes beyond the raw window, then
/// seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Rollups whose minute ends after `since`.
    pub minutes: Vec<Rollup>,
    /// Samples taken at or after `since`.
    pub seconds: Vec<Point>,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    /// 1 s samples folded into rollups (and deleted).
    pub samples_rolled: u64,
    /// Rollup rows written or merged.
    pub minutes_written: u64,
    /// Rollup rows deleted past retention.
    pub minutes_deleted: u64,
    /// Decision records deleted past retention.
    pub decisions_deleted: u64,
    /// Due samples are left for further calls ([`crate::store::Store::compact_slice`]).
    #[serde(default)]
    pub pending: bool,
}
