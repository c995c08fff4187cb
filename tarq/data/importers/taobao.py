"""Taobao "Ad Display/Click" data (Tianchi dataset 56) and the Taobao UserBehavior log.

Files are recognised by name (any of them may be absent, and a head/sample of a file is
fine):

=================  ==========================================================  ============
name contains      columns                                                     table
=================  ==========================================================  ============
``ad_feature``     adgroup_id,cate_id,campaign_id,customer,brand,price         items
``user_profile``   userid,cms_segid,cms_group_id,final_gender_code,age_level,  users
                   pvalue_level,shopping_level,occupation,new_user_class_level
``raw_sample``     user,time_stamp,adgroup_id,pid,nonclk,clk                   impressions
``behavior_log``   user,time_stamp,btag,cate,brand                             behaviors
``UserBehavior``   (no header) user_id,item_id,category_id,behavior_type,ts    behaviors
=================  ==========================================================  ============

Mapping decisions (see the SQL files for the row-level details):

* impressions: ``item_id = adgroup_id``, ``ts`` = ``time_stamp`` as naive UTC,
  ``clicked = (clk = 1)``, ``exposed = TRUE``; ``position`` and ``request_id`` are NULL
  (``pid`` is the ad slot, not a request). ``nonclk`` must be ``1 - clk``: a row with both
  set or neither is quarantined as ``label_conflict``.
* items: ``category_id = cate_id``, ``brand_id = brand`` (the text ``NULL`` → NULL),
  ``price`` (inf/NaN quarantined as ``non_finite``); side features ``campaign_id`` and
  ``customer``.
* users: every profile field is a user side feature under its own name.
* behaviours: ``action = btag`` (pv/cart/fav/buy), category and brand; ``item_id`` NULL for
  ``behavior_log`` and set for ``UserBehavior``.
* Items and users referenced by the loaded impressions but absent from the catalog get
  stub rows (id only). Feature files are loaded before logs in one run so that stubs only
  cover real gaps; a stub cannot be filled in later (the catalog is append-only).
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

AD_FEATURE = TextFormat(
    "Taobao ad_feature",
    ",",
    True,
    ("adgroup_id", "cate_id", "campaign_id", "customer", "brand", "price"),
)
USER_PROFILE = TextFormat(
    "Taobao user_profile",
    ",",
    True,
    (
        "userid",
        "cms_segid",
        "cms_group_id",
        "final_gender_code",
        "age_level",
        "pvalue_level",
        "shopping_level",
        "occupation",
        "new_user_class_level",
    ),
)
RAW_SAMPLE = TextFormat(
    "Taobao raw_sample",
    ",",
    True,
    ("user", "time_stamp", "adgroup_id", "nonclk", "clk"),
)
BEHAVIOR_LOG = TextFormat(
    "Taobao behavior_log",
    ",",
    True,
    ("user", "time_stamp", "btag", "cate", "brand"),
)
USER_BEHAVIOR = TextFormat(
    "Taobao UserBehavior",
    ",",
    False,
    ("user_id", "item_id", "category_id", "behavior_type", "timestamp"),
)

ITEM_SIDE = {"campaign_id": "BIGINT", "customer": "BIGINT"}
USER_SIDE = {c: "BIGINT" for c in USER_PROFILE.columns if c != "userid"}


@dataclass(frozen=True)
class _Role:
    pattern: str
    fmt: TextFormat
    table: str
    sql: str
    order: int


# Load order: catalog files first, so that stubs are only made for ids no feature file has.
_ROLES = (
    _Role("ad_feature", AD_FEATURE, "items", "importers/taobao_ad_feature", 0),
    _Role("user_profile", USER_PROFILE, "users", "importers/taobao_user_profile", 1),
    _Role("raw_sample", RAW_SAMPLE, "impressions", "importers/taobao_raw_sample", 2),
    _Role("behavior_log", BEHAVIOR_LOG, "behaviors", "importers/taobao_behavior_log", 3),
    _Role("userbehavior", USER_BEHAVIOR, "behaviors", "importers/taobao_user_behavior", 4),
)
_TEXT_SUFFIXES = (".csv", ".txt", ".csv.gz", ".txt.gz")


def _role_of(path: Path) -> _Role | None:
    name = path.name.lower()
    if not name.endswith(_TEXT_SUFFIXES):
        return None
    for role in _ROLES:
        if role.pattern in name:
            return role
    return None


@dataclass
class _Planned:
    path: Path
    role: _Role
    names: list[str]
    ignored: list[str]


def plan(src: Path) -> tuple[list[_Planned], list[FileReport]]:
    """Recognise the files of ``src`` and check their headers (nothing is written).

    Returns:
        The files to load in load order, and report entries for the files skipped.

    Raises:
        SourceFormatError: a recognised file has a bad header (named in the message).
    """
    todo: list[_Planned] = []
    skips: list[FileReport] = []
    for path in list_files(src):
        role = _role_of(path)
        if role is None:
            skips.append(skipped(path, _skip_reason(path)))
            continue
        names, ignored = source_columns(path, role.fmt)
        todo.append(_Planned(path, role, names, ignored))
    todo.sort(key=lambda p: (p.role.order, p.path.name))
    return todo, skips


def _skip_reason(path: Path) -> str:
    name = path.name.lower()
    if "deepctr" in name or "alimama" in name:
        return (
            "not a raw Taobao file (a preprocessed DeepCTR export); import the raw "
            "raw_sample / ad_feature / user_profile / behavior_log files instead"
        )
    return (
        "not a recognised Taobao file (names must contain raw_sample, ad_feature, "
        "user_profile, behavior_log or UserBehavior, ending .csv/.txt[.gz])"
    )


def load(ctx: ImportContext, todo: list[_Planned]) -> list[FileReport]:
    """Load the planned files in order; returns one report entry per file."""
    reports = []
    for item in todo:
        report = FileReport(file=str(item.path), table=item.role.table)
        if item.ignored:
            report.notes.append(f"ignored column(s): {', '.join(item.ignored)}")
        stage_text(ctx, item.path, item.role.fmt, item.names)
        run(ctx.con, item.role.sql)
        side = {"items": ITEM_SIDE, "users": USER_SIDE}.get(item.role.table)
        load_typed(ctx, report, item.role.table, side)
        if item.role.table == "impressions":
            create_stubs(ctx, report)
        reports.append(report)
    return reports
