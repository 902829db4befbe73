"""Type stubs of riffle's extension module (re-exported by ``riffle``)."""

from os import PathLike
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

#: JSON as Python objects: what a JSON codec hands over and accepts.
Json = Union[None, bool, int, float, str, List[Any], Dict[str, Any]]
#: A value to write: bytes as they are, str as UTF-8, else compact JSON.
Value = Union[bytes, bytearray, str, Json, Tuple[Any, ...]]
Key = Union[str, bytes]
Headers = Union[Sequence[Tuple[str, Union[str, bytes, None]]], Mapping[str, Union[str, bytes, None]]]
TopicPartitionPair = Tuple[str, int]
Codec = Literal["json", "bytes"]
Guarantee = Literal["at-least-once", "exactly-once"]
Style = Literal["keyed", "actors"]
OffsetReset = Literal["earliest", "latest"]

class RiffleError(Exception):
    """An error from Riffle: the log, a client setting, an app."""

class TopicExistsError(RiffleError):
    """A topic to create exists already."""

class UnknownTopicError(RiffleError):
    """A topic named does not exist."""

class RiffleTimeoutError(RiffleError):
    """The log did not answer in time."""

class ClosedError(RiffleError):
    """A producer, consumer or app used after it was closed or stopped."""

class PartitionInfo:
    """A partition as the log describes it."""

    id: int
    leader: int
    replicas: List[int]
    isr: List[int]
    #: Offset of the first record still in the log.
    low: int
    #: Offset the next record will get.
    high: int

class TopicInfo:
    """A topic as the log describes it."""

    name: str
    partitions: List[PartitionInfo]

class Log:
    """A log: Apache Kafka, or Riffle's embedded in-process log."""

    @staticmethod
    def kafka(
        bootstrap_servers: Optional[str] = None,
        config: Optional[Mapping[str, Union[str, int, float, bool]]] = None,
        config_file: Optional[Union[str, PathLike[str]]] = None,
        check: bool = True,
    ) -> "Log":
        """A Kafka cluster: bootstrap servers, librdkafka properties as a
        dict, a properties file as the command-line tool's ``-F`` reads it,
        or any of them together (the dict wins over the file, the servers
        over both). Checks within 5 s that a broker answers unless
        ``check`` is False. Pickles as its settings (for Ray actors)."""
    @staticmethod
    def embedded(
        data_dir: Optional[Union[str, PathLike[str]]] = None,
        fsync: Union[Literal["always", "interval", "never"], float, None] = None,
    ) -> "Log":
        """The embedded log: in memory, or kept in ``data_dir`` (one process
        at a time). Cannot be pickled."""
    @property
    def is_embedded(self) -> bool: ...
    def describe(self) -> str: ...
    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Optional[Mapping[str, str]] = None,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Creates a topic; returns once metadata shows it."""
    def delete_topic(self, name: str, missing_ok: bool = False, timeout: float = 30.0) -> None:
        """Deletes a topic; returns once metadata no longer shows it."""
    def recreate_topic(
        self,
        name: str,
        partitions: int = 1,
        replication: int = 1,
        config: Optional[Mapping[str, str]] = None,
        timeout: float = 30.0,
    ) -> None:
        """Deletes the topic if it exists and creates it anew (example 6-3)."""
    def list_topics(self, timeout: float = 30.0) -> List[TopicInfo]: ...
    def describe_topic(self, name: str, timeout: float = 30.0) -> TopicInfo: ...
    def committed_offsets(self, group: str, topic: str, timeout: float = 30.0) -> Dict[int, Optional[int]]:
        """A group's committed offset per partition (None where none)."""

class Record:
    """A record read from a topic."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: bytes
    #: Milliseconds since the Unix epoch, when the log knows it.
    timestamp: Optional[int]
    headers: List[Tuple[str, Optional[bytes]]]
    def key_str(self) -> Optional[str]:
        """The key as UTF-8 text."""
    def json(self) -> Json:
        """The value decoded as JSON."""

class DeliveryReport:
    """Where a produced record ended up, or why it did not."""

    topic: str
    partition: int
    offset: Optional[int]
    error: Optional[str]

class Producer:
    """Sends records without waiting for them to be written (example 6-1)."""

    def __init__(
        self,
        log: Log,
        on_delivery: Optional[Callable[[Optional[str], DeliveryReport], Any]] = None,
    ) -> None:
        """``on_delivery(err, report)`` runs once per record, from
        ``produce``, ``poll`` or ``flush`` on the caller's thread."""
    def produce(
        self,
        topic: str,
        value: Value,
        key: Optional[Key] = None,
        headers: Optional[Headers] = None,
        partition: Optional[int] = None,
    ) -> None:
        """Queues a record; keyed records go to murmur2(key) % partitions."""
    def poll(self, timeout: float = 0.0) -> int:
        """Serves delivery reports, waiting up to ``timeout`` for one."""
    def flush(self, timeout: float = 30.0) -> int:
        """Waits for every queued record; returns how many are still in flight."""
    @property
    def in_flight(self) -> int: ...
    def stats(self) -> Dict[str, int]:
        """sent, delivered, failed."""
    def close(self, timeout: float = 30.0) -> int:
        """Flushes and closes."""
    def __enter__(self) -> "Producer": ...
    def __exit__(self, *args: Any) -> bool: ...

