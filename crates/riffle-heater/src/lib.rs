//! The chapter's heater application on Riffle: wire formats, the controller
//! (a keyed processor), and a simulator of many heaters.
//!
//! # Layout
//!
//! - [`messages`]: the wire formats on `sensor` and `heatercontrol`.
//! - [`controller`]: the thermostat rule as a keyed processor.
//! - [`simulator`]: heaters with the chapter's physics, many per process.

pub mod controller;
mod json;
pub mod messages;
pub mod simulator;
