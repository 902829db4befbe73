"""The chapter's heater controller rule (examples 6-7 and 6-8), as a keyed
processor for :class:`riffle.App`.

Per heater, with setting Td, up and down: a measurement above Td + up
turns the heater OFF, one below Td - down turns it ON, anything between
does nothing; a command is sent only when it differs from the last one
sent to that heater; measurements before the first setting are ignored.
(The book's ``Action`` enum swaps ON and OFF; this follows the heater's own
protobuf enum, ``On = 0; Off = 1``, as docs/heater.md does.)

Riffle keeps each heater's state -- its setting and its last command -- in
the app's changelog topic, so it survives a crash and follows the heater's
partition to whichever process owns it next: the chapter's footnote 7
("actor state is lost when a node dies") answered.
"""

from typing import Any, Callable, Dict, Optional

from . import Context, keyed, Processor

ON, OFF = 0, 1  # the heater's protobuf enum: On = 0, Off = 1

State = Optional[Dict[str, Any]]


def controller(output: str) -> Callable[[str, Dict[str, Any], State, Context], State]:
    """The rule, sending commands to ``output``: Riffle calls it once per
    record with the heater's id, the decoded record and the heater's state
    (None until its first setting); it returns the new state."""

    def control(heater: str, msg: Dict[str, Any], state: State, ctx: Context) -> State:
        if "measurement" not in msg:  # a thermostat setting
            return {"td": msg["temperature"], "up": msg["up_delta"],
                    "down": msg["down_delta"], "last": (state or {}).get("last")}
        if state is None:  # measurements before the first setting are ignored
            return None
        m = msg["measurement"]
        command = (OFF if m > state["td"] + state["up"]
                   else ON if m < state["td"] - state["down"] else None)
        if command is not None and command != state["last"]:  # only changes are sent
            ctx.send(output, {"control": command}, key=heater)
            state["last"] = command
        return state

    return control


def processor(output: str = "heatercontrol") -> Processor:
    """The controller as an app's processor."""
    return keyed(controller(output))
