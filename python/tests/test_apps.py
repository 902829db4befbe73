"""Apps with Python processors, on both logs, in both styles, under both
guarantees: state per key kept by Riffle's state layer, outputs, dead
letters for Python exceptions."""

import time

import pytest

import riffle
from conftest import fresh, read_all, wait_for

STYLES = ["keyed", "actors"]
GUARANTEES = ["at-least-once", "exactly-once"]


def counter(output):
    """Counts records per key; a negative `n` raises."""

    def step(key, value, state, ctx):
        if value["n"] < 0:
            raise ValueError(f"negative reading {value['n']}")
        state = state or {"count": 0, "total": 0}
        state["count"] += 1
        state["total"] += value["n"]
        ctx.send(output, {"count": state["count"], "total": state["total"]}, key=key)
        return state

    return step


def produce(log, topic, items):
    p = riffle.Producer(log)
    for key, value in items:
        p.produce(topic, value, key=key)
    assert p.flush() == 0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_keyed_state_survives_a_restart(log, style, guarantee):
    src, out, dlq, group = fresh("in"), fresh("out"), fresh("dlq"), fresh("app")
    for t in (src, out):
        log.create_topic(t, partitions=4)
    produce(log, src, [(f"k{i % 5}", {"n": i}) for i in range(50)])
    opts = dict(style=style, workers=3, guarantee=guarantee, dead_letter=dlq, instance="one")
    app = riffle.App(log, group, src, riffle.keyed(counter(out)), **opts).start()
    wait_for(lambda: app.stats()["processed"] >= 50, what="50 records processed")
    app.stop()
    # A second run continues each key's count from the changelog.
    produce(log, src, [(f"k{i % 5}", {"n": 1}) for i in range(10)])
    app = riffle.App(log, group, src, riffle.keyed(counter(out)), **opts).start()
    wait_for(lambda: app.stats()["processed"] >= 10, what="10 more records processed")
    app.stop()
    got = read_all(log, out, 60, read_committed=guarantee == "exactly-once")
    last = {}
    for r in got:
        last[r.key_str()] = r.json()
    assert len(got) == 60  # none repeated: everything was committed before stopping
    for k in range(5):
        total = sum(i for i in range(50) if i % 5 == k) + 2
        assert last[f"k{k}"] == {"count": 12, "total": total}


@pytest.mark.parametrize("style", STYLES)
def test_python_exceptions_are_dead_lettered_with_their_text(log, style):
    src, out, dlq, group = fresh("in"), fresh("out"), fresh("dlq"), fresh("app")
    for t in (src, out):
        log.create_topic(t, partitions=2)
    produce(log, src, [("good", {"n": 1}), ("bad", {"n": -7}), ("worse", b"not json"), ("good", {"n": 2})])
    app = riffle.App(log, group, src, riffle.keyed(counter(out)), style=style, dead_letter=dlq).start()
    wait_for(lambda: app.stats()["processed"] + app.stats()["dead_letters"] >= 4, what="4 records")
    stats = app.stats()
    app.stop()
    assert stats["dead_letters"] == 2
    letters = {r.key_str(): r for r in read_all(log, dlq, 2)}
    assert set(letters) == {"bad", "worse"}
    bad = letters["bad"].json()
    # Retried like a Rust processor's error, then dead-lettered with the
    # exception's type and message.
    assert bad["error"] == "failed 3 times, last: ValueError: negative reading -7"
    assert bad["topic"] == src
    headers = dict(letters["bad"].headers)
    assert headers["__riffle.errors.reason"] == bad["error"].encode()
    assert headers["__riffle.errors.topic"] == src.encode()
    assert letters["worse"].json()["error"].startswith("cannot decode record: not JSON")
    assert letters["worse"].json()["value"] == "not json"
    # The failed record left its key's state alone.
    assert [r.json() for r in read_all(log, out, 2)] == [{"count": 1, "total": 1}, {"count": 2, "total": 3}]


