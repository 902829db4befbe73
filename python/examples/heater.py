"""The chapter's heater controller (examples 6-7 to 6-9) in Python on Riffle.

The rule is the book's, in a few lines of Python (`riffle/heater.py`); Riffle
runs it: a consumer group over the `sensor` topic, one state per heater kept
in a changelog topic (so it survives crashes and follows its partition to
another process), the key-based or key-independent style, at-least-once or
exactly-once. Formats (docs/heater.md): input keyed by heater id,
`{"measurement": 45.2}` or `{"temperature": 45.0, "up_delta": 1.0,
"down_delta": 1.0}`; output keyed by heater id, `{"control":0}` (ON) or
`{"control":1}` (OFF).

    python examples/heater.py --brokers 127.0.0.1:9092 [--style keyed|actors]
        [--guarantee at-least-once|exactly-once] [--instance NAME]

Runs until Ctrl-C or SIGTERM, then stops cleanly (finishes, commits, leaves
the group). Prints `heater: running: ...` on stderr once it owns every
input partition.
"""

import argparse
import signal
import sys
import threading
import time

import riffle

from riffle.heater import controller


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--brokers", default="localhost:9092")
    ap.add_argument("-F", "--config-file", help="client properties file (as riffle -F)")
    ap.add_argument("--input", default="sensor")
    ap.add_argument("--output", default="heatercontrol")
    ap.add_argument("--group", default="heater-controller-py")
    ap.add_argument("--style", default="keyed", choices=["keyed", "actors"])
    ap.add_argument("--workers", type=int, default=4, help="actors style: worker threads")
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--guarantee", default="at-least-once", choices=["at-least-once", "exactly-once"])
    ap.add_argument("--instance", help="a name stable across restarts (fences a killed predecessor)")
    ap.add_argument("--dead-letter", default=None, help="topic for records that fail")
    ap.add_argument("--state-dir", default=None, help="where partition snapshots are kept")
    ap.add_argument("--offset-reset", default="earliest", choices=["earliest", "latest"])
    args = ap.parse_args()

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    t0 = time.monotonic()
    log = riffle.Log.kafka(args.brokers, config_file=args.config_file)
    app = riffle.App(
        log, args.group, args.input, riffle.keyed(controller(args.output)),
        style=args.style, workers=args.workers, consumers=args.consumers,
        guarantee=args.guarantee, instance=args.instance,
        dead_letter=args.dead_letter or f"{args.group}-dlq",
        state_dir=args.state_dir, offset_reset=args.offset_reset,
    ).start()
    try:
        while not stopping.is_set():
            try:
                app.wait_assigned(timeout=0.2)
                break
            except riffle.RiffleTimeoutError:
                pass
        if not stopping.is_set():
            print(f"heater: running: {args.style} style, {args.guarantee}, "
                  f"ready in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        stats = app.stats()
        app.stop()
        print(f"heater: stopped: {stats['processed']} records, {stats['sent']} commands, "
              f"{stats['dead_letters']} dead letters", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
