"""The ``tarq`` console script: the library's commands (:mod:`tarq.cli`) plus ``tarq daily``.

``tarq daily [flags]`` runs the daily flow exactly as ``python -m flows.tarq_daily [flags]``
(same flags, same exit codes), ``tarq gc`` is :func:`flows.retention.main`, ``tarq ab``
:func:`flows.ab.main` and ``tarq rollback`` :func:`flows.rollback.main` (all need the flows or
MLflow helpers of ``flows/``); every other command is :func:`tarq.cli.main`, which never imports
Prefect (so ``tarq`` starts fast, and the library stays free of the orchestrator).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tarq`` command."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["daily"]:
        from flows.tarq_daily import main as daily_main

        return daily_main(args[1:], prog="tarq daily")
    if args[:1] == ["ab"]:
        from flows.ab import main as ab_main

        return ab_main(args[1:])
    if args[:1] == ["gc"]:
        from flows.retention import main as gc_main

        return gc_main(args[1:])
    if args[:1] == ["rollback"]:
        from flows.rollback import main as rollback_main

        return rollback_main(args[1:])
    from tarq.cli import main as tarq_main

    return tarq_main(args)


if __name__ == "__main__":
    sys.exit(main())
