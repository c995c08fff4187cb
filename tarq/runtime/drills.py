"""Fault drills: fail at a named step when an environment variable names it.

The fault tests (and an operator rehearsing a recovery) set e.g.
``TARQ_PUBLISH_CRASH=before_switch`` to stop a run exactly where a real crash would hurt most,
then check that the rerun or retry recovers. Nothing happens when the variable is unset.
"""

from __future__ import annotations

import os


class InjectedCrash(RuntimeError):
    """Raised where a drill variable names the current step."""


def crash_point(env_var: str, step: str, once: bool = False) -> None:
    """Raise :class:`InjectedCrash` when ``$env_var`` is ``step``.

    ``once`` clears the variable first, so a retry in the same process goes on (a transient
    failure); without it every attempt fails there (a crash the process does not survive).
    """
    if os.environ.get(env_var, "") != step:
        return
    if once:
        del os.environ[env_var]
    raise InjectedCrash(f"injected crash at {step!r} (${env_var})")
