//! The control step in virtual time against a scripted cluster: [`rig::Cluster`] builds the
//! observation, [`rig::Rig`] runs looks one second apart and carries the actions out like a
//! fleet of agents would (migrations take a few looks, wakes take a few looks).

mod rig;

mod churn;
mod consolidation;
mod fuzz;
mod lifecycle;
mod modes;
mod relief;
mod rules;
mod scale;
mod traffic;
