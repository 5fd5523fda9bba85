"""An agent version's manifest: what the version is made of, content-addressed.

:func:`agent_manifest` describes the agent a host runs::

    class          the agent class's import path
    code           SHA-256 of the bytecode of the class's methods (and its bases' up to
                   ``Agent``) and of its tools' functions
    config         SHA-256 of the whole ``AgentConfig`` (grants, risk policy, budget, ...)
    config_version the config's own ``config_version``
    risk_policy    the risk policy's version
    tools          per action tag: the tool's name, the capability and the declared risk
    prompts        ``Agent.prompts``, as the class declares them (name -> text)
    models         ``Agent.models`` (name -> model id)

and :func:`version_hash` names it: ``sha256:`` of its canonical bytes.  Bytecode,
not source text: a class that reached a worker by value (defined in a driver's
``__main__``) has no source file there, and the hash must be the same in every
process that runs the same code.  Comments do not change it; docstrings do.

:func:`record_version` records the manifest in the agent's audit log (a
``manifest`` record: ``hash``, ``manifest``, ``incarnation``) whenever an
incarnation starts under another one than the last recorded, and keeps the
hash in the agent's control table.  The audit trail stamps every record it
ships with the hash in force when the record was made (``_audit``): the last
``manifest`` record before it, in the agent's sequence order.

Invariant: the same class, tools and config give the same hash in every process.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterable
from typing import Any

from governance import Risk
from protocols import canonical_bytes

from ._audit import audit_op
from ._store import PUT, LmdbStore, Op

__all__ = ["VERSION_KEY", "agent_manifest", "record_version", "version_hash"]

#: Control-table key of the hash of the manifest last recorded.
VERSION_KEY = b"version"


def _const(value: Any) -> str:
    """A code constant, the same text in every process (sets sorted: their order follows string hashing)."""
    if isinstance(value, types.CodeType):
        return _code(value)
    if isinstance(value, frozenset | set):
        return "{" + ",".join(sorted(_const(v) for v in value)) + "}"
    if isinstance(value, tuple):
        return "(" + ",".join(_const(v) for v in value) + ")"
    return repr(value)


def _code(co: types.CodeType) -> str:
    digest = hashlib.sha256(co.co_code)
    digest.update(repr((co.co_names, co.co_varnames, co.co_freevars)).encode())
    for c in co.co_consts:
        digest.update(_const(c).encode())
    return digest.hexdigest()


def _functions(value: Any) -> Iterable[types.FunctionType]:
    """The plain functions behind a class attribute (methods, static and class methods, properties)."""
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        yield from (f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType))
    elif isinstance(value, types.FunctionType):
        yield getattr(value, "__wrapped__", value)


def code_digest(agent_cls: type, tools: Iterable[Any] = ()) -> str:
    """SHA-256 over the bytecode of ``agent_cls``'s methods (and its bases' up to ``Agent``) and ``tools``."""
    from ._agent import Agent

    digest = hashlib.sha256()
    for klass in agent_cls.__mro__:
        if klass is Agent or klass is object:
            break
        for name in sorted(vars(klass)):
            for fn in _functions(vars(klass)[name]):
                digest.update(f"{klass.__qualname__}.{name}:{_code(fn.__code__)}\n".encode())
    for tool in tools:
        fn = getattr(tool, "call", tool)
        code = getattr(fn, "__code__", None)
        digest.update(f"tool {getattr(fn, '__qualname__', type(fn).__qualname__)}:"
                      f"{_code(code) if code is not None else ''}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def agent_manifest(class_path: str, agent_cls: type, config: Any) -> dict[str, Any]:
    """The manifest of the version ``agent_cls`` with ``config`` is (see module docstring)."""
    tools: dict[str, Any] = {}
    for action_cls, tool in sorted(agent_cls.tools.items(), key=lambda kv: kv[0].type_tag()):
        decl = action_cls.declaration()
        risk = decl.risk.value if isinstance(decl.risk, Risk) else f"computed by {getattr(decl.risk, '__qualname__', '?')}"
        fn = getattr(tool, "call", tool)
        tools[action_cls.type_tag()] = {"tool": getattr(fn, "__qualname__", type(fn).__qualname__),
                                        "capability": decl.capability, "risk": risk}
    return {
        "class": class_path,
        "code": code_digest(agent_cls, agent_cls.tools.values()),
        "config": "sha256:" + hashlib.sha256(config.model_dump_json().encode()).hexdigest(),
        "config_version": config.config_version,
        "risk_policy": config.risk_policy.version,
        "tools": tools,
        "prompts": dict(getattr(agent_cls, "prompts", {})),
        "models": dict(getattr(agent_cls, "models", {})),
    }


def version_hash(manifest: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def record_version(store: LmdbStore, audited: bool, manifest: dict[str, Any], incarnation: int, now: float) -> str:
    """The manifest's hash; recorded (audit record and control key, one commit) if it is not the last one."""
    digest = version_hash(manifest)
    if store.get("control", VERSION_KEY) != digest.encode():
        ops = [Op("control", PUT, VERSION_KEY, digest.encode())]
        if audited:
            ops.append(audit_op("manifest", {"hash": digest, "manifest": manifest, "incarnation": incarnation}, now))
        store.commit(ops, now=now)
    return digest
