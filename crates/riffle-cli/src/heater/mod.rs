//! `riffle heater`: the chapter's heater application.

pub mod controller;
pub mod simulate;
pub mod view;
pub mod watch;

use clap::Subcommand;
use riffle::Result;

use crate::backend::LogArgs;

#[derive(Subcommand)]
pub enum HeaterCommand {
    // Boxed: its flags are many, and an enum is as large as its largest
    // variant.
    /// Run the heater controller: measurements and settings in, ON/OFF commands out (needs a broker).
    Controller(Box<controller::ControllerArgs>),
    /// Simulate many heaters: measurements and settings out, commands in (needs a broker).
    Simulate(simulate::SimulateArgs),
}

pub fn run(brokers: &LogArgs, command: HeaterCommand) -> Result<()> {
    match command {
        HeaterCommand::Controller(a) => controller::run(brokers, *a),
        HeaterCommand::Simulate(a) => simulate::run(brokers, a),
    }
}
