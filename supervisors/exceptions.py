"""Exceptions raised by supervisors.

Every supervisor error derives from :class:`SupervisorError`, itself a
:class:`runtime.GarrisonError`, so one ``except GarrisonError`` catches the
whole system.  Errors from Ray and pydantic are translated at the boundary and
kept as ``__cause__``.

Class tree::

    SupervisorError              root of every supervisor error
    ├── SpecError                a child spec or supervisor flags are invalid; raised before anything starts
    │   └── DuplicateChildId     two child specs of one supervisor share an id
    ├── ChildStartError          a child could not be started (constructor, restore or on_start failed)
    ├── ChildNotFound            the supervisor has no child with that id
    ├── SupervisorNotRunning     the supervisor's lifecycle state refuses the call ("cannot X while Y")
    └── SupervisorUnavailable    the supervisor's actor is dead or did not answer in time

``SpecError`` is *your* configuration being wrong (fix the spec);
``ChildStartError`` is the child's own code or data failing at start (look at
the child); ``SupervisorNotRunning`` means the supervisor is alive but, for
example, quarantined or halted (release it first); ``SupervisorUnavailable``
means it is gone.
"""

from __future__ import annotations

from runtime.exceptions import GarrisonError

__all__ = [
    "ChildNotFound",
    "ChildStartError",
    "DuplicateChildId",
    "GarrisonError",
    "SpecError",
    "SupervisorError",
    "SupervisorNotRunning",
    "SupervisorUnavailable",
]


class SupervisorError(GarrisonError):
    """Root of the supervisors' errors."""


class SpecError(SupervisorError):
    """A child spec or the supervisor flags are invalid; raised before any child starts."""


class DuplicateChildId(SpecError):
    """Two child specs given to one supervisor share the same id."""


class ChildStartError(SupervisorError):
    """A child's host could not start: its constructor, restore or ``on_start`` failed."""


class ChildNotFound(SupervisorError):
    """The supervisor has no child with that id."""


class SupervisorNotRunning(SupervisorError):
    """The supervisor is alive, but its lifecycle state refuses the call."""


class SupervisorUnavailable(SupervisorError):
    """The supervisor's actor is dead, or did not answer before the timeout."""
