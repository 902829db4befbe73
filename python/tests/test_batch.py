"""Keyed processors over a backlog, where Riffle hands a whole poll (or a
worker's batch) of records to Python under one hold of the interpreter:
per-key order and state as a reference model has them, a failing record
dead-lettered alone with its key's state as it was before it (even when
the function changed the state in place before raising), on both logs,
in both styles, under both guarantees; and other Python threads run while
a long batch is processed."""

import threading
import time

import pytest

import riffle
from conftest import fresh, read_all, wait_for

STYLES = ["keyed", "actors"]
GUARANTEES = ["at-least-once", "exactly-once"]
KEYS = 7
RECORDS = 700


def backlog():
    """(key, value) in production order: RECORDS records over KEYS keys,
    every 97th a poison record (n < 0)."""
    return [(f"k{i % KEYS}", {"n": -i if i % 97 == 50 else i}) for i in range(RECORDS)]


def model(records):
    """What the processor below sends per key, in order: its running count
    and total after each record that does not fail."""
    state, out = {}, {}
    for key, value in records:
        if value["n"] < 0:
            continue
        s = state.setdefault(key, {"count": 0, "total": 0, "seen": []})
        s["count"] += 1
        s["total"] += value["n"]
        s["seen"] = s["seen"][-2:] + [value["n"]]
        out.setdefault(key, []).append({"count": s["count"], "total": s["total"], "seen": s["seen"]})
    return out


def make_step(output):
    def step(key, value, state, ctx):
        state = state if state is not None else {"count": 0, "total": 0, "seen": []}
        # Changed in place before failing: the failure must not keep it.
        state["count"] += 1
        state["total"] += value["n"]
        state["seen"] = state["seen"][-2:] + [value["n"]]
        if value["n"] < 0:
            state["seen"].append("poisoned")
            raise ValueError(f"negative reading {value['n']}")
        ctx.send(output, state, key=key)
        return state

    return step


def produce(log, topic, items):
    p = riffle.Producer(log)
    for key, value in items:
        p.produce(topic, value, key=key)
    assert p.flush() == 0


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_backlog_matches_the_model_and_failures_go_alone(log, style, guarantee):
    src, out, dlq, group = fresh("in"), fresh("out"), fresh("dlq"), fresh("app")
    for t in (src, out):
        log.create_topic(t, partitions=3)
    records = backlog()
    # All there before the app starts, so that polls come full.
    produce(log, src, records)
    poison = [(k, v) for k, v in records if v["n"] < 0]
    app = riffle.App(log, group, src, riffle.keyed(make_step(out)), style=style, workers=3,
                     guarantee=guarantee, dead_letter=dlq, retries=1).start()
    wait_for(lambda: app.stats()["processed"] >= RECORDS, what=f"{RECORDS} records processed")
    stats = app.stats()
    app.stop()
    assert stats["dead_letters"] == len(poison)
    assert stats["sent"] == RECORDS - len(poison)

    expected = model(records)
    got = read_all(log, out, RECORDS - len(poison), read_committed=guarantee == "exactly-once")
    per_key = {}
    for r in got:
        per_key.setdefault(r.key_str(), []).append(r.json())
    # Per key, every output in input order, each from the state the model
    # has: nothing of a failed record, nothing repeated.
    assert per_key == expected

    letters = read_all(log, dlq, len(poison))
    assert sorted((r.key_str(), r.json()["error"]) for r in letters) == sorted(
        (k, f"failed 2 times, last: ValueError: negative reading {v['n']}") for k, v in poison)


