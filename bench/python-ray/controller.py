"""The heater controller of the chapter "Implementing Streaming Applications"
(Ray + Kafka), key-based approach, as a benchmark peer for Riffle.

This is the chapter's own Python implementation (examples 6-1, 6-2, 6-7, 6-8,
6-9 and the main program of its companion code): a Kafka producer actor, N
Kafka consumer actors in one group, and inside each consumer a
TemperatureControllerManager holding one TemperatureController per heater
id. Its design is kept; its bugs are fixed, each marked with a "Fix:" comment
that says what the original did (README.md lists them).

Input (keyed by heater id, JSON): {"measurement": 45.2} or
{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}.
Output (keyed by heater id): {"control":0} (heater ON) or {"control":1} (OFF).
"""

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from enum import Enum

import ray


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Example 6-1: the Kafka producer actor.
# ---------------------------------------------------------------------------
@ray.remote
class KafkaProducer:
    def __init__(self, broker: str = 'localhost:9092', verbose: bool = False):
        from confluent_kafka import Producer
        conf = {'bootstrap.servers': broker,
                # Fix: the original used librdkafka's default partitioner
                # (consistent_random, CRC32), so the same key went to another
                # partition than with the Java client or Riffle (murmur2).
                'partitioner': 'murmur2_random',
                # Same producer settings as Riffle's, for a fair comparison.
                'enable.idempotence': True,
                'linger.ms': 5}
        self.producer = Producer(**conf)
        self.verbose = verbose
        self.delivered = 0
        self.failed = 0

    def produce(self, data: dict, key: str = None, topic: str = 'test'):

        def delivery_callback(err, msg):
            if err:
                # Fix: the original only printed the error and carried on, so
                # the consumer committed offsets of records whose outputs were
                # lost. Failures are counted and flush() reports them.
                self.failed += 1
                print('Message failed delivery: ', err, file=sys.stderr, flush=True)
            else:
                self.delivered += 1
                # Fix: the original printed one line per delivered record;
                # that is kept as an option (--verbose) since it dominates the
                # cost of the app under load. (Its f-string also mixed " and '
                # quotes and did not parse.)
                if self.verbose:
                    print(f"Message delivered to topic {msg.topic()} "
                          f"partition {msg.partition()} offset {msg.offset()}")

        binary_key = None
        if key is not None:
            binary_key = key.encode('UTF8')
        # Fix: json.dumps(data) wrote {"control": 0} with a space; the wire
        # format is compact, {"control":0}, byte-identical to Riffle's.
        self.producer.produce(topic=topic,
                              value=json.dumps(data, separators=(',', ':')).encode('UTF8'),
                              key=binary_key, callback=delivery_callback)
        self.producer.poll(0)

    def flush(self, timeout: float = 30) -> int:
        """Waits until every record produced so far is delivered (or failed);
        returns the total number of failed deliveries. A consumer calls it
        before it stores offsets, which makes delivery at-least-once."""
        remaining = self.producer.flush(timeout)
        if remaining > 0:
            raise RuntimeError(f'{remaining} records not delivered within {timeout} s')
        return self.failed

    def stats(self) -> dict:
        return {'delivered': self.delivered, 'failed': self.failed}

    def destroy(self):
        self.producer.flush(30)


# ---------------------------------------------------------------------------
# Example 6-7: the temperature controller.
# ---------------------------------------------------------------------------
class Action(Enum):
    # Fix: the original had NONE = -1, OFF = 0, ON = 1, the opposite of the
    # heater's protobuf enum (HeaterCommand { On = 0; Off = 1; }) and of the
    # book's heater code, which switches ON on 0 and OFF on 1. Its rule then
    # chose ON above the band and OFF below it, so the names were wrong twice
    # and only the numbers came out right. Here the names mean what they say.
    NONE = -1
    ON = 0
    OFF = 1


