"""The audit package's surface: its exports, its one exception tree, and what it may import."""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path

import audit
import protocols
from audit import exceptions as aexc
from protocols import exceptions as pexc
from protocols import error_from_wire

ROOT = Path(audit.__file__).resolve().parent.parent

#: What audit may import: the standard library, these foreign packages, and these modules of ours.
FOREIGN = {"msgpack", "cryptography"}
OURS = {"protocols", "protocols.exceptions"}


def test_exports_are_sorted_and_exist():
    assert audit.__all__ == sorted(audit.__all__)
    assert all(hasattr(audit, name) for name in audit.__all__)
    assert {"AuditError", "Chain", "Checkpoint", "TreeStore", "verify_chain", "verify_consistency",
            "verify_inclusion", "open_checkpoint", "sign_checkpoint"} <= set(audit.__all__)


def test_one_root_every_class_documented_and_drawn_in_both_trees():
    classes = [c for _, c in inspect.getmembers(aexc, inspect.isclass) if c.__module__ == aexc.__name__]
    assert len(classes) == 14
    assert issubclass(aexc.AuditError, pexc.GarrisonError)
    for cls in classes:
        assert issubclass(cls, aexc.AuditError), cls
        assert cls.__doc__ and cls.__name__ in aexc.__doc__, f"{cls.__name__} is drawn in the class tree"
        assert getattr(audit, cls.__name__) is cls
    assert "AuditError" in pexc.__doc__ and "(audit.exceptions)" in pexc.__doc__


def test_every_audit_error_crosses_the_wire_as_itself():
    for name in aexc.__all__:
        cls = getattr(aexc, name)
        copy = error_from_wire(cls("why", index=3, reason="deleted", check="root").to_wire())
        assert type(copy) is cls and copy.message == "why"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add(node.module or "")
    return out


def test_audit_imports_only_the_standard_library_its_two_packages_and_two_modules_of_ours():
    for path in sorted((ROOT / "audit").glob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == "__future__" or top in sys.stdlib_module_names:
                continue
            assert top in FOREIGN or name in OURS, f"audit/{path.name} imports {name}"


def test_nothing_audit_depends_on_imports_it():
    for package in ("protocols",):
        for path in sorted((ROOT / package).rglob("*.py")):
            assert not any(n.split(".")[0] == "audit" for n in _imports(path)), f"{path} imports audit"
    assert protocols  # the root error's package is importable without audit
