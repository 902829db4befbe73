"""Riffle consumers and apps inside Ray actors.

The chapter runs its Kafka consumers as Ray actors so that a Ray cluster
places them across machines, with Kafka's group protocol sharing the
partitions among them. The actors here do the same with Riffle inside:

- :class:`ConsumerActor` -- a :class:`riffle.Consumer` calling a function
  per record (or per batch) in ``start()`` until ``stop()``. It has two
  threads (``max_concurrency=2``), so ``stop.remote()`` runs while
  ``start()`` loops; the chapter's single-threaded actor queued ``stop``
  behind the loop for ever.
- :class:`AppActor` -- a :class:`riffle.App` (stateless steps or a keyed
  processor with durable state, at-least-once or exactly-once) running on
  Riffle's threads inside the actor; its methods return at once.
- :class:`Actors` with :func:`start_consumers` and :func:`start_apps` --
  N such actors started together, waited for until they own every input
  partition, and stopped cleanly: each finishes its records in hand,
  commits and leaves the group before its process is ended.

Logs are passed as :class:`riffle.Log` objects: a Kafka log pickles as its
settings and connects again inside the actor. The embedded log cannot be
shared between processes, so it is refused here.
"""

import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import ray

from . import App, Consumer, Log, Processor

__all__ = ["Actors", "AppActor", "ConsumerActor", "start_apps", "start_consumers"]


@ray.remote(max_concurrency=2)
class ConsumerActor:
    """A group member in a Ray actor (example 6-2 on Riffle)."""

    def __init__(
        self,
        log: Log,
        group: str,
        topics: Union[str, Sequence[str]],
        callback: Callable[[str, Any], Any],
        batch: bool = False,
        name: Optional[str] = None,
        **options: Any,
    ) -> None:
        """``callback(consumer_id, record)`` -- or ``callback(consumer_id,
        records)`` with ``batch=True`` -- runs for what the member reads;
        ``options`` go to :class:`riffle.Consumer` (``offset_reset``,
        ``session_timeout``, ``read_committed``, ...)."""
        import uuid

        self.id = name or str(uuid.uuid4())
        self.callback = callback
        self.batch = batch
        self.records = 0
        user_on_assign = options.pop("on_assign", None)

        def on_assign(partitions: List[Tuple[str, int]]) -> None:
            print(f"Consumer {self.id} assignment: {partitions}", flush=True)
            if user_on_assign is not None:
                user_on_assign(partitions)

        self.consumer = Consumer(log, group, topics, on_assign=on_assign,
                                 client_id=f"ray-{self.id}", **options)

    def start(self) -> int:
        """Handles records until ``stop()``; returns how many it handled."""

        def one(record: Any) -> None:
            self.records += 1
            self.callback(self.id, record)

        def many(records: List[Any]) -> None:
            self.records += len(records)
            self.callback(self.id, records)

        self.consumer.run(many if self.batch else one, batch=self.batch)
        return self.records

    def stop(self) -> None:
        """Ends ``start()`` within a tenth of a second."""
        self.consumer.stop()

    def assignment(self) -> List[Tuple[str, int]]:
        return self.consumer.assignment()

    def destroy(self) -> None:
        """Commits what was handled and leaves the group."""
        self.consumer.close()


@ray.remote
class AppActor:
    """A Riffle app in a Ray actor: it runs on Riffle's threads, so every
    method returns at once."""

    def __init__(self, log: Log, group: str, inputs: Union[str, Sequence[str]],
                 processor: Processor, **options: Any) -> None:
        """``options`` go to :class:`riffle.App` (``style``, ``guarantee``,
        ``dead_letter``, ``instance``, ...)."""
        self.app = App(log, group, inputs, processor, **options)
        self.running = None

    def start(self) -> None:
        self.running = self.app.start()

    def stop(self) -> None:
        """Finishes the records in flight, commits and leaves the group."""
        if self.running is not None:
            self.running.stop()

    def stats(self) -> Dict[str, int]:
        if self.running is None or not self.running.running:
            return {"processed": 0, "sent": 0, "dead_letters": 0}
        return self.running.stats()

    def assignment(self) -> List[Tuple[str, int]]:
        if self.running is None or not self.running.running:
            return []
        return [tp for _, tps in self.running.assignments() for tp in tps]

    def destroy(self) -> None:
        self.stop()


