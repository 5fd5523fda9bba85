"""Every Python example in README.md runs verbatim, as a script, from a fresh directory.

The code blocks are read from the README itself, so it cannot drift from the
code: a newcomer saves one as ``driver.py`` and runs ``python driver.py`` with
nothing else on the path (each starts its own embedded Ray, as a user's does).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _clean_env() -> dict[str, str]:
    """The environment of a newcomer's shell: no test paths, no cluster address."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["RAY_DEDUP_LOGS"] = "0"
    return env


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3, "the README's driver, per-node and supervisor examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"example-{i + 1}" for i in range(len(BLOCKS))])
def test_readme_example_runs_as_a_script(index, tmp_path):
    """Twice in the same directory where it keeps state there (``./garrison-data``), as a newcomer
    does: the second run meets the first one's durable state.  An example that makes a fresh
    temporary directory each run would only repeat itself: once."""
    script = tmp_path / "driver.py"
    script.write_text(BLOCKS[index])
    outputs = []
    for run in (1, 2) if "./garrison-data" in BLOCKS[index] else (1,):
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_clean_env(), capture_output=True,
                              text=True, timeout=280)
        assert done.returncode == 0, (f"README example {index + 1}, run {run}, failed:\n"
                                      f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        outputs.append(done.stdout)
    if index == 0:  # the counter goes on from where the first run left it
        assert [out.split()[:2] for out in outputs] == [["2", "running"], ["4", "running"]], outputs