class BaseTemperatureController:
    def __init__(self, id: str):
        self.current_setting = None
        self.up_delta = None
        self.down_delta = None
        self.previous_command = Action.NONE
        self.id = id
        self.verbose = False

    # Process new message
    def process_new_message(self, message: dict):
        if 'measurement' in message:    # Measurement request
            self.process_sensor_data(message)
        else:                           # Temp set request
            self.set_temperature(message)

    # Set new temperature
    def set_temperature(self, setting: dict):
        desired = setting['temperature']
        updelta = setting['up_delta']
        downdelta = setting['down_delta']
        if self.verbose:
            print(f'Controller {self.id} new temperature setting {desired} up '
                  f'delta {updelta} down delta {downdelta}')
        self.current_setting = desired
        self.up_delta = updelta
        # Fix: the original assigned `down_delta`, an undefined name
        # (NameError on the first setting).
        self.down_delta = downdelta

    # Process new measurements
    def process_sensor_data(self, sensor: dict) -> bool:
        # Desired temperature is set, otherwise ignore
        if self.current_setting is not None:
            # Calculate desired action
            measurement = sensor['measurement']
            action = Action.NONE
            # Fix: the original chose ON above the band and OFF below it
            # (see Action). Too hot switches the heater OFF, too cold ON.
            if measurement > (self.current_setting + self.up_delta):
                action = Action.OFF
            if measurement < (self.current_setting - self.down_delta):
                action = Action.ON
            # New action: sent only when it differs from the last one sent
            if action != Action.NONE and self.previous_command != action:
                self.previous_command = action
                # Publish new action to kafka
                return True
            else:
                return False
        else:
            return False


class TemperatureController(BaseTemperatureController):
    """The companion code's subclass that publishes the command."""

    def __init__(self, producer, id: str, topic: str, sent: list, verbose: bool = False):
        super().__init__(id)
        self.verbose = verbose
        self.producer = producer
        self.topic = topic
        self.sent = sent

    # Fix: the companion code overrode `process_sensordata`, while the base
    # class calls `process_sensor_data` (renamed in the book), so the
    # override was never called and no command was ever sent.
    def process_sensor_data(self, sensor: dict):
        if super().process_sensor_data(sensor):
            # Fix: the original sent {'control': self.previous_command}, an
            # Action enum that json.dumps cannot encode (TypeError in the
            # producer actor); the wire value is the enum's number. It also
            # sent to the producer's default topic 'test'.
            self.producer.produce.remote(data={'control': self.previous_command.value},
                                         key=self.id, topic=self.topic)
            self.sent[0] += 1
            return True
        return False


# ---------------------------------------------------------------------------
# Example 6-8: the manager of the controllers of one consumer.
# ---------------------------------------------------------------------------
class TemperatureControllerManager:
    def __init__(self, producer, topic: str = 'heatercontrol', verbose: bool = False,
                 sent: list = None):
        self.controllers = {}
        self.producer = producer
        self.topic = topic
        self.verbose = verbose
        # Commands handed to the producer, counted in a one-element list that
        # the consumer shares among its managers.
        self.sent = sent if sent is not None else [0]

    def process_controller_message(self, key: str, request: dict):
        if not key in self.controllers:   # Create a new controller
            # Fix: the original printed an undefined `controller_id`
            # (NameError on the first record of every heater).
            if self.verbose:
                print(f'Creating a new controller {key}')
            controller = TemperatureController(producer=self.producer, id=key,
                                               topic=self.topic, sent=self.sent,
                                               verbose=self.verbose)
            self.controllers[key] = controller
        self.controllers[key].process_new_message(request)


