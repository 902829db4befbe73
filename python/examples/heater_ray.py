"""Examples 6-7 to 6-10 of the chapter on Riffle: the heater controller in
Ray actors, Kafka's group protocol sharing the `sensor` partitions among
them. The rule (6-7) and the per-heater controllers (6-8) are
`riffle.heater`; Riffle's app inside each actor (6-9) keeps every
heater's state in a changelog topic, so an actor that dies loses nothing
(footnote 7), and `--guarantee exactly-once` sends every command exactly
once even then. `--verbose` prints what example 6-10 shows.

    python examples/heater_ray.py [--brokers localhost:9092] [--actors 2]
        [--style keyed|actors] [--guarantee at-least-once|exactly-once]
        [--duration SECONDS] [--verbose]

Creates `sensor` and `heatercontrol` (10 partitions) if missing. Feed it
with `riffle heater simulate --brokers ...`, or any producer of the
chapter's formats. Runs until Ctrl-C (or `--duration`), then stops every
actor cleanly.
"""

import argparse
import os
import time

import ray

import riffle
import riffle.ray
from riffle.heater import controller


def verbose_controller(output):
    """The controller, printing each record as example 6-10 does."""
    control = controller(output)

    def run(key, msg, state, ctx):
        print(f"New message: topic= {ctx.topic}  partition= {ctx.partition}  offset= {ctx.offset}")
        print(f"key  {key}  value  {msg}")
        return control(key, msg, state, ctx)

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--brokers', default=os.environ.get('RIFFLE_BROKERS', 'localhost:9092'))
    ap.add_argument('--input', default='sensor')
    ap.add_argument('--output', default='heatercontrol')
    ap.add_argument('--group', default='heater-ray')
    ap.add_argument('--actors', type=int, default=2, help='Ray actors, each running the app')
    ap.add_argument('--style', default='keyed', choices=['keyed', 'actors'])
    ap.add_argument('--guarantee', default='at-least-once', choices=['at-least-once', 'exactly-once'])
    ap.add_argument('--duration', type=float, default=0, help='seconds to run (0: until Ctrl-C)')
    ap.add_argument('--verbose', action='store_true')
    args = ap.parse_args()

    log = riffle.Log.kafka(args.brokers)
    for topic in (args.input, args.output):
        log.create_topic(topic, partitions=10, exist_ok=True)
    partitions = len(log.describe_topic(args.input).partitions)
    f = verbose_controller(args.output) if args.verbose else controller(args.output)

    ray.init(include_dashboard=False)
    workers = riffle.ray.start_apps(args.actors, log, args.group, args.input, riffle.keyed(f),
                                    style=args.style, guarantee=args.guarantee,
                                    dead_letter=f'{args.group}-dlq')
    workers.wait_assigned(partitions)
    print(f"{args.actors} actors own the {partitions} partitions of '{args.input}': "
          f"{workers.assignments()}", flush=True)
    t0 = time.monotonic()
    try:
        while args.duration == 0 or time.monotonic() - t0 < args.duration:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stats = workers.stats()
        workers.stop()
        print(f"stopped: {sum(s['processed'] for s in stats)} records, "
              f"{sum(s['sent'] for s in stats)} commands", flush=True)


if __name__ == '__main__':
    main()
