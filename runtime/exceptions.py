"""Exceptions raised by the runtime.

Errors from Ray, LMDB, the filesystem and pydantic never escape the runtime's
API: they are translated at the boundary (``_boundary`` for Ray's, by type),
with the original kept as ``__cause__``.  Errors about the message itself
(malformed, unknown type, invalid body, expired) are the protocol's own classes
from :mod:`protocols.exceptions`, raised unchanged so a caller can tell "my
message was wrong" from "the runtime failed".  Both hang under one root,
:class:`GarrisonError` (defined in ``protocols.exceptions``, where the whole
tree is drawn): ``except GarrisonError`` catches every error Garrison raises.

The runtime's part of the tree::

    GarrisonError                   (root of every Garrison error; ProtocolError is a sibling below it)
    ├── ClusterUnavailable          Ray could not be started or joined
    ├── InternalError               an unexpected error inside the runtime (a bug): type and text in details
    ├── ConfigError                 a config value is out of range or inconsistent
    ├── DataDirectoryError          the data or checkpoint directory is missing or unwritable
    ├── StateError                  the LMDB working state failed (wraps lmdb.Error)
    │   └── StateDecodeError        a stored value cannot be decoded to the asked type
    ├── CheckpointError             writing or reading a checkpoint failed
    │   ├── CheckpointCorrupt       a checkpoint or journal segment failed its checksum
    │   └── NotDurable              SYNC: handled and committed here, but not yet shipped
    ├── RestoreError                no consistent state could be rebuilt for an agent
    ├── AgentError
    │   ├── AgentNotFound           no live agent has that id
    │   ├── AgentAlreadyRunning     an agent with that id is already live
    │   ├── AgentStartError         the agent's host could not start (constructor, restore)
    │   ├── AgentUnavailable        the agent is down and did not come back before the deadline
    │   ├── AgentNotRunning         the agent is alive but its lifecycle state refuses the call
    │   ├── MailboxFull             the window towards the agent is full; an at-most-once send is refused
    │   ├── NoHandler               the agent has no handler for a registered message type
    │   ├── MessageDropped          an intervention hook dropped the message before its handler
    │   ├── MessageHeld             an intervention hook held the message (a ``held`` dead letter)
    │   ├── HandlerError            the agent's handler raised; the state change was rolled back
    │   │   └── UnencodableReply    the handler returned a value that cannot be encoded; rolled back too
    │   ├── Fenced                  this incarnation was replaced by a later epoch; it acts no more
    │   └── AskDeadlock             a handler asked its own agent (or, packed, one on its lane): it could only time out
    ├── FeedbackError               an annotation names no recorded decision, has no known label, or audit is off
    ├── QueueError                  a work queue (``WorkQueue``) refused a request about one of its items
    │   ├── LeaseLost               the token no longer holds the item's lease: expired, claimed again, or finished
    │   └── UnknownItem             the queue has no item with that id
    ├── PipelineError               a pipeline refused a request: no such ticket, an escalation not open
    ├── ContractError               a contract net's manager refused a request about one of its tasks
    │   ├── IllegalTransition       the negotiation's state does not allow that move (say, done before committed)
    │   └── UnknownTask             the manager has no negotiation for that task id
    └── AskTimeout                  an ask got no reply before its deadline (also a TimeoutError)
"""

from __future__ import annotations

from protocols.exceptions import GarrisonError

__all__ = [
    "AgentAlreadyRunning",
    "AgentError",
    "AgentNotFound",
    "AgentNotRunning",
    "AgentStartError",
    "AgentUnavailable",
    "AskDeadlock",
    "AskTimeout",
    "CheckpointCorrupt",
    "CheckpointError",
    "ClusterUnavailable",
    "ConfigError",
    "ContractError",
    "DataDirectoryError",
    "FeedbackError",
    "Fenced",
    "GarrisonError",
    "HandlerError",
    "IllegalTransition",
    "InternalError",
    "LeaseLost",
    "MailboxFull",
    "MessageDropped",
    "MessageHeld",
    "NoHandler",
    "NotDurable",
    "PipelineError",
    "QueueError",
    "RestoreError",
    "StateDecodeError",
    "StateError",
    "UnencodableReply",
    "UnknownItem",
    "UnknownTask",
]


class ClusterUnavailable(GarrisonError):
    """Ray could not be started, or the cluster at the given address could not be joined."""


class InternalError(GarrisonError):
    """An unexpected error inside the runtime (a bug to report); ``details`` name its type and where."""


class ConfigError(GarrisonError):
    """A configuration value is out of range or inconsistent; raised before anything starts."""


class DataDirectoryError(GarrisonError):
    """The data or checkpoint directory is missing, not a directory, or not writable."""


class StateError(GarrisonError):
    """The LMDB working state failed underneath an operation."""


class StateDecodeError(StateError):
    """A stored value exists but cannot be decoded into the requested type."""


