"""The Python heater controller (examples/heater.py) on a real broker
against the reference model, per heater, in both styles; under
exactly-once with the controller killed (SIGKILL) and restarted while
input arrives."""

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import riffle
from conftest import BROKERS, fresh, needs_kafka, read_all

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "heater.py"
ON, OFF = 0, 1


def make_input(heaters=80, records=6000, seed=7):
    """Settings and measurements for `heaters` heaters, in production order."""
    rng = random.Random(seed)
    setting = {}
    out = []
    for _ in range(records):
        h = f"heater-{rng.randrange(heaters)}"
        if h not in setting and rng.random() < 0.2 or rng.random() < 0.03:
            setting[h] = round(rng.uniform(40, 50), 1)
            out.append((h, {"temperature": setting[h], "up_delta": 1.0, "down_delta": rng.choice([0.5, 1.0])}))
        else:
            base = setting.get(h, 45.0)
            out.append((h, {"measurement": round(base + rng.uniform(-3, 3), 2)}))
    return out


def model(records):
    """The rule (docs/heater.md), per heater: the commands it sends."""
    state, commands = {}, {}
    for h, msg in records:
        if "measurement" not in msg:
            s = state.setdefault(h, {"last": None})
            s.update(td=msg["temperature"], up=msg["up_delta"], down=msg["down_delta"])
            continue
        s = state.get(h)
        if s is None:
            continue
        m = msg["measurement"]
        c = OFF if m > s["td"] + s["up"] else ON if m < s["td"] - s["down"] else None
        if c is not None and c != s["last"]:
            s["last"] = c
            commands.setdefault(h, []).append(c)
    return commands


class Controller:
    """examples/heater.py as a child process."""

    def __init__(self, *args):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--brokers", BROKERS, *args],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines = []
        self.running = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("heater: running"):
                self.running.set()

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0, "".join(self.lines)


def caught_up(log, group, topic):
    ends = {p.id: p.high for p in log.describe_topic(topic).partitions}
    committed = log.committed_offsets(group, topic)
    return all((committed.get(p) or 0) >= end for p, end in ends.items())


@needs_kafka
@pytest.mark.parametrize("style", ["keyed", "actors"])
@pytest.mark.parametrize("guarantee,kills", [("at-least-once", 0), ("exactly-once", 4)])
def test_python_heater_controller_equals_the_model(style, guarantee, kills):
    log = riffle.Log.kafka(BROKERS)
    sensor, control, group = fresh("sensor"), fresh("heatercontrol"), fresh("heater-py")
    log.create_topic(sensor, partitions=4)
    log.create_topic(control, partitions=4)
    records = make_input()
    expected = model(records)
    args = ["--input", sensor, "--output", control, "--group", group, "--style", style,
            "--guarantee", guarantee, "--instance", "p0", "--workers", "3"]

    def feed():
        p = riffle.Producer(log)
        for i, (h, msg) in enumerate(records):
            p.produce(sensor, msg, key=h)
            if i % 500 == 499:
                p.flush()
                time.sleep(0.25)
        assert p.flush() == 0

    feeder = threading.Thread(target=feed)
    feeder.start()
    rng = random.Random(3)
    for _ in range(kills):
        c = Controller(*args)
        time.sleep(rng.uniform(0.8, 2.5))  # sometimes before it is running, mostly after
        c.kill()
    feeder.join()
    c = Controller(*args)
    # Wait until it runs: the killed instance may have committed everything
    # already, and a SIGTERM before the handler is installed kills it.
    assert c.running.wait(60), "the controller did not start: " + "".join(c.lines)
    deadline = time.monotonic() + 90
    while not caught_up(log, group, sensor):
        assert time.monotonic() < deadline, "the controller did not catch up: " + "".join(c.lines)
        assert c.proc.poll() is None, "".join(c.lines)
        time.sleep(0.2)
    c.stop()
    total = sum(len(v) for v in expected.values())
    got = read_all(log, control, total, read_committed=guarantee == "exactly-once")
    commands = {}
    for r in got:
        assert r.value in (b'{"control":0}', b'{"control":1}'), r.value
        commands.setdefault(r.key_str(), []).append(r.json()["control"])
    assert total > 500
    # Per heater: no command lost, none repeated (under at-least-once,
    # because nothing failed; under exactly-once, despite the kills).
    assert commands == expected
    for t in (sensor, control):
        log.delete_topic(t)
