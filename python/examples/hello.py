"""Example 6-4 of the chapter, "putting it all together", on Riffle: N
consumer actors in one group and a producer actor publishing a record a
second. With `--consumers 1` the output is example 6-5's (one consumer
owns all 10 partitions), with `--consumers 5` example 6-6's (two each).

    python examples/hello.py [--brokers localhost:9092] [--consumers 1] [--count 0]

Runs until Ctrl-C (or `--count` records), then stops gracefully: the
consumers finish, commit and leave the group; the producer flushes.
"""

import argparse
import json
import os
import sys
import time
from random import randint, seed

import ray

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from actors import KafkaConsumer, KafkaProducer, setup_topics  # noqa: E402


# Simple callback function to print topics
def print_message(consumer_id: str, msg):
    print(f"Consumer {consumer_id} new message: topic={msg.topic} "
          f"partition= {msg.partition} offset={msg.offset} "
          f"key={msg.key_str()}")
    print(json.loads(msg.value.decode('UTF8')))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--brokers', default=os.environ.get('RIFFLE_BROKERS', 'localhost:9092'))
    ap.add_argument('--topic', default='test')
    ap.add_argument('--consumers', type=int, default=1, help='n_consumers')
    ap.add_argument('--count', type=int, default=0, help='records to publish (0: until Ctrl-C)')
    ap.add_argument('--interval', type=float, default=1.0, help='seconds between records')
    args = ap.parse_args()

    # Set up topics
    setup_topics(args.brokers, [args.topic])
    # Set up random number generator
    seed(1)
    # Start Ray
    ray.init(include_dashboard=False)
    # Start consumers and producers
    n_consumers = args.consumers     # Number of consumers
    consumers = [KafkaConsumer.remote(print_message, broker=args.brokers, topic=args.topic)
                 for _ in range(n_consumers)]
    producer = KafkaProducer.remote(args.brokers)
    refs = [c.start.remote() for c in consumers]
    # Publish once the group owns every partition: with restart='latest',
    # records written before a partition is assigned are not read.
    while sum(len(a) for a in ray.get([c.assignment.remote() for c in consumers])) < 10:
        time.sleep(0.1)
    # Publish messages
    user_name = 'john'
    user_favorite_color = 'blue'
    sent = 0
    try:
        while args.count == 0 or sent < args.count:
            user = {
                'name': user_name,
                'favorite_color': user_favorite_color,
                'favorite_number': randint(0, 1000)
            }
            producer.produce.remote(user, str(randint(0, 100)), args.topic)
            sent += 1
            time.sleep(args.interval)
    # End gracefully
    except KeyboardInterrupt:
        pass
    finally:
        undelivered = ray.get(producer.destroy.remote())
        # Let the consumers read what was delivered before stopping them.
        deadline = time.monotonic() + 10
        while (sum(ray.get([c.count.remote() for c in consumers])) < sent - undelivered
               and time.monotonic() < deadline):
            time.sleep(0.1)
        for c in consumers:
            c.stop.remote()
        handled = ray.get(refs)
        for c in consumers:
            ray.get(c.destroy.remote())
        ray.kill(producer)
        print(f"published {sent}, consumers handled {sum(handled)}: {handled}")


if __name__ == '__main__':
    main()
