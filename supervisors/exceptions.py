"""Exceptions raised by supervisors.

Class tree::

    SupervisorError    root of every supervisor error
"""

from __future__ import annotations

from runtime.exceptions import GarrisonError

__all__ = ["SupervisorError"]


class SupervisorError(GarrisonError):
    """Root of the supervisors' errors."""