def decode(key, value):
    """Returns (heater id, message dict) or raises ValueError with a reason.

    Fix: the original passed whatever json.loads returned to the controller,
    so a malformed record (not JSON, a missing field, a string instead of a
    number) raised inside the consumer loop and killed the consumer actor.
    Such records are now logged and skipped, with the same acceptance rules as
    Riffle's decoder (Riffle sends them to a dead-letter topic instead)."""
    try:
        body = json.loads(value.decode('UTF8'))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f'not a JSON object: {e}')
    if not isinstance(body, dict):
        raise ValueError('not a JSON object')
    if key is not None:
        try:
            hid = key.decode('UTF8')
        except UnicodeDecodeError:
            raise ValueError('key is not UTF-8')
    else:
        # The book's key-less ("round robin") heater puts the id in the body.
        hid = body.get('id')
        if not isinstance(hid, str):
            raise ValueError('no key and no "id" field')
    if hid == '':
        raise ValueError('empty heater id')

    def number(field):
        if field not in body:
            raise ValueError(f"missing field '{field}'")
        v = body[field]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"field '{field}' must be a number, not {v!r}")
        return float(v)

    if 'measurement' in body:
        return hid, {'measurement': number('measurement')}
    if 'temperature' in body or 'up_delta' in body or 'down_delta' in body:
        s = {f: number(f) for f in ('temperature', 'up_delta', 'down_delta')}
        if s['up_delta'] < 0 or s['down_delta'] < 0:
            raise ValueError('deltas must not be negative')
        return hid, s
    raise ValueError('neither a measurement nor a setting')