@pytest.mark.parametrize("style", STYLES)
def test_states_of_every_json_type_round_trip(log, style):
    """States kept as the objects returned, written as JSON: None, numbers,
    strings, lists and nested dicts all come back as they were, within a
    run and after a restart (from the changelog)."""
    src, out, group = fresh("in"), fresh("out"), fresh("app")
    for t in (src, out):
        log.create_topic(t, partitions=2)
    kinds = {
        "none": lambda s, n: None,
        "int": lambda s, n: (s or 0) + n,
        "float": lambda s, n: (s or 0.5) * 2,
        "str": lambda s, n: (s or "") + str(n),
        "list": lambda s, n: (s or []) + [n, [n, {"x": None}]],
        "dict": lambda s, n: {"b": True, "n": n, "prev": s, "big": 2 ** 63},
    }

    def step(key, value, state, ctx):
        ctx.send(out, {"before": state}, key=key)
        return kinds[key](state, value)

    def run(items):
        produce(log, src, items)
        app = riffle.App(log, group, src, riffle.keyed(step), style=style, workers=2).start()
        wait_for(lambda: app.stats()["processed"] >= len(items), what="records processed")
        app.stop()

    run([(k, 1) for k in kinds] + [(k, 2) for k in kinds])
    run([(k, 3) for k in kinds])
    befores = {}
    for r in read_all(log, out, 3 * len(kinds)):
        befores.setdefault(r.key_str(), []).append(r.json()["before"])
    for k, f in kinds.items():
        s1 = f(None, 1)
        s2 = f(s1, 2)
        assert befores[k] == [None, s1, s2], k


def test_other_threads_run_during_a_long_batch(log):
    """The interpreter is held across a batch, but a long one still lets
    other Python threads in (the interpreter's switch interval)."""
    src, group = fresh("in"), fresh("app")
    log.create_topic(src)
    produce(log, src, [("k", i) for i in range(200)])

    def busy(key, value, state, ctx):
        end = time.perf_counter() + 0.002  # CPU-bound: never releases the lock itself
        while time.perf_counter() < end:
            pass
        return (state or 0) + 1

    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    app = riffle.App(log, group, src, riffle.keyed(busy)).start()
    t = threading.Thread(target=ticker)
    wait_for(lambda: app.stats()["processed"] >= 1, what="the first record")
    t.start()
    began = time.monotonic()
    wait_for(lambda: app.stats()["processed"] >= 200, what="200 records")
    took = time.monotonic() - began
    stop.set()
    t.join()
    app.stop()
    during = [x for x in ticks if x <= began + took]
    # 0.4 s of processing: at a 5 ms switch interval the ticker gets in
    # about 80 times; held for the whole batch it would get in once or twice.
    assert took > 0.2 and len(during) >= 20, (took, len(during))


def test_objects_with_many_keys_come_through_intact(log):
    """Object keys are made once per thread and looked up after (a small
    table, where keys that collide replace each other): values and states
    with hundreds of distinct keys, nested, keep every key, value and the
    keys' order, records after records."""
    src, out, group = fresh("in"), fresh("out"), fresh("app")
    for t in (src, out):
        log.create_topic(t, partitions=2)
    values = []
    for i in range(40):
        v = {f"f{(i * 7 + j) % 300}": j for j in range(150)}
        v["nested"] = {"ünï": [{"a": i}, {"b": None}], f"g{i}": {"h": [i, "x"]}}
        values.append(v)

    def echo(key, value, state, ctx):
        ctx.send(out, {"value": value, "before": state}, key=key)
        return {"count": (state or {}).get("count", 0) + 1, "last": value}

    produce(log, src, [(f"k{i % 3}", v) for i, v in enumerate(values)])
    app = riffle.App(log, group, src, riffle.keyed(echo)).start()
    wait_for(lambda: app.stats()["processed"] >= len(values), what="records processed")
    app.stop()
    got = {}
    for r in read_all(log, out, len(values)):
        got.setdefault(r.key_str(), []).append(r.json())
    for k in range(3):
        mine = values[k::3]
        assert [g["value"] for g in got[f"k{k}"]] == mine
        assert [list(g["value"]) for g in got[f"k{k}"]] == [list(v) for v in mine]
        befores = [g["before"] for g in got[f"k{k}"]]
        assert befores == [None] + [{"count": n + 1, "last": v} for n, v in enumerate(mine[:-1])]
