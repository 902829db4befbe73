"""Riffle from Python: stream processing on Apache Kafka (or Riffle's
embedded log) with Riffle's Rust engine underneath.

- :class:`Log` -- which log: ``Log.kafka(...)`` or ``Log.embedded(...)``;
  topic administration that waits for the change to show, never sleeps.
- :class:`Producer` -- sends records without waiting; delivery callbacks.
- :class:`Consumer` -- one member of a consumer group; records one at a
  time, in batches, or to a callback; ``stop()`` from any thread.
- :class:`App` with :func:`map`, :func:`filter`, :func:`flat_map` and
  :func:`keyed` -- Python functions run by Riffle's apps: consumer groups,
  per-key state kept in a changelog topic and snapshots, the key-based
  ("keyed") and key-independent ("actors") styles, at-least-once or
  exactly-once, failed records to a dead-letter topic.
- :mod:`riffle.ray` -- consumers and apps inside Ray actors.
"""

import atexit as _atexit

from ._native import (
    App,
    ClosedError,
    Consumer,
    Context,
    DeliveryReport,
    Log,
    PartitionInfo,
    Processor,
    Producer,
    Record,
    RiffleError,
    RiffleTimeoutError,
    RunningApp,
    TopicExistsError,
    TopicInfo,
    UnknownTopicError,
    filter,
    flat_map,
    keyed,
    map,
)
from ._native import _shutdown

# Riffle's threads call into the interpreter to run processors: stop the
# apps still running before it shuts down.
_atexit.register(_shutdown)

__all__ = [
    "App",
    "ClosedError",
    "Consumer",
    "Context",
    "DeliveryReport",
    "Log",
    "PartitionInfo",
    "Processor",
    "Producer",
    "Record",
    "RiffleError",
    "RiffleTimeoutError",
    "RunningApp",
    "TopicExistsError",
    "TopicInfo",
    "UnknownTopicError",
    "filter",
    "flat_map",
    "keyed",
    "map",
]
