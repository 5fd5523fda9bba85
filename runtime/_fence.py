"""Fencing: every incarnation of an agent holds an epoch, and a later one fences the earlier.

A host claims its epoch from the checkpoint store (shared by every node that
may host the agent) *before* it restores.  From then on, an older incarnation
that is still alive (a hung process that wakes up, a node cut off and not yet
dead) can neither write nor act:

* its commits are refused (:meth:`Fence.check` before each commit, and the
  epoch written in the LMDB ``meta`` table is compared inside the write
  transaction, for a stale process on the same files);
* its journal segments and checkpoints are not published;
* its messages are refused by receivers (:class:`PeerEpochs`): the envelope
  or batch carries the sender's epoch.

Invariants: epochs only grow; once an incarnation knows it is fenced it stays
fenced (nothing un-fences); whatever a stale incarnation published before the
new one's claim is in the store the new one restores from.

Bound: one epoch file and one ``.base`` file (about 100 bytes each) per host
start, kept forever: deleting file ``e + 1`` would let a surviving
incarnation of epoch ``e`` pass as current.  They grow with restarts and
failovers, never with messages.
"""

from __future__ import annotations

from protocols import StaleEpoch

from ._ckstore import CheckpointStore
from .exceptions import Fenced

__all__ = ["Fence", "PeerEpochs"]


class Fence:
    """This incarnation's epoch and whether it has been superseded (thread-safe: one flag, set once)."""

    def __init__(self, ckstore: CheckpointStore, agent_id: str, epoch: int) -> None:
        self.ckstore = ckstore
        self.agent_id = agent_id
        self.epoch = epoch
        self.fenced = False

    def check(self, where: str) -> None:
        """Raise Fenced if a later epoch has been claimed (one ``stat`` until it has)."""
        if not self.fenced and self.ckstore.superseded(self.agent_id, self.epoch):
            self.fenced = True
        if self.fenced:
            raise self.error(where)

    def error(self, where: str) -> Fenced:
        return Fenced(
            f"agent {self.agent_id!r} epoch {self.epoch} was replaced by a later incarnation; "
            f"refused at {where}",
            agent_id=self.agent_id, epoch=self.epoch, where=where,
        )


class PeerEpochs:
    """A receiver's view of its senders' epochs: the newest seen, and the store's claims.

    A message from epoch ``e`` of a sender is refused if the receiver has seen
    a later epoch of that sender, or if the checkpoint store holds a later
    claim (so a replaced sender is refused even by a receiver it never
    reached again).  Senders without an epoch (drivers) are never refused.
    """

    def __init__(self, ckstore: CheckpointStore | None) -> None:
        self.ckstore = ckstore
        self.newest: dict[str, int] = {}

    def refusal(self, sender: str | None, epoch: int | None) -> StaleEpoch | None:
        if epoch is None or sender is None:
            return None
        newest = self.newest.get(sender, 0)
        if epoch > newest:
            self.newest[sender] = newest = epoch
        stale = epoch < newest
        if not stale and self.ckstore is not None:
            stale = self.ckstore.superseded(sender, epoch)
        if not stale:
            return None
        return StaleEpoch(
            f"message from {sender!r} epoch {epoch} refused: that incarnation was replaced by a later one",
            sender=sender, epoch=epoch,
        )
