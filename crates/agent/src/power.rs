//! The host's power state: `active`, `standby` (powered down, simulated) and `waking` (booting
//! for the agent's wake delay), persisted in `<state>/power.json` so a restarted agent keeps it.
//!
//! ```text
//!            standby (no VM, no migration, none starting)
//!  Active ───────────────────────────────────────────────> Standby
//!    ^  ^                                                    │
//!    │  └── wake, delay 0 ───────────────────────────────────┤ wake
//!    │                                                       v
//!    └────────── the wake delay has passed ─────────────── Waking
//! ```
//!
//! Both requests are idempotent: standby on a host in standby and wake on an active or waking
//! host change nothing. Standby while waking is refused (the host is still booting; ask again
//! once it is active). Only an active host admits a VM, new or incoming; every other
//! transition is a typed [`PowerError`]. [`PowerMachine`] is the pure state machine (time is
//! passed in); [`Power`] wraps it with the lock, the clock, persistence and the count of VMs
//! being started (a standby must not slip between a create's check and its VM appearing).

use crate::lock;
use crate::store::{Store, StoreError};
use drover_api::{unix_ms, PowerState};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use thiserror::Error;

/// What is still on a host asked to stand by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// VMs registered here (lost ones included: a VM that cannot be re-attached may still run).
    pub vms: Vec<String>,
    /// Migrations under way from here.
    pub migrations: Vec<String>,
    /// VMs (new or incoming) being started.
    pub starting: usize,
}

impl Occupancy {
    pub fn is_empty(&self) -> bool {
        self.vms.is_empty() && self.migrations.is_empty() && self.starting == 0
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.vms.is_empty() {
            parts.push(format!(
                "{} VM(s) ({})",
                self.vms.len(),
                self.vms.join(", ")
            ));
        }
        if !self.migrations.is_empty() {
            parts.push(format!(
                "{} migration(s) under way ({})",
                self.migrations.len(),
                self.migrations.join(", ")
            ));
        }
        if self.starting > 0 {
            parts.push(format!("{} VM(s) starting", self.starting));
        }
        parts.join(" and ")
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PowerError {
    /// A VM was asked of a host in standby.
    #[error("host is in standby")]
    InStandby,
    /// A VM, or standby, was asked of a host still booting.
    #[error("host is waking (active in {} s)", remaining_ms.div_ceil(1000))]
    Waking {
        ready_at_unix_ms: u64,
        remaining_ms: u64,
    },
    /// Standby was asked of a host that is not empty.
    #[error("host still has {}: standby needs it empty", .0.describe())]
    Occupied(Occupancy),
    #[error("power state not saved: {0}")]
    Store(String),
}

impl From<StoreError> for PowerError {
    fn from(e: StoreError) -> Self {
        PowerError::Store(e.to_string())
    }
}

/// The power state machine (times in ms since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum PowerMachine {
    Active {
        since_unix_ms: u64,
    },
    Standby {
        since_unix_ms: u64,
    },
    Waking {
        since_unix_ms: u64,
        ready_at_unix_ms: u64,
    },
}

impl PowerMachine {
    /// The state at `now`: a waking host whose delay has passed is active (since then).
    pub fn at(self, now: u64) -> Self {
        match self {
            PowerMachine::Waking {
                ready_at_unix_ms, ..
            } if now >= ready_at_unix_ms => PowerMachine::Active {
                since_unix_ms: ready_at_unix_ms,
            },
            other => other,
        }
    }

    pub fn state(self) -> PowerState {
        match self {
            PowerMachine::Active { .. } => PowerState::Active,
            PowerMachine::Standby { .. } => PowerState::Standby,
            PowerMachine::Waking { .. } => PowerState::Waking,
        }
    }

    /// Standby at `now`, if the host is empty.
    ///
    /// # Errors
    /// [`PowerError::Occupied`] naming what is still there; [`PowerError::Waking`].
    pub fn standby(self, now: u64, occupancy: Occupancy) -> Result<Self, PowerError> {
        match self.at(now) {
            PowerMachine::Active { .. } if !occupancy.is_empty() => {
                Err(PowerError::Occupied(occupancy))
            }
            PowerMachine::Active { .. } => Ok(PowerMachine::Standby { since_unix_ms: now }),
            standby @ PowerMachine::Standby { .. } => Ok(standby),
            PowerMachine::Waking {
                ready_at_unix_ms, ..
            } => Err(PowerError::Waking {
                ready_at_unix_ms,
                remaining_ms: ready_at_unix_ms.saturating_sub(now),
            }),
        }
    }

    /// Wake at `now`, booting for `delay_ms` (a no-op unless in standby).
    pub fn wake(self, now: u64, delay_ms: u64) -> Self {
        match self.at(now) {
            PowerMachine::Standby { .. } if delay_ms == 0 => {
                PowerMachine::Active { since_unix_ms: now }
            }
            PowerMachine::Standby { .. } => PowerMachine::Waking {
                since_unix_ms: now,
                ready_at_unix_ms: now.saturating_add(delay_ms),
            },
            up => up,
        }
    }

