"""The house's structure rules, checked on the source (AST only: nothing is imported or run).

Over ``runtime/``, ``protocols/`` and ``supervisors/``:

1. No class is longer than :data:`MAX_CLASS_LINES` lines: a class that grows
   past it holds more than one concept (split it into collaborators).
2. No module reads or writes another object's underscore attributes: ``x._name``
   only when ``x`` is ``self`` or ``cls`` (dunders ``__x__`` are anybody's).
   ``getattr``/``setattr``/``hasattr``/``delattr`` with a literal underscore
   name count too.  A foreign library's private attribute that has no public
   equivalent is listed in :data:`FOREIGN_PRIVATE`, with the reason; an entry
   nothing uses any more fails the test, so the list stays as small as it can be.
3. No class inherits from another class of these packages, so no mixin reaches
   into its host's private state, except value kinds (exceptions, pydantic
   models, enums, ``Protocol``, ``NamedTuple``, and whatever derives from
   them) and the bases listed in :data:`BASES`, each with its reason.

Importing a private name from another module (``from . import _directory``,
``from runtime._backoff import Backoff``) is not checked here; run this module
(``python -m tests.test_structure``) for a report that counts them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "protocols", "supervisors", "governance", "audit")
MAX_CLASS_LINES = 300

#: (module, attribute) -> why this foreign private attribute cannot be avoided.
FOREIGN_PRIVATE: dict[tuple[str, str], str] = {
    ("runtime/_directory.py", "_internal_kv_get"): "Ray's GCS key-value store has only underscore-named functions",
    ("runtime/_directory.py", "_internal_kv_put"): "Ray's GCS key-value store has only underscore-named functions",
    ("runtime/_directory.py", "_internal_kv_del"): "Ray's GCS key-value store has only underscore-named functions",
    ("runtime/_directory.py", "_internal_kv_list"): "Ray's GCS key-value store has only underscore-named functions",
    # Where the ref's split (branch h-ref) puts it: ``same_actor``, its only reader.
    ("runtime/_route.py", "_actor_id"): "a Ray ActorHandle's identity (is it another actor?) is only _actor_id",
    # Not foreign, but the one place a private attribute is set from outside its class: by the module that
    # defines ``Agent``.  Users' agents subclass it; a public name could clash with theirs.
    ("runtime/_agent.py", "_lookup"): "bind() gives a user's agent the host's lookup; Agent.lookup() reads it",
    ("runtime/_agent.py", "_gateway"): "bind() gives a user's agent the host's gateway; Agent.act() reads it",
    ("runtime/_agent.py", "_decide"): "bind() gives a user's agent the host's decision recorder; Agent.decide() reads it",
    ("runtime/_agent.py", "_gatekeeper"): "bind() gives a user's agent the host's gatekeeper; Agent.admit() reads it",
    ("protocols/_envelope.py", "_value_"): "Enum's documented sunder attribute: .value without its descriptor, "
                                           "on the encoding hot path",
}

#: (module, class) of bases other classes of ours may extend -> why that is not a mixin.
BASES: dict[tuple[str, str], str] = {
    ("runtime/_ckstore.py", "CheckpointStore"): "abstract interface of checkpoint storage: no state of its own",
    ("runtime/_agent.py", "Agent"): "the class users' agents extend (the framework's extension point)",
    ("runtime/_state.py", "ReadOnlyState"): "the read-only view the read-write State extends, in the same module",
    ("runtime/_queueworker.py", "QueueWorker"): "the agent users' queue workers extend (an extension point, as Agent)",
    ("runtime/_stage.py", "Stage"): "the queue worker users' pipeline stages extend (an extension point, as Agent)",
}

#: Foreign bases that make a class of ours (and its subclasses) a value kind.
VALUE_KINDS = frozenset({"BaseException", "Exception", "TimeoutError", "BaseModel", "Enum", "IntEnum",
                         "StrEnum", "Flag", "Protocol", "NamedTuple", "TypedDict"})


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


MODULES: dict[str, ast.Module] = dict(_modules())


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# -- 1. class length -------------------------------------------------------------------------------


def long_classes() -> list[str]:
    out = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_CLASS_LINES:
                    out.append(f"{module}:{node.lineno} class {node.name} is {lines} lines")
    return out


def test_no_class_is_longer_than_the_limit():
    assert long_classes() == [], f"classes over {MAX_CLASS_LINES} lines (split them into collaborators)"


# -- 2. other objects' underscore attributes -------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    module: str
    line: int
    attribute: str
    code: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.code}"


_ATTR_FUNCTIONS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def _own(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id in ("self", "cls")


def reaches(modules: dict[str, ast.Module] = MODULES) -> list[Reach]:
    """Every access to an underscore attribute of something other than ``self``/``cls``."""
    out = []
    for module, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _is_private(node.attr) and not _own(node.value):
                out.append(Reach(module, node.lineno, node.attr, ast.unparse(node)))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _ATTR_FUNCTIONS
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                  and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)
                  and not _own(node.args[0])):
                out.append(Reach(module, node.lineno, node.args[1].value, ast.unparse(node)))
    return sorted(out, key=lambda r: (r.module, r.line))


def test_no_module_reaches_into_another_objects_underscore_attributes():
    found = [r for r in reaches() if (r.module, r.attribute) not in FOREIGN_PRIVATE]
    assert found == [], "underscore attributes of another object (give it a public method, or pass a collaborator):\n" + \
        "\n".join(map(str, found))


def test_the_reach_check_sees_reads_writes_and_getattr_but_not_own_or_dunder_attributes():
    source = """