class Actors:
    """N Riffle actors of one group, started together and stopped cleanly."""

    def __init__(self, actors: List[Any], starts: List[Any]) -> None:
        self.actors = actors
        #: What each actor's ``start`` returns (an ObjectRef per actor).
        self.starts = starts

    def __len__(self) -> int:
        return len(self.actors)

    def assignments(self) -> List[List[Tuple[str, int]]]:
        """Each actor's (topic, partition) pairs."""
        return ray.get([a.assignment.remote() for a in self.actors])

    def stats(self) -> List[Dict[str, int]]:
        """Each app actor's counters."""
        return ray.get([a.stats.remote() for a in self.actors])

    def wait_assigned(self, partitions: int, timeout: float = 60.0) -> None:
        """Waits until the actors together own ``partitions`` partitions
        (every input partition) and each owns some: the group has settled."""
        deadline = time.monotonic() + timeout
        while True:
            assigned = self.assignments()
            owned = sum(len(a) for a in assigned)
            # Each actor has its share: the first to join owns everything
            # until the others have joined.
            shared = len(assigned) > partitions or all(assigned)
            if owned >= partitions and shared:
                return
            for ref in self.starts:
                done, _ = ray.wait([ref], timeout=0)
                if done:
                    ray.get(done)  # raises a failed actor's error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the actors own {owned} of {partitions} partitions after {timeout} s")
            time.sleep(0.1)

    def kill(self, i: int, restart: Optional[Callable[[], Any]] = None) -> None:
        """Ends actor ``i``'s process at once, as a crash would: nothing is
        committed or flushed. ``restart()``, if given, makes its
        replacement (started here)."""
        ray.kill(self.actors[i], no_restart=True)
        if restart is not None:
            self.actors[i] = restart()
            self.starts[i] = self.actors[i].start.remote()

    def stop(self, timeout: float = 60.0) -> List[Any]:
        """Stops every actor (each finishes its records in hand and commits),
        waits for them, closes them (leaving the group) and ends their
        processes. Returns what each ``start`` returned."""
        ray.get([a.stop.remote() for a in self.actors], timeout=timeout)
        results = ray.get(self.starts, timeout=timeout)
        ray.get([a.destroy.remote() for a in self.actors], timeout=timeout)
        for a in self.actors:
            ray.kill(a)
        return results


def start_consumers(n: int, log: Log, group: str, topics: Union[str, Sequence[str]],
                    callback: Callable[[str, Any], Any], batch: bool = False,
                    ray_options: Optional[Dict[str, Any]] = None, **options: Any) -> Actors:
    """Starts ``n`` :class:`ConsumerActor` members of ``group`` (example
    6-4's ``n_consumers``); ``ray_options`` go to ``.options()`` (resources,
    placement), ``options`` to :class:`riffle.Consumer`."""
    _check(log)
    cls = ConsumerActor.options(**ray_options) if ray_options else ConsumerActor
    actors = [cls.remote(log, group, topics, callback, batch, None, **options) for _ in range(n)]
    return Actors(actors, [a.start.remote() for a in actors])


def start_apps(n: int, log: Log, group: str, inputs: Union[str, Sequence[str]],
               processor: Processor, ray_options: Optional[Dict[str, Any]] = None,
               **options: Any) -> Actors:
    """Starts ``n`` :class:`AppActor` processes of one app; ``options`` go
    to :class:`riffle.App`. Unless ``instance`` is given, actor ``i`` is
    instance ``<group>-<i>``: under exactly-once a restarted actor with the
    same number fences its killed predecessor's transactions at once."""
    _check(log)
    cls = AppActor.options(**ray_options) if ray_options else AppActor
    actors = []
    for i in range(n):
        opts = dict(options)
        opts.setdefault("instance", f"{group}-{i}")
        actors.append(cls.remote(log, group, inputs, processor, **opts))
    starts = [a.start.remote() for a in actors]
    ray.get(starts)  # an app's start returns at once; raise its errors here
    return Actors(actors, starts)


def _check(log: Log) -> None:
    if log.is_embedded:
        raise ValueError("Ray actors run in processes of their own, which cannot share the "
                         "embedded log: use Log.kafka(...)")
