"""The README's even-numbered Python examples, run as ``test_readme.py`` runs the odd ones."""

from __future__ import annotations

import pytest

from .readme_examples import BLOCKS, ids, run_example

EVEN = range(1, len(BLOCKS), 2)  # examples 2, 4, 6, ...


@pytest.mark.parametrize("index", EVEN, ids=ids(EVEN))
def test_readme_example_runs_as_a_script(index, tmp_path):
    run_example(index, tmp_path)