    /// Whether a VM may start here at `now`.
    ///
    /// # Errors
    /// [`PowerError::InStandby`] or [`PowerError::Waking`].
    pub fn admit(self, now: u64) -> Result<(), PowerError> {
        match self.at(now) {
            PowerMachine::Active { .. } => Ok(()),
            PowerMachine::Standby { .. } => Err(PowerError::InStandby),
            PowerMachine::Waking {
                ready_at_unix_ms, ..
            } => Err(PowerError::Waking {
                ready_at_unix_ms,
                remaining_ms: ready_at_unix_ms.saturating_sub(now),
            }),
        }
    }

    /// The wire view.
    pub fn view(self) -> drover_api::Power {
        match self {
            PowerMachine::Active { since_unix_ms } | PowerMachine::Standby { since_unix_ms } => {
                drover_api::Power {
                    state: self.state(),
                    since_unix_ms,
                    ready_at_unix_ms: None,
                }
            }
            PowerMachine::Waking {
                since_unix_ms,
                ready_at_unix_ms,
            } => drover_api::Power {
                state: PowerState::Waking,
                since_unix_ms,
                ready_at_unix_ms: Some(ready_at_unix_ms),
            },
        }
    }
}

/// Wall-clock ms that advance with tokio's clock (so tests can pause and advance time).
#[derive(Debug, Clone, Copy)]
struct WallClock {
    origin: tokio::time::Instant,
    origin_unix_ms: u64,
}

impl WallClock {
    fn now(&self) -> u64 {
        self.origin_unix_ms + self.origin.elapsed().as_millis() as u64
    }
}

#[derive(Debug)]
struct Inner {
    machine: PowerMachine,
    /// VMs admitted and not yet registered (or failed).
    starting: usize,
}

/// The host's power state, shared by the handlers.
#[derive(Debug)]
pub struct Power {
    inner: Mutex<Inner>,
    store: Store,
    clock: WallClock,
    wake_delay: Duration,
}

/// A VM admitted to start; standby is refused until it is dropped (after the VM is registered,
/// or its start failed).
#[must_use]
pub struct Admission<'a> {
    power: &'a Power,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut inner = lock(&self.power.inner);
        inner.starting = inner.starting.saturating_sub(1);
    }
}

impl Power {
    /// The state kept in `store` (active when none was kept), waking for `wake_delay` when
    /// woken.
    ///
    /// # Errors
    /// A state file that cannot be read.
    pub fn load(store: Store, wake_delay: Duration) -> Result<Self, StoreError> {
        let clock = WallClock {
            origin: tokio::time::Instant::now(),
            origin_unix_ms: unix_ms(),
        };
        let machine = store.load_power()?.unwrap_or(PowerMachine::Active {
            since_unix_ms: clock.now(),
        });
        Ok(Power {
            inner: Mutex::new(Inner {
                machine,
                starting: 0,
            }),
            store,
            clock,
            wake_delay,
        })
    }

    /// The state now (a wake whose delay has passed reads as active).
    pub fn current(&self) -> PowerMachine {
        let mut inner = lock(&self.inner);
        let now = inner.machine.at(self.clock.now());
        if now != inner.machine {
            // Not saved: the next load works it out the same way from the kept deadline.
            inner.machine = now;
        }
        now
    }

    fn set(&self, inner: &mut Inner, next: PowerMachine) -> Result<(), PowerError> {
        if next != inner.machine {
            self.store.save_power(&next)?;
            inner.machine = next;
        }
        Ok(())
    }

    /// Puts the host in standby; `occupancy` says what is still here (asked under the lock, so
    /// no VM can be admitted meanwhile).
    ///
    /// # Errors
    /// See [`PowerMachine::standby`]; [`PowerError::Store`].
    pub fn standby(
        &self,
        occupancy: impl FnOnce() -> Occupancy,
    ) -> Result<drover_api::Power, PowerError> {
        let mut inner = lock(&self.inner);
        let occupancy = Occupancy {
            starting: inner.starting,
            ..occupancy()
        };
        let next = inner.machine.standby(self.clock.now(), occupancy)?;
        self.set(&mut inner, next)?;
        tracing::info!(state = next.state().as_str(), "power");
        Ok(next.view())
    }

    /// Wakes the host.
    ///
    /// # Errors
    /// [`PowerError::Store`].
    pub fn wake(&self) -> Result<drover_api::Power, PowerError> {
        let mut inner = lock(&self.inner);
        let delay = self.wake_delay.as_millis().min(u128::from(u64::MAX)) as u64;
        let next = inner.machine.wake(self.clock.now(), delay);
        self.set(&mut inner, next)?;
        tracing::info!(state = next.state().as_str(), "power");
        Ok(next.view())
    }

