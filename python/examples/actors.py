"""Examples 6-1, 6-2 and 6-3 of the chapter with Riffle inside the Ray
actors instead of confluent_kafka. Imported by hello.py (example 6-4).

Differences from the book, each a fix:
- the consumer actor has two threads (`max_concurrency=2`), so `stop` runs
  while `start` polls; the book's queued it behind the endless loop;
- `setup_topics` waits for each deletion and creation to show in the
  cluster's metadata instead of sleeping 3 seconds, and reports failures
  as exceptions instead of printing and carrying on;
- records are committed only after the callback returned (at-least-once),
  and `destroy` commits and leaves the group.
"""

import ray

import riffle


# Example 6-1: the Kafka producer actor.
@ray.remote
class KafkaProducer:
    def __init__(self, broker: str = 'localhost:9092'):
        def delivery_callback(err, report):
            if err:
                print('Message failed delivery: ', err)
            else:
                print(f"Message delivered to topic {report.topic} "
                      f"partition {report.partition} offset {report.offset}")

        self.producer = riffle.Producer(riffle.Log.kafka(broker), on_delivery=delivery_callback)

    def produce(self, data: dict, key: str = None, topic: str = 'test'):
        # The dict is written as JSON; delivery reports waiting are served here.
        self.producer.produce(topic, data, key=key)

    def destroy(self):
        return self.producer.flush(30)


# Example 6-2: the Kafka consumer actor.
@ray.remote(max_concurrency=2)
class KafkaConsumer:
    def __init__(self, callback, group: str = 'ray', broker: str = 'localhost:9092',
                 topic: str = 'test', restart: str = 'latest'):
        from uuid import uuid4
        self.id = str(uuid4())
        self.callback = callback
        self.handled = 0

        def print_assignment(partitions):
            print(f'Consumer {self.id}')
            print(f'Assignment: {partitions}')

        self.consumer = riffle.Consumer(riffle.Log.kafka(broker), group, topic,
                                        offset_reset=restart,       # Restart
                                        session_timeout=6.0,        # Session tmout
                                        on_assign=print_assignment)

    def start(self):
        def handle(msg):
            self.callback(self.id, msg)
            self.handled += 1
        self.consumer.run(handle)   # until stop()
        return self.handled

    def stop(self):
        self.consumer.stop()

    def assignment(self):
        return self.consumer.assignment()

    def count(self):
        return self.handled

    def destroy(self):
        self.consumer.close()


# Example 6-3: the topic set-up function.
def setup_topics(broker: str = 'localhost:9092', topics: list = ['test'],
                 partitions: int = 10, replication: int = 1):
    log = riffle.Log.kafka(broker)
    for topic in topics:
        # Deletes the topic if it exists and creates it anew, each step
        # confirmed by the cluster's metadata (no sleep).
        log.recreate_topic(topic, partitions=partitions, replication=replication)
        print(f"Topic {topic} is re-created with {partitions} partitions")