# ---------------------------------------------------------------------------
# Examples 6-2 and 6-9: the Kafka consumer actor, integrated with the
# temperature controller manager.
# ---------------------------------------------------------------------------
# Fix: the original actor was single-threaded, so `stop.remote()` queued behind
# the never-ending `start()` and never ran: the app could not stop cleanly. Two
# threads let `stop` (and `status`) run while `start` loops.
@ray.remote(max_concurrency=2)
class KafkaConsumer:
    def __init__(self, producer, group: str = 'ray',
                 broker: str = 'localhost:9092', topic: str = 'sensor',
                 restart: str = 'earliest', output: str = 'heatercontrol',
                 commit_interval: float = 0.1, verbose: bool = False):
        from confluent_kafka import Consumer
        from uuid import uuid4
        # Configuration
        consumer_conf = {'bootstrap.servers': broker,   # Bootstrap server
                         'group.id': group,             # Group ID
                         'session.timeout.ms': 6000,    # Session tmout
                         'auto.offset.reset': restart,  # Restart
                         # Fix: the original left librdkafka's defaults, which
                         # store every polled record's offset at once and
                         # commit it in the background: offsets were committed
                         # before the record was processed and its command
                         # delivered, so a crash lost commands. Offsets are now
                         # stored only after processing and delivery (see
                         # _store), and auto-commit commits stored ones only.
                         'enable.auto.offset.store': False,
                         'enable.auto.commit': True,
                         'auto.commit.interval.ms': max(1, int(commit_interval * 1000))}

        # Create Consumer instance
        self.consumer = Consumer(consumer_conf)
        self.topic = topic
        self.output = output
        self.id = str(uuid4())
        self.producer = producer
        self.verbose = verbose
        self.commit_interval = commit_interval
        # Fix: the original kept one manager for the whole consumer and never
        # dropped its controllers, so after a rebalance a consumer kept stale
        # state for heaters it no longer owned and acted on it if they came
        # back. State is kept per partition (the chapter's key-based
        # approach: all keys of a partition are served by its consumer) and
        # dropped when the partition is revoked.
        self.managers = {}          # partition -> TemperatureControllerManager
        self.processed = {}         # partition -> next offset to store
        self.assignment = None      # None until the first assignment
        self.sent = [0]             # commands handed to the producer
        self.sent_at_flush = 0      # ... when we last flushed it
        self.records = 0
        self.skipped = 0
        self.run = False

    def _manager(self, partition):
        m = self.managers.get(partition)
        if m is None:
            m = TemperatureControllerManager(self.producer, self.output, self.verbose,
                                             self.sent)
            self.managers[partition] = m
        return m

    def _store(self, partitions=None):
        """Stores the offsets of processed records (all partitions, or the
        given ones) once their commands are delivered; librdkafka commits
        stored offsets every commit interval and on close."""
        from confluent_kafka import TopicPartition
        todo = [p for p in self.processed if partitions is None or p in partitions]
        if not todo:
            return
        sent = self.sent[0]
        if sent != self.sent_at_flush:
            # Ray runs one caller's calls to an actor in order, so this flush
            # runs after every produce() this consumer issued.
            failed = ray.get(self.producer.flush.remote())
            if failed:
                raise RuntimeError(f'{failed} commands failed delivery; '
                                   'stopping without committing their records')
            self.sent_at_flush = sent
        offsets = [TopicPartition(self.topic, p, self.processed.pop(p)) for p in todo]
        self.consumer.store_offsets(offsets=offsets)

    def start(self):
        self.run = True

        def print_assignment(consumer, partitions):
            self.assignment = sorted(p.partition for p in partitions)
            print(f'Consumer {self.id} assignment: {self.assignment}', file=sys.stderr, flush=True)

        def on_revoke(consumer, partitions):
            revoked = {p.partition for p in partitions}
            # Commit what was processed before the partitions move on.
            self._store(revoked)
            try:
                self.consumer.commit(asynchronous=False)
            except Exception:
                pass    # nothing stored to commit
            for p in revoked:
                self.managers.pop(p, None)
            self.assignment = [p for p in (self.assignment or []) if p not in revoked]

        def on_lost(consumer, partitions):
            # Already owned by another consumer: nothing may be committed.
            lost = {p.partition for p in partitions}
            for p in lost:
                self.processed.pop(p, None)
                self.managers.pop(p, None)
            self.assignment = [p for p in (self.assignment or []) if p not in lost]

        # Subscribe to topics
        self.consumer.subscribe([self.topic], on_assign=print_assignment,
                                on_revoke=on_revoke, on_lost=on_lost)
        next_store = time.monotonic() + self.commit_interval
        poll_timeout = min(1.0, self.commit_interval)
        try:
            while self.run:
                msg = self.consumer.poll(timeout=poll_timeout)
                if msg is not None:
                    if msg.error():
                        # Fix: the original's `If msg.error():` (capital I)
                        # was a syntax error.
                        print(f'Consumer error: {msg.error()}', file=sys.stderr, flush=True)
                    else:
                        # Proper message
                        self.records += 1
                        if self.verbose:
                            print(f"New message: topic={msg.topic()} "
                                  f"partition= {msg.partition()} offset={msg.offset()}")
                        try:
                            key, value = decode(msg.key(), msg.value())
                        except ValueError as e:
                            self.skipped += 1
                            print(f'Skipping record {msg.topic()}/{msg.partition()}@'
                                  f'{msg.offset()}: {e}', file=sys.stderr, flush=True)
                        else:
                            if self.verbose:
                                print(f'key={key}')
                                print(f'value = {value}')
                            self._manager(msg.partition()).process_controller_message(key, value)
                        self.processed[msg.partition()] = msg.offset() + 1
                now = time.monotonic()
                if now >= next_store:
                    self._store()
                    next_store = now + self.commit_interval
            # Stopped: store and commit everything processed.
            self._store()
            try:
                self.consumer.commit(asynchronous=False)
            except Exception:
                pass    # nothing stored to commit
        finally:
            self.run = False
        return {'records': self.records, 'skipped': self.skipped}

    def status(self):
        """(assigned partitions or None before the first assignment, running)"""
        return self.assignment, self.run

    def stop(self):
        self.run = False

    def destroy(self):
        # Commits stored offsets and leaves the group.
        self.consumer.close()