class Consumer:
    """One member of a consumer group (example 6-2). Records handed out
    count as processed when the next call comes; their offsets are then
    committed in the background, on revocation and on close."""

    group: str
    topics: List[str]
    def __init__(
        self,
        log: Log,
        group: str,
        topics: Union[str, Sequence[str]],
        offset_reset: OffsetReset = "earliest",
        session_timeout: float = 10.0,
        commit_interval: float = 1.0,
        on_assign: Optional[Callable[[List[TopicPartitionPair]], Any]] = None,
        on_revoke: Optional[Callable[[List[TopicPartitionPair]], Any]] = None,
        read_committed: bool = False,
        client_id: Optional[str] = None,
    ) -> None: ...
    def poll(self, timeout: float = 1.0) -> Optional[Record]: ...
    def consume(self, max_records: int = 500, timeout: float = 1.0) -> List[Record]: ...
    def batches(self, max_records: int = 500, timeout: float = 1.0) -> Iterator[List[Record]]:
        """Non-empty batches until ``stop()``."""
    def __iter__(self) -> Iterator[Record]:
        """Records until ``stop()``."""
    def run(
        self,
        callback: Callable[[Any], Any],
        batch: bool = False,
        max_records: int = 500,
        timeout: float = 1.0,
    ) -> None:
        """Calls ``callback`` per record (or per batch) until ``stop()``."""
    def stop(self) -> None:
        """Ends waits, ``run`` and iterations within 0.1 s, from any thread."""
    @property
    def stopped(self) -> bool: ...
    def assignment(self) -> List[TopicPartitionPair]: ...
    def commit(self) -> None: ...
    def close(self) -> None:
        """Stops, commits and leaves the group."""
    def __enter__(self) -> "Consumer": ...
    def __exit__(self, *args: Any) -> bool: ...

class Processor:
    """What ``map``, ``filter``, ``flat_map`` and ``keyed`` return, for ``App``."""

class Context:
    """Where the record being processed came from, and ``send``."""

    topic: str
    partition: int
    offset: int
    timestamp: Optional[int]
    def send(
        self,
        topic: str,
        value: Value,
        key: Optional[str] = None,
        headers: Optional[Headers] = None,
    ) -> None:
        """Sends a record, committed with the state it led to."""

def map(to: str, f: Callable[[Any], Value], codec: Codec = "json") -> Processor:
    """One output per input: ``f(value)``, the key kept."""

def filter(to: str, f: Callable[[Any], Any], codec: Codec = "json") -> Processor:
    """The records for which ``f(value)`` is true, unchanged."""

def flat_map(to: str, f: Callable[[Any], Iterable[Any]], codec: Codec = "json") -> Processor:
    """Zero or more outputs: values (input's key) or (key, value) tuples."""

def keyed(
    f: Callable[[str, Any, Any, Context], Json],
    codec: Codec = "json",
    key_field: Optional[str] = None,
) -> Processor:
    """``f(key, value, state, ctx)`` returns the key's new state (JSON-able;
    None for a key not seen yet). The object returned is handed to the
    key's next call as it is (its JSON goes to the changelog), so it
    should not be kept and changed elsewhere; after an exception the key's
    next call gets the state as it was before the failed one."""

class RunningApp:
    """A started app."""

    @property
    def running(self) -> bool: ...
    def stop(self) -> None:
        """Finishes the records in flight, commits, leaves the group."""
    def stats(self) -> Dict[str, int]:
        """processed, sent, dead_letters."""
    def assignments(self) -> List[Tuple[str, List[TopicPartitionPair]]]: ...
    def wait_assigned(self, timeout: float = 30.0) -> None: ...
    def __enter__(self) -> "RunningApp": ...
    def __exit__(self, *args: Any) -> bool: ...

class App:
    """A processor over input topics, in a style, under a guarantee."""

    def __init__(
        self,
        log: Log,
        group: str,
        inputs: Union[str, Sequence[str]],
        processor: Processor,
        *,
        style: Style = "keyed",
        workers: int = 4,
        consumers: int = 1,
        guarantee: Guarantee = "at-least-once",
        dead_letter: Optional[str] = None,
        offset_reset: OffsetReset = "earliest",
        commit_interval: Optional[float] = None,
        state_dir: Optional[Union[str, PathLike[str]]] = None,
        instance: Optional[str] = None,
        retries: int = 2,
        session_timeout: float = 10.0,
        repartition: Optional[str] = None,
    ) -> None: ...
    def start(self) -> RunningApp:
        """Starts consuming on Riffle's threads and returns at once."""

def _shutdown() -> None: ...
