"""Producer and consumer (examples 6-1 and 6-2) on both logs."""

import pickle
import threading
import time

import pytest

import riffle
from conftest import BROKERS, fresh, needs_kafka


def test_delivery_callbacks_report_every_record(log):
    topic = fresh("deliver")
    log.create_topic(topic, partitions=3)
    reports = []
    p = riffle.Producer(log, on_delivery=lambda err, r: reports.append((err, r)))
    for i in range(50):
        p.produce(topic, {"name": "john", "favorite_number": i}, key=str(i))
    assert p.flush(30) == 0
    assert len(reports) == 50
    assert all(err is None and r.error is None for err, r in reports)
    offsets = sorted((r.partition, r.offset) for _, r in reports)
    per_partition = {}
    for part, off in offsets:
        per_partition.setdefault(part, []).append(off)
    # Offsets per partition are 0, 1, 2, ... with none missing.
    assert all(offs == list(range(len(offs))) for offs in per_partition.values())
    assert p.stats() == {"sent": 50, "delivered": 50, "failed": 0}
    p.close()
    with pytest.raises(riffle.ClosedError):
        p.produce(topic, "late")


def test_values_keys_and_headers_round_trip(log):
    topic = fresh("values")
    log.create_topic(topic, partitions=1)
    p = riffle.Producer(log)
    p.produce(topic, {"b": 1, "a": [1.5, None, True]}, key="k1", headers=[("trace", "abc"), ("bin", b"\xff"), ("none", None)])
    p.produce(topic, "text é", key=b"k2")
    p.produce(topic, b"\x00\x01")
    p.flush()
    c = riffle.Consumer(log, fresh("g"), topic)
    got = []
    while len(got) < 3:
        got += c.consume(10, 1.0)
    c.close()
    first, second, third = got
    # Compact JSON, keys in insertion order, like Riffle's own outputs.
    assert first.value == b'{"b":1,"a":[1.5,null,true]}'
    assert first.json() == {"b": 1, "a": [1.5, None, True]}
    assert first.key == b"k1" and first.key_str() == "k1"
    assert first.headers == [("trace", b"abc"), ("bin", b"\xff"), ("none", None)]
    assert second.value == "text é".encode() and second.key == b"k2"
    assert third.key is None and third.value == b"\x00\x01"
    with pytest.raises(ValueError, match="not JSON"):
        third.json()


def test_unencodable_values_are_refused_with_their_type(log):
    p = riffle.Producer(log)
    with pytest.raises(TypeError, match="set is not JSON-serializable"):
        p.produce("anything", {"x": {1, 2}})
    with pytest.raises(TypeError, match="NaN"):
        p.produce("anything", float("nan"))


def test_keys_land_where_the_java_client_puts_them(log):
    # murmur2(key) % partitions, on both logs alike.
    topic = fresh("keys")
    log.create_topic(topic, partitions=10)
    seen = []
    p = riffle.Producer(log, on_delivery=lambda e, r: seen.append(r.partition))
    for key in ["21", "foobar", "abc"]:
        p.produce(topic, "x", key=key)
        p.flush()
    # (murmur2(key) & 0x7fffffff) % 10, murmur2 values from Kafka's Java
    # client (Utils.murmur2): -973932308, -790332482, 479470107.
    assert seen == [0, 6, 7]


def test_consumer_resumes_after_what_it_handed_out(log):
    topic, group = fresh("resume"), fresh("g")
    log.create_topic(topic, partitions=2)
    p = riffle.Producer(log)
    for i in range(20):
        p.produce(topic, {"i": i}, key=str(i))
    p.flush()
    c = riffle.Consumer(log, group, topic)
    first = []
    while len(first) < 20:
        first += c.consume(7, 1.0)
    c.close()  # commits what was handed out
    assert sorted(r.json()["i"] for r in first) == list(range(20))
    assert sum(o for o in log.committed_offsets(group, topic).values() if o) == 20
    for i in range(20, 25):
        p.produce(topic, {"i": i}, key=str(i))
    p.flush()
    c = riffle.Consumer(log, group, topic)
    again = []
    deadline = time.monotonic() + 20
    while len(again) < 5 and time.monotonic() < deadline:
        again += c.consume(100, 0.5)
    c.close()
    assert sorted(r.json()["i"] for r in again) == list(range(20, 25))


