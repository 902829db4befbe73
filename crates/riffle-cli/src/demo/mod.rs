//! `riffle demo`: runnable examples of the chapter.

mod heater;
mod hello;
mod mqtt;

use clap::Subcommand;
use riffle::Result;

use crate::backend::LogArgs;

#[derive(Subcommand)]
pub enum DemoCommand {
    /// The chapter's example 6-4: one producer, N consumers in one group.
    Hello(hello::HelloArgs),
    /// Heaters and their controller together, live: the main demo.
    Heater(Box<heater::HeaterDemoArgs>),
}

pub fn run(brokers: &LogArgs, command: DemoCommand) -> Result<()> {
    match command {
        DemoCommand::Hello(a) => hello::run(brokers, a),
        DemoCommand::Heater(a) => heater::run(brokers, *a),
    }
}