class CheckpointError(GarrisonError):
    """Writing, listing or reading a checkpoint or journal segment failed.

    When the filesystem refused (disk full, read-only, quota, permission),
    ``details`` carry ``errno`` (the number), ``errno_name`` (``ENOSPC``...)
    and ``path``; so do the ``errno`` and ``path`` properties.
    """

    @property
    def errno(self) -> int | None:
        value = self.details.get("errno")
        return value if isinstance(value, int) else None

    @property
    def path(self) -> str | None:
        value = self.details.get("path")
        return value if isinstance(value, str) else None


class CheckpointCorrupt(CheckpointError):
    """A checkpoint or journal segment failed its checksum; nothing in it was deserialized."""


class NotDurable(CheckpointError):
    """SYNC durability: the message was handled and committed on this node, but its journal
    could not be shipped to the checkpoint store, so the effect would not survive the node.

    Nothing it sent has left.  Asking again with the same message id is safe: it is not
    handled twice, and the reply comes once the journal is shipped.  ``AgentRef.ask`` does
    so until the deadline, then raises this; an outbox retries it without giving up.
    """


class RestoreError(GarrisonError):
    """No consistent state could be rebuilt (e.g. the local state belongs to another agent)."""


class AgentError(GarrisonError):
    """Something about a particular agent."""


class AgentNotFound(AgentError):
    """No live agent is registered under that id (never spawned, or stopped)."""


class AgentAlreadyRunning(AgentError):
    """An agent with that id is already live; there is one live instance per id."""


class AgentStartError(AgentError):
    """The agent's host failed to start: its class's constructor or restore raised."""


class AgentUnavailable(AgentError):
    """The agent's process is down and did not come back before the call's deadline."""


class AgentNotRunning(AgentError):
    """The agent is alive but its lifecycle state refuses the call (cannot X while Y)."""


class MailboxFull(AgentError):
    """The sender's window towards the agent is full: an at-most-once send is refused at once."""


class NoHandler(AgentError):
    """The message type is registered but this agent has no handler for it."""


class MessageDropped(AgentError):
    """An intervention hook (``AgentConfig.interventions``) dropped the message before its handler."""


class MessageHeld(AgentError):
    """An intervention hook held the message: kept as a ``held`` dead letter for an operator to replay."""


class HandlerError(AgentError):
    """The agent's handler raised; its state changes were rolled back and the agent goes on."""


class UnencodableReply(HandlerError):
    """The handler returned a value that cannot be encoded as a reply (an arbitrary object, say).

    It counts as the handler raising: its state changes were rolled back and its sends
    dropped; ``details`` name the handler and the value's type.  Return msgpack-able data
    (dicts, lists, str, int, float, bool, None, bytes; sets and tuples become lists) or a
    pydantic model.
    """


class Fenced(AgentError):
    """A later incarnation of the agent claimed a newer epoch: this one's writes and sends are refused.

    ``details``: ``agent_id``, ``epoch`` (this incarnation's) and ``where``.
    """


class AskDeadlock(AgentError):
    """A handler asked an agent whose messages are handled on the very thread that would wait for the
    reply: its own agent, or, for a packed agent, another agent on the same packed host and lane.

    Refused at once, before anything is sent: the ask could only have waited out its deadline.
    ``details``: ``agent_id`` (the asking agent), ``recipient``, ``lane`` (packed: the shared lane, say ``lane3``; else None).
    """


class FeedbackError(GarrisonError):
    """An annotation was refused: no such recorded decision, an unknown label, no ``who``, or audit off."""


class QueueError(GarrisonError):
    """A work queue refused a request about one of its items; nothing in the queue changed.

    ``details``: ``item``, and for a lease, ``token``, ``current_token`` and ``state``.
    """


class LeaseLost(QueueError):
    """The token no longer holds the item's lease: the lease expired (``state`` is still ``leased``
    or the expiry was applied), the item was claimed again (``current_token`` is newer), or it was
    finished under another token.  The work done under it must not be reported; claim again.
    (Completing again with the token that completed it is not an error: it answers ``already_completed``.)
    """


class UnknownItem(QueueError):
    """The queue has no item with that id (never enqueued here: another queue of a set, or a typo)."""


class PipelineError(GarrisonError):
    """A pipeline refused a request: an unknown stage, an escalation that is not open (already
    resolved, or never raised); nothing changed.  ``details``: ``pipeline``, and ``item`` or ``stage``.
    """


class ContractError(GarrisonError):
    """A contract net's manager refused a request about one of its tasks; nothing changed.

    ``details``: ``task_id``, and for a transition ``state`` (where it is), ``to`` and ``event``.
    """


class IllegalTransition(ContractError):
    """The task's negotiation cannot make that move from its state (a result before a commit, a
    result from a bidder that is not the committed winner, anything after DONE or FAILED)."""


class UnknownTask(ContractError):
    """The manager has no negotiation for that task id (never announced there)."""


class AskTimeout(GarrisonError, TimeoutError):
    """An ask got no reply before its deadline; ``details`` say which deadline and where."""
