"""The contract net: ``from runtime.contracts import ContractManager, Contractor, Announce, ...``.

A :class:`ContractManager` agent announces a task to bidder agents (:class:`CallForProposals`); each
:class:`Contractor` bids (:class:`Bid` with a :class:`Proposal`, reserving capacity) or refuses
(:class:`Refuse`); the manager awards the best bid (:class:`Award`, lowest cost by default), the winner
commits (:class:`Commit`), performs the task and reports :class:`Done` or :class:`Failed`, and the
others release (:class:`Reject`).  Deadlines (bids, commits) are in the manager's state and applied by
its timer; a winner that does not commit in time is passed over for the next best bid, or the task is
announced again.  The rules are pure functions in :mod:`runtime._contract_logic` (with a
:class:`ContractPolicy` and an injected clock); the agents and messages are in :mod:`runtime._contract`.
The errors (``ContractError``, ``IllegalTransition``, ``UnknownTask``) are in :mod:`runtime.exceptions`.
"""

from __future__ import annotations

from ._contract import (
    Announce,
    Award,
    Bid,
    CallForProposals,
    Commit,
    ContractManager,
    Contractor,
    ContractorStatus,
    Done,
    Failed,
    GetNegotiation,
    ListNegotiations,
    Refuse,
    Reject,
)
from ._contract_logic import ContractPolicy, NegotiationState, Proposal, lowest_cost
from .exceptions import ContractError, IllegalTransition, UnknownTask

__all__ = [
    "Announce",
    "Award",
    "Bid",
    "CallForProposals",
    "Commit",
    "ContractError",
    "ContractManager",
    "ContractPolicy",
    "Contractor",
    "ContractorStatus",
    "Done",
    "Failed",
    "GetNegotiation",
    "IllegalTransition",
    "ListNegotiations",
    "NegotiationState",
    "Proposal",
    "Refuse",
    "Reject",
    "UnknownTask",
    "lowest_cost",
]
