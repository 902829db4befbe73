//! `riffle heater`: the chapter's heater application.

pub mod controller;

use clap::Subcommand;
use riffle::Result;

use crate::backend::BrokerArgs;

#[derive(Subcommand)]
pub enum HeaterCommand {
    /// Run the heater controller: measurements and settings in, ON/OFF commands out (needs a broker).
    Controller(controller::ControllerArgs),
}

pub fn run(brokers: &BrokerArgs, command: HeaterCommand) -> Result<()> {
    match command {
        HeaterCommand::Controller(a) => controller::run(brokers, a),
    }
}
