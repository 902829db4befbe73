"""Shared fixtures: the logs under test and fresh names.

Kafka tests run against the broker scripts/kafka.sh starts; its address
comes from RIFFLE_TEST_BROKERS (as for the Rust tests: scripts/test.sh
sets it). Without it they are skipped, saying so.
"""

import os
import time
import uuid

import pytest

import riffle

BROKERS = os.environ.get("RIFFLE_TEST_BROKERS")
needs_kafka = pytest.mark.skipif(not BROKERS, reason="RIFFLE_TEST_BROKERS is not set (scripts/kafka.sh env)")


def fresh(prefix: str) -> str:
    """A name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=needs_kafka)])
def log(request):
    """Each test with this fixture runs on both logs."""
    if request.param == "embedded":
        return riffle.Log.embedded()
    return riffle.Log.kafka(BROKERS)


@pytest.fixture
def kafka():
    if not BROKERS:
        pytest.skip("RIFFLE_TEST_BROKERS is not set (scripts/kafka.sh env)")
    return riffle.Log.kafka(BROKERS)


def read_all(log, topic, expected, timeout=30.0, read_committed=False):
    """Reads `topic` from the start (a fresh group) until `expected`
    records came, or `timeout`; then reads a little longer, so that extra
    records (duplicates) show too."""
    c = riffle.Consumer(log, fresh("reader"), topic, read_committed=read_committed)
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got += c.consume(1000, 0.2)
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            got += c.consume(1000, 0.2)
    finally:
        c.close()
    return got


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
