"""A packed host's agents on disk: each one's spec, and which of them were open.

The roster lives in the checkpoint store's directory (``<checkpoint_dir>/packed/<host>/``),
which every node that may run the host shares, so a host that Ray restarts
(after a crash, or on another node) finds its agents again:

``specs/<agent id>.spec``  the agent's ``HostSpec`` (pickled as a spec pickles: its class
                           and ``init`` by cloudpickle), written at placement, durably;
                           the next message to a passivated agent reopens it from this.
``open/<agent id>``        present while the agent is open.  After a crash the host reopens
                           these at once: an open agent may have had sends in its outbox,
                           which only an open agent delivers.

Invariants: a spec is written whole or not at all (a temporary file, fsynced, renamed);
an agent with no spec is not served here.  Bound: one small file per agent placed, one
per agent open.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

from ._ckstore import atomic_write
from ._spec import HostSpec
from .exceptions import DataDirectoryError

__all__ = ["Roster"]

_SPEC = ".spec"


class Roster:
    """The specs and open markers of one packed host's agents (see module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._specs = self.root / "specs"
        self._open = self.root / "open"
        try:
            self._specs.mkdir(parents=True, exist_ok=True)
            self._open.mkdir(exist_ok=True)
        except OSError as exc:
            raise DataDirectoryError(f"cannot create the packed host's roster {self.root}: {exc}",
                                     path=str(self.root)) from exc

    def __repr__(self) -> str:
        return f"Roster({str(self.root)!r})"

    def put(self, spec: HostSpec) -> None:
        """Record ``spec`` durably (replacing an earlier one of the same agent)."""
        path = self._specs / f"{spec.agent_id}{_SPEC}"
        try:
            atomic_write(path, pickle.dumps(spec))
        except OSError as exc:
            raise DataDirectoryError(f"cannot record the spec of {spec.agent_id!r} at {path}: {exc}",
                                     path=str(path)) from exc

    def load(self, agent_id: str) -> HostSpec | None:
        """The agent's spec, or None if it is not placed here.  A class this process cannot load gives a
        spec with ``agent_cls=None`` (``HostSpec``'s invariant): starting it then says why."""
        try:
            raw = (self._specs / f"{agent_id}{_SPEC}").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DataDirectoryError(f"cannot read the spec of {agent_id!r}: {exc}", path=str(self.root)) from exc
        spec = pickle.loads(raw)
        assert isinstance(spec, HostSpec)
        return spec

    def remove(self, agent_id: str) -> None:
        for path in (self._specs / f"{agent_id}{_SPEC}", self._open / agent_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def ids(self) -> list[str]:
        """Every agent placed here."""
        return sorted(n[: -len(_SPEC)] for n in os.listdir(self._specs) if n.endswith(_SPEC))

    def mark_open(self, agent_id: str) -> None:
        (self._open / agent_id).touch()

    def mark_closed(self, agent_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self._open / agent_id).unlink()

    def opened(self) -> list[str]:
        """The agents that were open when the host last ran (and are still placed)."""
        placed = set(self.ids())
        return sorted(n for n in os.listdir(self._open) if n in placed)
