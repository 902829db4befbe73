"""The README's Python example ("Python and Ray"), run as written on both
logs: only the broker's address is replaced (or the embedded log used)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BROKERS, fresh

README = Path(__file__).resolve().parents[2] / "README.md"


def example():
    text = README.read_text()
    section = text[text.index("## Python and Ray"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.parametrize("where", ["embedded", "kafka"])
def test_readme_example_runs_as_written(where):
    code = example()
    assert 'riffle.Log.kafka("localhost:9092")' in code
    if where == "kafka":
        if not BROKERS:
            pytest.skip("RIFFLE_TEST_BROKERS is not set")
        code = code.replace('"localhost:9092"', f'"{BROKERS}"')
        # Names of this run only: a second run must not find the first's
        # committed offsets.
        for name in ('"sensor-dlq"', '"sensor"', '"heatercontrol"', '"controller"', '"printer"'):
            code = code.replace(name, f'"{fresh(name.strip(chr(34)))}"')
    else:
        code = code.replace('log = riffle.Log.kafka("localhost:9092")', "log = riffle.Log.embedded()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[('1234', {'control': 1})]"