class A:
    def f(self, other):
        self._mine = cls._ours = other.__dict__
        other._theirs = 1
        x = other.peer._state
        getattr(other, "_hidden")
        setattr(self, "_fine", 1)
"""
    found = reaches({"m.py": ast.parse(source)})
    assert [(r.line, r.attribute) for r in found] == [(5, "_theirs"), (6, "_state"), (7, "_hidden")]


def test_every_allowed_foreign_private_attribute_is_still_used():
    used = {(r.module, r.attribute) for r in reaches()}
    assert set(FOREIGN_PRIVATE) - used == set(), "unused FOREIGN_PRIVATE entries: remove them"


# -- 3. inheritance ---------------------------------------------------------------------------------


ClassKey = tuple[str, str]  # (module path, class name)


def _module_path(module: str, level: int, name: str | None) -> str | None:
    """``from <level dots><name> import ...`` in ``module`` -> the path of our module it names (None: foreign)."""
    if level:
        parts = module.split("/")[:-1]
        parts = parts[: len(parts) - (level - 1)]
        dotted = ".".join([*parts, *(name.split(".") if name else [])])
    else:
        dotted = name or ""
    if dotted.split(".")[0] not in PACKAGES:
        return None
    for candidate in (dotted.replace(".", "/") + ".py", dotted.replace(".", "/") + "/__init__.py"):
        if candidate in MODULES:
            return candidate
    return None


def _imports(module: str) -> dict[str, tuple[str, str | None]]:
    """Local name -> (our module, name in it; None when the local name is that module itself)."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in ast.walk(MODULES[module]):
        if isinstance(node, ast.ImportFrom):
            source = _module_path(module, node.level, node.module)
            for alias in node.names:
                local = alias.asname or alias.name
                submodule = _module_path(module, node.level, f"{node.module}.{alias.name}" if node.module
                                         else alias.name)
                if submodule is not None:
                    out[local] = (submodule, None)
                elif source is not None:
                    out[local] = (source, alias.name)
    return out


def _classes() -> dict[ClassKey, ast.ClassDef]:
    return {(m, n.name): n for m, t in MODULES.items() for n in t.body if isinstance(n, ast.ClassDef)}


CLASSES = _classes()