def test_a_failing_callback_leaves_its_record_uncommitted(log):
    topic, group = fresh("fail"), fresh("g")
    log.create_topic(topic, partitions=1)
    p = riffle.Producer(log)
    for i in range(10):
        p.produce(topic, {"i": i})
    p.flush()
    c = riffle.Consumer(log, group, topic)
    handled = []

    def handle(record):
        if record.json()["i"] == 6:
            raise RuntimeError("cannot handle 6")
        handled.append(record.json()["i"])

    with pytest.raises(RuntimeError, match="cannot handle 6"):
        c.run(handle)
    c.close()
    assert handled == [0, 1, 2, 3, 4, 5]
    assert log.committed_offsets(group, topic) == {0: 6}


def test_stop_ends_a_run_in_another_thread(log):
    topic = fresh("stop")
    log.create_topic(topic)
    assigned = []
    c = riffle.Consumer(log, fresh("g"), topic, on_assign=assigned.append)
    t = threading.Thread(target=c.run, args=(lambda r: None,))
    t.start()
    deadline = time.monotonic() + 20
    while not assigned and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assigned == [[(topic, 0)]]
    t0 = time.monotonic()
    c.stop()
    t.join(5)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 1.0
    assert c.stopped
    assert list(c) == []  # iteration ends at once once stopped
    c.close()


def test_iteration_and_batches(log):
    topic = fresh("iter")
    log.create_topic(topic, partitions=3)
    p = riffle.Producer(log)
    for i in range(30):
        p.produce(topic, {"i": i}, key=str(i))
    p.flush()
    c = riffle.Consumer(log, fresh("g"), topic)
    seen = []
    for batch in c.batches(max_records=8):
        assert 1 <= len(batch) <= 8
        seen += batch
        if len(seen) >= 30:
            c.stop()
    c.close()
    assert sorted(r.json()["i"] for r in seen) == list(range(30))


@needs_kafka
def test_kafka_log_pickles_as_its_settings_and_embedded_refuses(tmp_path):
    log = riffle.Log.kafka(BROKERS, config={"client.id": "pickled", "enable.idempotence": True})
    again = pickle.loads(pickle.dumps(log))
    assert again.describe() == log.describe()
    assert again.list_topics() is not None
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(riffle.Log.embedded())


@needs_kafka
def test_settings_from_a_properties_file_as_the_cli_reads_them(tmp_path):
    f = tmp_path / "client.properties"
    f.write_text(f"# as riffle -F reads it\nbootstrap.servers={BROKERS}\nclient.id=from-file\n")
    log = riffle.Log.kafka(config_file=str(f))
    assert BROKERS in log.describe()
    log.list_topics()
    bad = tmp_path / "bad.properties"
    bad.write_text("bootstrap.servers\n")
    with pytest.raises(riffle.RiffleError, match="bad.properties"):
        riffle.Log.kafka(config_file=str(bad))


def test_unreachable_broker_is_reported_at_once():
    t0 = time.monotonic()
    with pytest.raises(riffle.RiffleError, match="127.0.0.1:1"):
        riffle.Log.kafka("127.0.0.1:1")
    assert time.monotonic() - t0 < 8


def test_embedded_log_in_a_directory_keeps_records(tmp_path):
    log = riffle.Log.embedded(tmp_path / "data", fsync="never")
    log.create_topic("kept")
    p = riffle.Producer(log)
    p.produce("kept", "v")
    p.close()
    with pytest.raises(riffle.RiffleError, match="in use by another process"):
        riffle.Log.embedded(tmp_path / "data")
    del p, log
    import gc
    gc.collect()
    log = riffle.Log.embedded(tmp_path / "data")
    assert log.describe_topic("kept").partitions[0].high == 1
