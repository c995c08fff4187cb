"""``tarq rollback``: serve an older kept publication again, table and champion together.

``tarq publish --rollback`` switches only the warehouse's served ID table; the registry's
``champion`` alias — what ``tarq serve --follow`` and ``mlflow models serve
models:/tarq@champion`` load — keeps pointing at the newer model, so a server following it
would keep scoring with the model the operator rolled back from. This command does both under
the warehouse's run lock: :func:`tarq.release.publish.rollback`, then the alias moves to the
registered model version that publication was made with (its registry row), so every
follower swaps to it as it swaps to a promotion.

Exit codes: 0 done, 2 bad arguments or nothing to roll back to, 4 the warehouse is busy.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flows import tracking


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tarq rollback", description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", type=Path, required=True, help="the DuckDB warehouse")
    ap.add_argument(
        "--to-version",
        type=int,
        default=None,
        help="publication version to serve (default: the newest kept one older than the served)",
    )
    ap.add_argument("--registered-model", default=tracking.REGISTERED_MODEL)
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    return ap


def rollback(db: Path, to_version: int | None, registered_model: str) -> dict[str, Any]:
    """Switch the served table back, then move ``champion`` to that table's model version.

    Returns:
        :func:`tarq.release.publish.rollback`'s result plus ``model_version`` (now the champion) and
        ``previous_champion``.

    Raises:
        tarq.release.publish.PublishError: nothing to roll back to (nothing changed).
        ValueError: the publication records no registered model version (the table was
            switched; the alias was not moved).
    """
    from tarq.release.publish import list_versions
    from tarq.release.publish import rollback as rollback_table

    result = rollback_table(db, to_version=to_version)
    row = next(r for r in list_versions(db) if int(r["version"]) == result["to_version"])
    model_version = str(row.get("model_version") or "")
    if not model_version.isdigit():
        raise ValueError(
            f"publication {result['to_version']} records no registered model version "
            f"({model_version!r}): the table is served again, the {registered_model!r} alias "
            "'champion' was not moved"
        )
    client = tracking.client()
    try:
        previous = str(client.get_model_version_by_alias(registered_model, "champion").version)
    except Exception:  # no champion yet
        previous = None
    tracking.promote(model_version, registered_model)
    return {**result, "model_version": model_version, "previous_champion": previous}


def main(argv: Iterable[str] | None = None) -> int:
    from tarq.release.publish import PublishError
    from tarq.store.locking import LockBusyError, exclusive_lock, warehouse_lock_path

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    tracking.use_store(args.tracking_uri)
    try:
        with exclusive_lock(warehouse_lock_path(args.db), info={"command": "tarq rollback"}):
            result = rollback(args.db, args.to_version, args.registered_model)
    except LockBusyError as exc:
        print(f"tarq rollback: {exc}; nothing changed (run it when the daily job is done)")
        return 4
    except (PublishError, ValueError) as exc:
        print(f"tarq rollback: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