def _resolve(module: str, name: str, depth: int = 0) -> ClassKey | None:
    """The class of ours that ``name`` means in ``module`` (following re-exports), or None."""
    if (module, name) in CLASSES:
        return module, name
    target = _imports(module).get(name)
    if target is None or target[1] is None or depth > 10:
        return None
    return _resolve(target[0], target[1], depth + 1)


def _base(module: str, expr: ast.expr) -> ClassKey | str:
    """A base class expression: the class of ours it names, or the foreign name (its last part)."""
    if isinstance(expr, ast.Subscript):  # Generic[T]
        expr = expr.value
    if isinstance(expr, ast.Name):
        return _resolve(module, expr.id) or expr.id
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        target = _imports(module).get(expr.value.id)
        if target is not None and target[1] is None:
            return _resolve(target[0], expr.attr) or expr.attr
        return expr.attr
    return ast.unparse(expr)


def _value_kind(key: ClassKey, depth: int = 0) -> bool:
    for base in (_base(key[0], b) for b in CLASSES[key].bases):
        if isinstance(base, str):
            if base in VALUE_KINDS or base.endswith("Error"):
                return True
        elif depth < 20 and _value_kind(base, depth + 1):
            return True
    return False


def inheritances() -> list[str]:
    """Every class of ours extending another class of ours that is neither a value kind nor in BASES."""
    out = []
    for (module, name), node in CLASSES.items():
        for base in (_base(module, b) for b in node.bases):
            if isinstance(base, tuple) and base not in BASES and not _value_kind(base):
                out.append(f"{module}:{node.lineno} class {name} inherits {base[1]} ({base[0]})")
    return out


def test_no_class_inherits_another_of_ours_except_value_kinds_and_listed_bases():
    assert inheritances() == [], "inherits a class of ours (pass a collaborator instead of mixing it in):\n" + \
        "\n".join(inheritances())


def test_every_listed_base_exists_and_is_extended():
    extended = {base for (m, _), node in CLASSES.items() for base in (_base(m, b) for b in node.bases)}
    assert set(BASES) - extended == set(), "unused or misspelt BASES entries"


def test_the_checks_see_what_they_claim_to():
    """The resolution works: known value kinds and listed bases are recognised as such."""
    assert _value_kind(("runtime/exceptions.py", "StateError"))
    assert _value_kind(("supervisors/_spec.py", "ChildSpec"))  # Frozen -> pydantic BaseModel
    assert _base("runtime/_workqueue.py", ast.parse("Agent", mode="eval").body) == ("runtime/_agent.py", "Agent")
    assert _base("runtime/_ckstore.py", ast.parse("CheckpointStore", mode="eval").body) in BASES
    assert not _value_kind(("runtime/_agent.py", "Agent"))


# -- report (not a test): private names imported from another module -------------------------------


def private_imports() -> list[str]:
    """``from X import _name`` of another module, and imports from another package's private module."""
    out = []
    for module, tree in MODULES.items():
        package = module.split("/")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                if _is_private(alias.name):
                    out.append(f"{module}:{node.lineno}: from {'.' * node.level}{node.module or ''} "
                               f"import {alias.name}")
            source = node.module or ""
            if not node.level and source.split(".")[0] != package and any(
                    _is_private(part) for part in source.split(".")[1:]):
                out.append(f"{module}:{node.lineno}: from {source} import "
                           f"{', '.join(a.name for a in node.names)} (another package's private module)")
    return out


if __name__ == "__main__":
    for title, items in (("classes over the limit", long_classes()),
                         ("reaches into underscore attributes",
                          [f"{r}{'  (allowed)' if (r.module, r.attribute) in FOREIGN_PRIVATE else ''}"
                           for r in reaches()]),
                         ("inheritance of our classes", inheritances()),
                         ("private imports (reported, not checked)", private_imports())):
        print(f"{title}: {len(items)}")
        for item in items:
            print(f"  {item}")