    /// Admits a VM to start here (only while active); hold the admission until it is
    /// registered.
    ///
    /// # Errors
    /// [`PowerError::InStandby`] or [`PowerError::Waking`].
    pub fn admit(&self) -> Result<Admission<'_>, PowerError> {
        let mut inner = lock(&self.inner);
        inner.machine.admit(self.clock.now())?;
        inner.starting += 1;
        Ok(Admission { power: self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn active() -> PowerMachine {
        PowerMachine::Active { since_unix_ms: 0 }
    }

    fn busy() -> Occupancy {
        Occupancy {
            vms: vec!["a".into(), "b".into()],
            migrations: vec!["m1".into()],
            starting: 0,
        }
    }

    #[test]
    fn standby_needs_an_empty_host_and_is_idempotent() {
        let e = active().standby(T0, busy()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host still has 2 VM(s) (a, b) and 1 migration(s) under way (m1): standby needs it empty"
        );
        let starting = Occupancy {
            starting: 1,
            ..Occupancy::default()
        };
        assert!(matches!(
            active().standby(T0, starting),
            Err(PowerError::Occupied(_))
        ));
        let standby = active().standby(T0, Occupancy::default()).unwrap();
        assert_eq!(standby, PowerMachine::Standby { since_unix_ms: T0 });
        // Again, even with something there: nothing changes, not even the time.
        assert_eq!(standby.standby(T0 + 5, busy()), Ok(standby));
        assert_eq!(standby.admit(T0), Err(PowerError::InStandby));
        assert_eq!(PowerError::InStandby.to_string(), "host is in standby");
    }

    #[test]
    fn wake_boots_for_the_delay_then_the_host_is_active() {
        let standby = PowerMachine::Standby { since_unix_ms: T0 };
        let waking = standby.wake(T0 + 100, 10_000);
        assert_eq!(
            waking,
            PowerMachine::Waking {
                since_unix_ms: T0 + 100,
                ready_at_unix_ms: T0 + 10_100
            }
        );
        assert_eq!(waking.state(), PowerState::Waking);
        assert_eq!(waking.view().ready_at_unix_ms, Some(T0 + 10_100));
        // Waking again changes nothing; the host takes no VM and no standby while booting.
        assert_eq!(waking.wake(T0 + 5_000, 10_000), waking);
        let e = waking.admit(T0 + 5_000).unwrap_err();
        assert_eq!(e.to_string(), "host is waking (active in 6 s)");
        assert!(matches!(
            waking.standby(T0 + 5_000, Occupancy::default()),
            Err(PowerError::Waking {
                remaining_ms: 5_100,
                ..
            })
        ));
        // Then it is active, since the deadline.
        let up = waking.at(T0 + 10_100);
        assert_eq!(
            up,
            PowerMachine::Active {
                since_unix_ms: T0 + 10_100
            }
        );
        assert_eq!(waking.admit(T0 + 10_100), Ok(()));
        // Waking an active host is a no-op; a delay of 0 wakes at once.
        assert_eq!(up.wake(T0 + 20_000, 10_000), up);
        assert_eq!(
            standby.wake(T0 + 1, 0),
            PowerMachine::Active {
                since_unix_ms: T0 + 1
            }
        );
    }

    /// The wrapper on tokio's paused clock: no real waiting, the deadline passes when told.
    #[tokio::test(start_paused = true)]
    async fn the_host_is_active_once_the_wake_delay_has_passed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let power = Power::load(store.clone(), Duration::from_secs(10)).expect("load");
        assert_eq!(power.current().state(), PowerState::Active);
        // Waking an active host: a no-op, nothing written.
        assert_eq!(power.wake().expect("wake").state, PowerState::Active);
        assert_eq!(store.load_power().expect("read"), None);

        let admitted = power.admit().expect("active");
        let e = power.standby(Occupancy::default).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host still has 1 VM(s) starting: standby needs it empty"
        );
        drop(admitted);
        let p = power.standby(Occupancy::default).expect("standby");
        assert_eq!(p.state, PowerState::Standby);
        assert!(matches!(power.admit(), Err(PowerError::InStandby)));

        let p = power.wake().expect("wake");
        assert_eq!(p.state, PowerState::Waking);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(power.current().state(), PowerState::Waking);
        assert!(matches!(power.admit(), Err(PowerError::Waking { .. })));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(power.current().state(), PowerState::Active);
        assert!(power.admit().is_ok());

        // The state survives a restart: standby is kept; a wake whose deadline passed while
        // the agent was down loads as active.
        power.standby(Occupancy::default).expect("standby");
        let again = Power::load(store.clone(), Duration::from_secs(10)).expect("load");
        assert_eq!(again.current().state(), PowerState::Standby);
        again.wake().expect("wake");
        let kept = store.load_power().expect("read").expect("kept");
        assert_eq!(kept.state(), PowerState::Waking);
        let far = kept.at(u64::MAX);
        assert_eq!(far.state(), PowerState::Active);
    }
}
