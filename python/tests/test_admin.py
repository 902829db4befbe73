"""Topic administration (example 6-3), on both logs: every call returns
once the change shows, so no test sleeps between them."""

import pytest

import riffle
from conftest import fresh


def names(log):
    return {t.name for t in log.list_topics()}


def test_create_describe_delete(log):
    name = fresh("admin")
    log.create_topic(name, partitions=3)
    assert name in names(log)
    info = log.describe_topic(name)
    assert info.name == name
    assert [p.id for p in info.partitions] == [0, 1, 2]
    assert all(p.low == 0 and p.high == 0 for p in info.partitions)
    with pytest.raises(riffle.TopicExistsError, match="already exists"):
        log.create_topic(name, partitions=3)
    log.create_topic(name, partitions=3, exist_ok=True)
    log.delete_topic(name)
    assert name not in names(log)
    with pytest.raises(riffle.UnknownTopicError):
        log.describe_topic(name)
    with pytest.raises(riffle.UnknownTopicError):
        log.delete_topic(name)
    log.delete_topic(name, missing_ok=True)


def test_recreate_empties_the_topic_and_changes_the_partitions(log):
    name = fresh("setup")
    log.create_topic(name, partitions=2)
    p = riffle.Producer(log)
    for i in range(5):
        p.produce(name, {"i": i})
    assert p.flush() == 0
    assert sum(x.high for x in log.describe_topic(name).partitions) == 5
    log.recreate_topic(name, partitions=4)
    parts = log.describe_topic(name).partitions
    assert len(parts) == 4 and sum(x.high for x in parts) == 0
    log.delete_topic(name)


def test_bad_names_and_counts_are_refused_in_one_line(log):
    with pytest.raises(riffle.RiffleError, match="contains '/'"):
        log.create_topic("a/b")
    with pytest.raises(riffle.RiffleError, match="partition count must be at least 1"):
        log.create_topic(fresh("zero"), partitions=0)