def partition_count(broker: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient
    md = AdminClient({'bootstrap.servers': broker}).list_topics(topic=topic, timeout=10)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise SystemExit(f'controller: cannot read topic {topic!r}: {t.error if t else "missing"}')
    return len(t.partitions)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--brokers', default='localhost:9092')
    ap.add_argument('--input', default='sensor')
    ap.add_argument('--output', default='heatercontrol')
    ap.add_argument('--group', default='ray')
    ap.add_argument('--consumers', type=int, default=1, help='n_consumers (default 1)')
    ap.add_argument('--offset-reset', default='earliest', choices=['earliest', 'latest'])
    ap.add_argument('--commit-interval-ms', type=int, default=100,
                    help='how often processed offsets are stored and committed (default 100, as Riffle)')
    ap.add_argument('--verbose', action='store_true',
                    help="print every record and delivery, as the book's code does")
    # The benchmark driver passes --guarantee to every system; the book's
    # design has no transactions, so only at-least-once can be honoured.
    ap.add_argument('--guarantee', default='at-least-once',
                    help='at-least-once (the only one supported)')
    args = ap.parse_args()
    if args.guarantee != 'at-least-once':
        sys.exit(f'controller: --guarantee {args.guarantee} is not supported '
                 '(at-least-once only: the book\'s design has no transactions)')

    # A clean stop on SIGTERM as on Ctrl-C (the book's `except
    # KeyboardInterrupt`). The handler only sets a flag: an exception raised
    # at an arbitrary point inside Ray's client code can leave it deadlocked.
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    t0 = time.monotonic()
    n_partitions = partition_count(args.brokers, args.input)

    # Start Ray (a fresh local instance, no dashboard)
    ray.init(address='local', include_dashboard=False, log_to_driver=True,
             object_store_memory=256 * 1024 * 1024)
    t_ray = time.monotonic()
    signal.signal(signal.SIGTERM, on_signal)    # ray.init may install its own
    signal.signal(signal.SIGINT, on_signal)

    # Start actors
    producer = KafkaProducer.remote(args.brokers, args.verbose)
    n_consumers = args.consumers     # Number of consumers
    consumers = [KafkaConsumer.remote(producer, group=args.group, broker=args.brokers,
                                      topic=args.input, restart=args.offset_reset,
                                      output=args.output,
                                      commit_interval=args.commit_interval_ms / 1000,
                                      verbose=args.verbose)
                 for _ in range(n_consumers)]
    refs = [c.start.remote() for c in consumers]

    code = 0
    try:
        # Wait until the group has settled: every consumer has an assignment
        # and together they own every partition of the input topic.
        announced = False
        while not stopping.is_set():
            done, _ = ray.wait(refs, num_returns=1, timeout=0.2)
            if done:
                ray.get(done)   # raises the consumer's error
                raise RuntimeError('a consumer stopped by itself')
            if not announced:
                states = ray.get([c.status.remote() for c in consumers])
                owned = sum(len(a) for a, _ in states if a is not None)
                if all(a is not None and run for a, run in states) and owned == n_partitions:
                    log(f'controller: running: {n_consumers} consumers own {n_partitions} '
                        f'partitions of {args.input!r} (Ray up in {t_ray - t0:.1f} s, '
                        f'ready in {time.monotonic() - t0:.1f} s)')
                    announced = True
        log('controller: stopping')

    # End gracefully
    except Exception as e:
        log(f'controller: error: {e}')
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for c in consumers:
            c.stop.remote()
        # Fix: the original destroyed the consumers while their loops still
        # polled, and killed the producer right after asking it to flush,
        # without waiting: outputs in flight were lost. Wait for the loops to
        # end (they store and commit what they processed), then close the
        # consumers, then flush the producer.
        totals = {'records': 0, 'skipped': 0}
        for r in refs:
            try:
                res = ray.get(r, timeout=60)
                for k in totals:
                    totals[k] += res[k]
            except Exception as e:
                log(f'controller: consumer failed: {e}')
                code = 1
        ray.get([c.destroy.remote() for c in consumers], timeout=60)
        ray.get(producer.destroy.remote(), timeout=60)
        stats = ray.get(producer.stats.remote())
        log(f"controller: stopped: {totals['records']} records "
            f"({totals['skipped']} skipped), {stats['delivered']} commands delivered, "
            f"{stats['failed']} failed")
        ray.kill(producer)
        ray.shutdown()
    sys.exit(code)


if __name__ == '__main__':
    main()
