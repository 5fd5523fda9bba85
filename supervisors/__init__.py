"""Garrison's supervisors: watch agents, apply restart policies, quarantine and kill switches.

Depends on :mod:`runtime` and :mod:`protocols`; nothing depends on it.
Not built yet: see the supervisors issue.
"""

from .exceptions import SupervisorError

__all__ = ["SupervisorError"]
