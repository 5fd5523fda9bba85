"""The public surface is what we mean it to be, and every error has one root per package."""

from __future__ import annotations

import inspect

import protocols
import runtime
import supervisors
from protocols import exceptions as pexc
from runtime import exceptions as rexc


def test_runtime_exports():
    assert runtime.__all__ == sorted(runtime.__all__)
    assert {"Agent", "AgentConfig", "AgentRef", "AgentState", "System", "handler", "GarrisonError"} <= set(runtime.__all__)
    assert all(hasattr(runtime, name) for name in runtime.__all__)


def test_protocols_exports():
    assert protocols.__all__ == sorted(protocols.__all__)
    assert all(hasattr(protocols, name) for name in protocols.__all__)


def test_supervisors_exports():
    assert all(hasattr(supervisors, name) for name in supervisors.__all__)


def _classes(module):
    return [c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == module.__name__]


def test_one_root_per_package_and_every_class_documented():
    for module, root in ((pexc, pexc.ProtocolError), (rexc, rexc.GarrisonError)):
        for cls in _classes(module):
            if cls in (pexc.WireError,):
                continue
            assert issubclass(cls, root), cls
            assert cls.__doc__ and cls.__name__ in module.__doc__, f"{cls.__name__} is drawn in the class tree"


def test_dependencies_point_one_way():
    import pathlib
    import re

    root = pathlib.Path(runtime.__file__).parent.parent
    pattern = re.compile(r"^\s*(?:from|import)\s+(runtime|supervisors)\b", re.M)
    for path in (root / "protocols").glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name} must not import runtime/supervisors"
    pattern = re.compile(r"^\s*(?:from|import)\s+supervisors\b", re.M)
    for path in (root / "runtime").glob("*.py"):
        assert not pattern.search(path.read_text()), f"{path.name} must not import supervisors"
