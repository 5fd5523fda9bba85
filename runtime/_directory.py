"""Where an agent lives: agent id -> the Ray actor hosting it, kept in Ray's GCS key-value store.

Every host is a named actor.  Usually its name is the agent id, but a name is
fixed when the actor is created and cannot be handed over: a warm-standby
spare (see ``supervisors``) is started under a name of its own before it
knows which agent it will host.  So every host, when it starts serving,
records ``agent id -> (actor name, epoch)`` here, and every lookup (drivers'
``AgentRef``, outboxes, supervisors) reads the record, falling back to the
actor named like the agent when there is none.

Invariants: each host writes its own record, keyed ``<agent id>@<epoch>``,
and never another's; a lookup takes the newest epoch's record.  So two hosts
registering at once (a replaced one and its successor) cannot overwrite each
other: the successor wins whatever the order.  A host removes the records of
older epochs when it registers, and its own when it stops.  Ray's KV API is
private (``ray.experimental.internal_kv``); it is used here and nowhere
else.

A packed agent (``_packing``) is recorded the same way, naming its packed
host's actor and its lane count (``packed``): resolving it gives a
``PackedHandle``, the host's handle with the agent's id bound in, so every
caller reaches it as it reaches an agent with an actor of its own.  Its record
stays while it is passivated (it is still served, by whichever host that is).
"""

from __future__ import annotations

from typing import Any

import msgpack
import ray
from ray.experimental import internal_kv

from ._packed_handle import PackedHandle
from ._packing import PACKED_PREFIX
from .exceptions import AgentNotFound

__all__ = ["SPARE_PREFIX", "entries", "forget", "live_ids", "register", "resolve"]

#: Actor names of warm-standby spares start with this; they are not agents.
SPARE_PREFIX = "garrison-spare-"


def _kv_namespace(namespace: str) -> str:
    return f"garrison-directory/{namespace}"


def _key(agent_id: str, epoch: int) -> str:
    # Agent ids never hold "@" (see check_agent_id), so "<id>@" prefixes only that agent's keys.
    return f"{agent_id}@{epoch:020d}"


def _parse(key: bytes | str) -> tuple[str, int, str] | None:
    """``(agent id, epoch, key)`` of a record's key; None for a key that is not one."""
    text = key.decode() if isinstance(key, bytes) else str(key)
    agent_id, _, epoch = text.rpartition("@")
    return (agent_id, int(epoch), text) if agent_id and epoch.isdigit() else None


def _records(agent_id: str, namespace: str) -> list[tuple[int, str]]:
    """``(epoch, key)`` of every record of ``agent_id``, oldest first."""
    keys = internal_kv._internal_kv_list(f"{agent_id}@", namespace=_kv_namespace(namespace))
    return sorted((epoch, text) for _, epoch, text in filter(None, map(_parse, keys)))


def _read(key: str, namespace: str) -> dict[str, Any] | None:
    raw = internal_kv._internal_kv_get(key, namespace=_kv_namespace(namespace))
    if raw is None:
        return None
    try:
        record = msgpack.unpackb(raw)
    except Exception:  # a foreign or torn value: as if there were none
        return None
    return record if isinstance(record, dict) else None


def register(agent_id: str, actor_name: str, epoch: int, *, namespace: str, packed: int | None = None) -> None:
    """Record that ``actor_name`` hosts ``agent_id`` from ``epoch`` on; drop older epochs' records.

    ``packed``: the actor is a packed host with that many lanes (``_packed_handle``).
    """
    ns = _kv_namespace(namespace)
    value = msgpack.packb({"actor": actor_name, "epoch": epoch, **({"packed": packed} if packed else {})})
    internal_kv._internal_kv_put(_key(agent_id, epoch), value, overwrite=True, namespace=ns)
    for older, key in _records(agent_id, namespace):
        if older < epoch:
            internal_kv._internal_kv_del(key, namespace=ns)


def forget(agent_id: str, actor_name: str, *, namespace: str) -> None:
    """Remove this host's records of ``agent_id`` (a later host's record stays)."""
    for _, key in _records(agent_id, namespace):
        record = _read(key, namespace)
        if record is not None and record.get("actor") == actor_name:
            internal_kv._internal_kv_del(key, namespace=_kv_namespace(namespace))


def _record(agent_id: str, namespace: str) -> dict[str, Any] | None:
    """The newest epoch's record of ``agent_id``, if any."""
    for _, key in reversed(_records(agent_id, namespace)):
        record = _read(key, namespace)
        if record is not None:
            return record
    return None


def actor_name(agent_id: str, *, namespace: str) -> str:
    """The name of the actor that hosts ``agent_id`` (its own id unless a spare adopted it)."""
    record = _record(agent_id, namespace)
    return str(record["actor"]) if record is not None and "actor" in record else agent_id


def resolve(agent_id: str, *, namespace: str) -> Any:
    """The actor handle hosting ``agent_id`` (a ``PackedHandle`` for a packed agent); AgentNotFound if
    no such actor is live."""
    record = _record(agent_id, namespace)
    name = str(record["actor"]) if record is not None and "actor" in record else agent_id
    try:
        handle = ray.get_actor(name, namespace=namespace)
        lanes = record.get("packed") if record is not None else None
        return PackedHandle(handle, agent_id, int(lanes)) if lanes else handle
    except ValueError:
        if name != agent_id:
            try:  # a stale record (the spare died and a cold restart took the plain name)
                return ray.get_actor(agent_id, namespace=namespace)
            except ValueError:
                pass
        raise AgentNotFound(f"no live agent {agent_id!r} in namespace {namespace!r}", agent_id=agent_id) from None


def entries(*, namespace: str) -> dict[str, str]:
    """Every recorded agent id and the actor name its newest record gives."""
    keys = internal_kv._internal_kv_list("", namespace=_kv_namespace(namespace))
    newest: dict[str, tuple[int, str]] = {}
    for agent_id, epoch, text in filter(None, map(_parse, keys)):
        if epoch > newest.get(agent_id, (-1, ""))[0]:
            newest[agent_id] = (epoch, text)
    out = {}
    for agent_id, (_, key) in newest.items():
        record = _read(key, namespace)
        if record is not None:
            out[agent_id] = str(record.get("actor", agent_id))
    return out


def live_ids(*, namespace: str) -> list[str]:
    """Ids of the named actors of ``namespace`` (agents and supervisors), adopted and packed agents included,
    spares and packed hosts not."""
    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace}
    adopted = {agent for agent, actor in entries(namespace=namespace).items() if actor in names}
    return sorted({n for n in names if not n.startswith((SPARE_PREFIX, PACKED_PREFIX))} | adopted)
