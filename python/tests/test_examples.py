"""The chapter's examples redone on Riffle (python/examples/), run as
written against the real broker, each starting its own Ray instance."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import riffle
from conftest import BROKERS, fresh, needs_kafka, read_all

pytest.importorskip("ray")
pytestmark = needs_kafka
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(args, timeout=180):
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=EXAMPLES)


def test_hello_example_runs_as_written():
    # Examples 6-4 to 6-6: five consumers, two partitions each.
    topic = fresh("hello")
    r = run_example(["hello.py", "--brokers", BROKERS, "--topic", topic, "--consumers", "5",
                     "--count", "8", "--interval", "0.1"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Topic {topic} is re-created" in r.stdout
    assert "published 8, consumers handled 8" in r.stdout
    text = r.stdout + r.stderr
    assert text.count("Message delivered to topic") == 8
    assert text.count("new message: topic=") == 8


def test_heater_ray_example_runs_as_written():
    log = riffle.Log.kafka(BROKERS)
    sensor, control, group = fresh("sensor"), fresh("heatercontrol"), fresh("heater-ray")
    log.create_topic(sensor, partitions=10)
    p = riffle.Producer(log)
    p.produce(sensor, {"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}, key="1234")
    for m in (45.0, 45.9, 46.2, 46.1, 43.9):
        p.produce(sensor, {"measurement": m}, key="1234")
    p.flush()
    r = run_example(["heater_ray.py", "--brokers", BROKERS, "--input", sensor, "--output", control,
                     "--group", group, "--actors", "2", "--guarantee", "exactly-once",
                     "--duration", "3", "--verbose"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 actors own the 10 partitions" in r.stdout
    assert "key  1234  value  {'measurement': 46.2}" in r.stdout + r.stderr
    got = read_all(log, control, 2, read_committed=True)
    assert [(x.key_str(), x.value) for x in got] == [("1234", b'{"control":1}'), ("1234", b'{"control":0}')]
