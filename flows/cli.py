"""The ``tarq`` console script: the library's commands (:mod:`tarq.cli`) plus ``tarq daily``.

``tarq daily [flags]`` runs the daily flow exactly as ``python -m flows.tarq_daily [flags]``
(same flags, same exit codes), ``tarq gc`` is :func:`flows.retention.main`, ``tarq ab``
:func:`flows.ab.main` and ``tarq rollback`` :func:`flows.rollback.main` (all need the flows or
MLflow helpers of ``flows/``); every other command is :func:`tarq.cli.main`, which never imports
Prefect (so ``tarq`` starts fast, and the library stays free of the orchestrator).
"""

from __future__ import annotations

import importlib
import sys

#: ``tarq <command>`` run from ``flows/``: the module whose ``main(argv)`` runs it.
COMMANDS = {
    "daily": "flows.tarq_daily",
    "ab": "flows.ab",
    "gc": "flows.retention",
    "rollback": "flows.rollback",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tarq`` command."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] and args[0] in COMMANDS:
        command = importlib.import_module(COMMANDS[args[0]]).main
        if args[0] == "daily":  # its usage line names the command it was called as
            return command(args[1:], prog="tarq daily")
        return command(args[1:])
    from tarq.cli import main as tarq_main

    return tarq_main(args)


if __name__ == "__main__":
    sys.exit(main())
