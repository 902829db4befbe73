//! The thermostat rule as a keyed processor: one controller state per
//! heater, fed by measurements and settings, emitting ON/OFF commands.
//!
//! The rule (docs/heater.md): with setting `Td`, `up`, `down`, a measurement
//! `m > Td + up` turns the heater OFF and `m < Td - down` turns it ON;
//! anything in between changes nothing. A command is sent only when it
//! differs from the last one sent to that heater, and measurements before
//! the first setting are ignored. (The book's code names ON and OFF the
//! wrong way round; this is the rule its heater expects.)

use std::sync::Arc;

use riffle::log::RecordRef;
use riffle::process::{Context, KeyedProcessor};
use riffle::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::messages::{decode_sensor, Command, SensorMessage, Setting};

/// One heater's controller state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerState {
    pub setting: Option<Setting>,
    pub last_command: Option<Command>,
}

impl ControllerState {
    /// Applies one message; returns the command to send, if any.
    pub fn apply(&mut self, msg: SensorMessage) -> Option<Command> {
        match msg {
            SensorMessage::Setting(s) => {
                self.setting = Some(s);
                None
            }
            SensorMessage::Measurement(m) => {
                let s = self.setting?;
                let wanted = if m > s.temperature + s.up_delta {
                    Command::Off
                } else if m < s.temperature - s.down_delta {
                    Command::On
                } else {
                    return None;
                };
                (self.last_command != Some(wanted)).then(|| {
                    self.last_command = Some(wanted);
                    wanted
                })
            }
        }
    }
}

/// The heater controller: reads the sensor topic (and optionally a
/// settings topic), writes commands keyed by heater id to the control topic.
#[derive(Debug, Clone)]
pub struct Controller {
    control_topic: Arc<str>,
}

impl Controller {
    pub fn new(control_topic: &str) -> Self {
        Self {
            control_topic: control_topic.into(),
        }
    }
}

impl KeyedProcessor for Controller {
    type Input = SensorMessage;
    type State = ControllerState;

    fn decode(&self, record: &RecordRef<'_>) -> Result<(String, SensorMessage)> {
        decode_sensor(record.key, record.value).map_err(Error::Decode)
    }

    fn process(
        &mut self,
        key: &str,
        msg: &SensorMessage,
        state: &mut ControllerState,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        if let Some(cmd) = state.apply(*msg) {
            ctx.send(&self.control_topic, Some(key), cmd.to_json())?;
        }
        Ok(())
    }
}
