//! Pure domain rules: money, the catalog of presets and backends, manifests, pricing and backend
//! selection, the job state machine and the planner. Nothing here knows about tonic or sqlx.

pub mod billing;
pub mod calendar;
pub mod catalog;
pub mod job;
pub mod manifest;
pub mod media;
pub mod money;
pub mod planner;
pub mod pricing;
pub mod spec;
pub mod state;
pub mod tenant;
pub mod validate;

pub use catalog::{Backend, BackendSpec, Catalog, PresetSpec, Tier};
pub use money::Money;
pub use state::JobState;
