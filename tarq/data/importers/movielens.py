"""MovieLens ratings: the classic 100k files and RecBole atomic files.

Recognised files (others, e.g. ``u1.base``, ``u.genre``, ``README``, are listed as skipped):

* classic MovieLens 100k: ``u.data`` (tab: user, item, rating, timestamp), ``u.item``
  (pipe, Latin-1: id|title|release date|video release date|IMDb URL|19 genre flags),
  ``u.user`` (pipe: id|age|gender|occupation|zip);
* RecBole atomic files: ``*.inter`` (``user_id:token item_id:token rating:float
  timestamp:float``), ``*.item`` (``item_id:token movie_title:token_seq release_year:token
  class:token_seq``; ``genre`` is accepted for ``class``), ``*.user`` (``user_id:token
  age:token gender:token occupation:token zip_code:token``), tab-separated UTF-8 with a
  typed header.

Mapping (documented in the SQL files too):

* every rating is one impression, ``clicked = rating >= 4``, ``exposed = TRUE``, and one
  behaviour at the same time with ``action = 'fav'`` (rating >= 4) or ``'pv'`` (below), the
  item id and the item's category/brand codes. Samples take behaviours strictly before an
  impression, so a user's history is their earlier ratings.
* items: ``category_id`` = stable code of the first genre, ``brand_id`` = stable code of the
  release decade (e.g. ``'1990s'``; NULL when the year is unknown), ``price`` NULL.
* users: side features ``age_bucket`` (MovieLens-1M age groups), ``gender``,
  ``occupation`` and ``zip3`` (first three zip characters) as BIGINT codes.

Stable codes come from :func:`tarq.data.codes.stable_code` (SQL macro ``tarq_code``), so a
file appended later codes the same strings the same way, in either format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tarq.data.importers.common import (
    FileReport,
    ImportContext,
    TextFormat,
    create_stubs,
    list_files,
    load_typed,
    skipped,
    source_columns,
    stage_text,
)
from tarq.store.sqlfiles import run

GENRES = (
    "unknown",
    "action",
    "adventure",
    "animation",
    "childrens",
    "comedy",
    "crime",
    "documentary",
    "drama",
    "fantasy",
    "film_noir",
    "horror",
    "musical",
    "mystery",
    "romance",
    "sci_fi",
    "thriller",
    "war",
    "western",
)

CLASSIC_DATA = TextFormat(
    "MovieLens u.data",
    "\t",
    False,
    ("user_id", "item_id", "rating", "timestamp"),
    quote="",
)
CLASSIC_ITEM = TextFormat(
    "MovieLens u.item",
    "|",
    False,
    (
        "item_id",
        "title",
        "release_date",
        "video_release_date",
        "imdb_url",
        *(f"genre_{g}" for g in GENRES),
    ),
    encoding="latin-1",
    quote="",
)
CLASSIC_USER = TextFormat(
    "MovieLens u.user",
    "|",
    False,
    ("user_id", "age", "gender", "occupation", "zip_code"),
    quote="",
)
RECBOLE_INTER = TextFormat(
    "RecBole .inter",
    "\t",
    True,
    ("user_id", "item_id", "rating", "timestamp"),
    quote="",
    strip_types=True,
)
RECBOLE_ITEM = TextFormat(
    "RecBole .item",
    "\t",
    True,
    ("item_id", "release_year", "genres"),
    quote="",
    strip_types=True,
    aliases=(("class", "genres"), ("genre", "genres")),
)
RECBOLE_USER = TextFormat(
    "RecBole .user",
    "\t",
    True,
    ("user_id", "age", "gender", "occupation", "zip_code"),
    quote="",
    strip_types=True,
)

USER_SIDE = {"age_bucket": "BIGINT", "gender": "BIGINT", "occupation": "BIGINT", "zip3": "BIGINT"}

_ORDER = {"items": 0, "users": 1, "ratings": 2}


@dataclass
class _Planned:
    path: Path
    what: str  # items | users | ratings
    fmt: TextFormat
    sql: str
    names: list[str]
    ignored: list[str]


def _classify(path: Path) -> tuple[str, TextFormat, str] | None:
    name = path.name
    if name == "u.data":
        return "ratings", CLASSIC_DATA, "importers/movielens_ratings"
    if name == "u.item":
        return "items", CLASSIC_ITEM, "importers/movielens_items_classic"
    if name == "u.user":
        return "users", CLASSIC_USER, "importers/movielens_users"
    if name.endswith(".inter"):
        return "ratings", RECBOLE_INTER, "importers/movielens_ratings"
    if name.endswith(".item"):
        return "items", RECBOLE_ITEM, "importers/movielens_items_recbole"
    if name.endswith(".user"):
        return "users", RECBOLE_USER, "importers/movielens_users"
    return None


def _skip_reason(path: Path) -> str:
    name = path.name
    if name.startswith("u") and name.endswith((".base", ".test")):
        return "a train/test split of u.data; import u.data itself"
    return (
        "not a MovieLens ratings/items/users file (u.data, u.item, u.user or RecBole "
        "*.inter, *.item, *.user)"
    )


def plan(src: Path) -> tuple[list[_Planned], list[FileReport]]:
    """Recognise the files of ``src`` and check their first lines (nothing is written)."""
    todo: list[_Planned] = []
    skips: list[FileReport] = []
    for path in list_files(src):
        found = _classify(path)
        if found is None:
            skips.append(skipped(path, _skip_reason(path)))
            continue
        what, fmt, sql = found
        names, ignored = source_columns(path, fmt)
        todo.append(_Planned(path, what, fmt, sql, names, ignored))
    todo.sort(key=lambda p: (_ORDER[p.what], p.path.name))
    return todo, skips


def load(ctx: ImportContext, todo: list[_Planned]) -> list[FileReport]:
    """Load items, then users, then ratings (behaviours need the items' codes)."""
    reports: list[FileReport] = []
    for item in todo:
        stage_text(ctx, item.path, item.fmt, item.names)
        run(ctx.con, item.sql)
        if item.what == "items":  # both item formats end in the same catalog rows
            run(ctx.con, "importers/movielens_items")
        if item.what == "ratings":
            imp = FileReport(file=str(item.path), table="impressions")
            beh = FileReport(file=str(item.path), table="behaviors")
            for r in (imp, beh):
                if item.ignored:
                    r.notes.append(f"ignored column(s): {', '.join(item.ignored)}")
            load_typed(ctx, imp, "impressions")
            create_stubs(ctx, imp)
            # A rejected rating line is quarantined for both tables it was meant for.
            load_typed(ctx, beh, "behaviors")
            reports += [imp, beh]
            continue
        table = item.what
        report = FileReport(file=str(item.path), table=table)
        if item.ignored:
            report.notes.append(f"ignored column(s): {', '.join(item.ignored)}")
        load_typed(ctx, report, table, USER_SIDE if table == "users" else None)
        reports.append(report)
    return reports