def test_a_state_that_is_not_json_is_dead_lettered(log):
    src, dlq, group = fresh("in"), fresh("dlq"), fresh("app")
    log.create_topic(src)
    produce(log, src, [("k", {"n": 1})])
    app = riffle.App(log, group, src, riffle.keyed(lambda k, v, s, ctx: {"seen": {1, 2}}),
                     dead_letter=dlq, retries=0).start()
    wait_for(lambda: app.stats()["dead_letters"] == 1, what="a dead letter")
    app.stop()
    (letter,) = read_all(log, dlq, 1)
    assert "set is not JSON-serializable" in letter.json()["error"]
    assert "key 'k'" in letter.json()["error"]


def test_stateless_steps(log):
    src, dlq = fresh("in"), fresh("dlq")
    outs = {name: fresh(name) for name in ("doubled", "even", "split")}
    for t in [src, *outs.values()]:
        log.create_topic(t, partitions=2)
    produce(log, src, [(f"k{i}", {"n": i}) for i in range(6)] + [("x", {"m": 0})])
    apps = [
        riffle.App(log, fresh("map"), src, riffle.map(outs["doubled"], lambda v: {"n": v["n"] * 2}), dead_letter=dlq),
        riffle.App(log, fresh("filter"), src, riffle.filter(outs["even"], lambda v: v.get("n", 1) % 2 == 0)),
        riffle.App(log, fresh("flat"), src, riffle.flat_map(
            outs["split"], lambda v: [("a", v), v] if "n" in v else [])),
    ]
    running = [a.start() for a in apps]
    for r in running:
        wait_for(lambda: r.stats()["processed"] + r.stats()["dead_letters"] >= 7, what="7 records")
    for r in running:
        r.stop()
    doubled = read_all(log, outs["doubled"], 6)
    assert sorted((r.key_str(), r.json()["n"]) for r in doubled) == [(f"k{i}", 2 * i) for i in range(6)]
    (letter,) = read_all(log, dlq, 1)
    assert letter.json()["error"] == "KeyError: 'n'"
    even = read_all(log, outs["even"], 3)
    assert sorted(r.value for r in even) == [b'{"n":0}', b'{"n":2}', b'{"n":4}']
    split = read_all(log, outs["split"], 12)
    assert sorted(r.key_str() for r in split) == sorted(["a"] * 6 + [f"k{i}" for i in range(6)])


def test_bytes_codec_and_key_field(log):
    src, out = fresh("in"), fresh("out")
    for t in (src, out):
        log.create_topic(t, partitions=2)
    p = riffle.Producer(log)
    p.produce(src, {"id": "h1", "v": 1})  # no key: the key is in the body
    p.flush()

    def keep_last(key, value, state, ctx):
        ctx.send(out, {"key": key, "before": state}, key=key)
        return value["v"]

    # Key-less records are spread over the partitions at random: routed
    # through a repartition topic keyed by the body's id, one key's state
    # is one. (Records of two input partitions come in no set order, so the
    # second is produced once the first is processed.)
    app = riffle.App(log, fresh("kf"), src, riffle.keyed(keep_last, key_field="id"),
                     repartition=fresh("rekey")).start()
    wait_for(lambda: app.stats()["processed"] >= 1, what="1 record")
    p.produce(src, {"id": "h1", "v": 2})
    p.flush()
    wait_for(lambda: app.stats()["processed"] >= 2, what="2 records")
    app.stop()
    assert [r.json() for r in read_all(log, out, 2)] == [{"key": "h1", "before": None}, {"key": "h1", "before": 1}]
    up = fresh("up")
    log.create_topic(up)
    app = riffle.App(log, fresh("b"), src, riffle.map(up, lambda b: b.upper(), codec="bytes")).start()
    wait_for(lambda: app.stats()["processed"] >= 2, what="2 records")
    app.stop()
    # The two input records may be in different partitions: in any order.
    assert sorted(r.value for r in read_all(log, up, 2)) == [b'{"ID":"H1","V":1}', b'{"ID":"H1","V":2}']


def test_app_options_are_checked(log):
    with pytest.raises(ValueError, match="style must be"):
        riffle.App(log, "g", "t", riffle.keyed(lambda *a: None), style="threads")
    with pytest.raises(riffle.RiffleError, match="guarantee must be"):
        riffle.App(log, "g", "t", riffle.keyed(lambda *a: None), guarantee="maybe")
    with pytest.raises(riffle.UnknownTopicError):
        riffle.App(log, "g", fresh("missing"), riffle.keyed(lambda *a: None)).start()
