"""The README's Python examples and how a newcomer runs one (``tests/test_readme*.py`` use it).

The examples are split over two test modules (odd and even ones) only so that the suite's two
workers (``--dist loadfile``) share them: each starts an embedded Ray of its own, twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def ids(indices: range) -> list[str]:
    return [f"example-{i + 1}" for i in indices]


def _clean_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no test paths, no cluster address."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["RAY_DEDUP_LOGS"] = "0"
    return env


#: An example that says what running it again does ("run it again: ...", "a second run: ...") is run twice.
SECOND_RUN = re.compile(r"run (it )?again|second run|next run", re.IGNORECASE)


def runs(index: int) -> tuple[int, ...]:
    """Twice where the example keeps state in ``./garrison-data`` and says what a second run shows (the
    second run meets the first one's durable state, as a newcomer's does); once otherwise."""
    block = BLOCKS[index]
    return (1, 2) if "./garrison-data" in block and SECOND_RUN.search(block) else (1,)


def run_example(index: int, tmp_path: Path) -> list[str]:
    """Example ``index`` as ``driver.py`` in ``tmp_path``, run as often as :func:`runs` says; each run's stdout."""
    script = tmp_path / "driver.py"
    script.write_text(BLOCKS[index])
    outputs = []
    for run in runs(index):
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_clean_env(), capture_output=True,
                              text=True, timeout=280)
        assert done.returncode == 0, (f"README example {index + 1}, run {run}, failed:\n"
                                      f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        outputs.append(done.stdout)
    return outputs
