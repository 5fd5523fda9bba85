"""Every Python example in README.md runs verbatim, as a script, from a fresh directory (the odd ones here,
the even ones in ``test_readme_even.py``).

The code blocks are read from the README itself, so it cannot drift from the
code: a newcomer saves one as ``driver.py`` and runs ``python driver.py`` with
nothing else on the path (each starts its own embedded Ray, as a user's does).
"""

from __future__ import annotations

import pytest

from .readme_examples import BLOCKS, ids, run_example

ODD = range(0, len(BLOCKS), 2)  # examples 1, 3, 5, ...


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 3, "the README's driver, per-node and supervisor examples"


@pytest.mark.parametrize("index", ODD, ids=ids(ODD))
def test_readme_example_runs_as_a_script(index, tmp_path):
    outputs = run_example(index, tmp_path)
    if index == 0:  # the counter goes on from where the first run left it
        assert [out.split()[:2] for out in outputs] == [["2", "running"], ["4", "running"]], outputs
