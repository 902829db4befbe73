"""Riffle inside Ray actors, on a local Ray instance and the real broker:
consumer actors sharing a group, app actors with a crash under
exactly-once."""

import threading
import time

import pytest

import riffle
from conftest import BROKERS, fresh, needs_kafka, read_all, wait_for

ray = pytest.importorskip("ray")
import riffle.ray  # noqa: E402

pytestmark = needs_kafka


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


def count_per_key(output):
    def step(key, value, state, ctx):
        n = (state or 0) + 1
        ctx.send(output, {"n": n}, key=key)
        return n

    return step


def test_consumer_actors_share_the_partitions(local_ray):
    log = riffle.Log.kafka(BROKERS)
    topic, group = fresh("ray-in"), fresh("ray-g")
    log.create_topic(topic, partitions=10)
    workers = riffle.ray.start_consumers(2, log, group, topic, lambda cid, recs: None, batch=True)
    workers.wait_assigned(10)
    owned = workers.assignments()
    assert sorted(len(a) for a in owned) == [5, 5]
    assert sorted(p for a in owned for _, p in a) == list(range(10))
    p = riffle.Producer(log)
    for i in range(300):
        p.produce(topic, {"i": i}, key=str(i))
    p.flush()
    wait_for(lambda: sum(int(o or 0) for o in log.committed_offsets(group, topic).values()) >= 300,
             what="the group to commit 300 records")
    counts = workers.stop()
    assert sum(counts) == 300 and all(c > 0 for c in counts)


def test_embedded_log_is_refused_for_actors(local_ray):
    with pytest.raises(ValueError, match="cannot share the embedded log"):
        riffle.ray.start_consumers(1, riffle.Log.embedded(), "g", "t", print)


@pytest.mark.parametrize("style", ["keyed", "actors"])
def test_app_actor_killed_under_exactly_once_loses_and_repeats_nothing(local_ray, style):
    log = riffle.Log.kafka(BROKERS)
    src, out, group = fresh("ray-src"), fresh("ray-out"), fresh("ray-app")
    log.create_topic(src, partitions=4)
    log.create_topic(out, partitions=4)
    proc = riffle.keyed(count_per_key(out))
    opts = dict(style=style, guarantee="exactly-once", workers=2)
    workers = riffle.ray.start_apps(2, log, group, src, proc, **opts)
    workers.wait_assigned(4)
    keys, total = 40, 4000

    def feed():
        p = riffle.Producer(log)
        for i in range(total):
            p.produce(src, {"i": i}, key=f"k{i % keys}")
            if i % 400 == 399:
                p.flush()
                time.sleep(0.1)
        p.flush()

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.8)
    # A crash: the actor's process ends at once; its replacement has the
    # same instance name, so it fences the dead one's open transaction.
    workers.kill(0, restart=lambda: riffle.ray.AppActor.remote(
        log, group, src, proc, instance=f"{group}-0", **opts))
    feeder.join()
    wait_for(lambda: sum(int(o or 0) for o in log.committed_offsets(group, src).values()) >= total,
             timeout=90, what=f"the group to commit {total} records")
    workers.stop()
    got = read_all(log, out, total, read_committed=True)
    per_key = {}
    for r in got:
        per_key.setdefault(r.key_str(), []).append(r.json()["n"])
    # Each key's counts are 1, 2, ..., n: none lost, none repeated.
    assert len(got) == total
    assert all(ns == list(range(1, total // keys + 1)) for ns in per_key.values()), per_key
