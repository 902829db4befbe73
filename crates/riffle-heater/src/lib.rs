//! The chapter's heater application on Riffle: wire formats, the controller
//! (a keyed processor), and a simulator of many heaters.
//!
//! # Layout
//!
//! - [`messages`]: the wire formats on `sensor` and `heatercontrol`.
//! - [`controller`]: the thermostat rule as a keyed processor.
//! - [`simulator`]: heaters with the chapter's physics, many per process.
//! - [`stats`]: per-heater statistics per window, kept by the controller.

pub mod controller;
mod json;
pub mod messages;
pub mod simulator;
pub mod stats;
