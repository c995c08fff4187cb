"""Each measured figure is stated in one file of the documentation (issue #26).

The pages: README.md, docs/*.md and benchmarks/README.md. benchmarks/README.md holds each
measurement with its command, date, machine and full tables; the other pages say what it means
and link to it. A figure written in two files drifts apart the day one of them is re-measured,
so a figure found in more than one file fails the test, listing where (repeats within one file
are fine).

What counts as a figure, in prose and tables:

- a decimal with at least 3 significant digits (0.7922, .7922, +0.0219, 18.6, 1.69, 14.2),
  trailing zeros counted (0.100 has 3);
- an integer with at least 3 significant digits, trailing zeros not counted (851, 1,056,
  22,877, 952,008; not 200, 1,000 or 10,000: round numbers are settings or sizes);
- not 0 or 1 however written (1.00, 0.000: a ratio's reference row or an exact bound);
- with an optional unit or suffix: ×, %, ns, µs, ms, s, min, h, B, kB..GiB, k, M.

The same figure: equal values once normalised — thousands separators dropped (22,877 ==
22877), a leading zero added (.7922 == 0.7922), trailing decimal zeros dropped (0.1600 ==
0.16), a plus sign dropped (+0.0219 == 0.0219: a difference is the same figure with or without
its sign) but a minus sign kept (−0.0351 != 0.0351: the other direction is another figure) —
and equal units, or no unit on one side (a table cell takes its unit from the header: 18.6
there is 18.6 ns in prose; 13.6 % and 13.6 ms are not one figure).

Not figures: fenced code blocks and inline code spans (commands, settings, paths), link
targets and URLs, dates (2026-10-23), times (12:30), commit hashes (723907c), version strings
and addresses (2.13.0, 127.0.0.1, and a number after a package name or "version": MLflow 3.17,
Python 3.11), arXiv ids, section, equation and table numbers (section 2.3, eq. 13), issue
numbers (#23) and years.

A figure two files must both mention is solved by a link to the one that states it, not by an
exemption. The two exemptions: ALLOWED, values that are definitions (settings, the size of a
generated data set), not measurements; and DISTINCT, a value that two files state for
different quantities (a coincidence: at 3–4 digits, among hundreds of AUCs, some are equal).
An exemption no longer needed fails the test too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

RESULTS, DEMO, BENCH = "docs/results.md", "docs/demo-data.md", "benchmarks/README.md"
_DATA_SIZE = (
    "rows the demo generator writes for a preset (seed 7, reference window): a data set's size"
)

# value -> why it may appear in several files. Definitions only, never a measurement.
ALLOWED: dict[str, str] = {
    "128": "m·K = 8 × 16, the personalised codebook queries: the model's definition",
    "256": "MAX_FUSED_LEN, and 64 float32 = 256 B: a setting and a size",
    "512": "the training batch size (ModelConfig / TrainConfig default)",
    "4096": "SHUFFLE_MAX_PARTS and the evaluation batch size: settings",
    "16384": "kmeans_init_rows' default, and the ID chunk of that scale-out run: settings",
    "65536": "the semantic-ID job's chunk of catalog items: a setting",
    "219080": _DATA_SIZE,  # small, before issue #23: impressions
    "380524": _DATA_SIZE,  # small, before issue #23: behaviours
    "2200969": _DATA_SIZE,  # medium, before issue #23: impressions
    "3791601": _DATA_SIZE,  # medium, before issue #23: behaviours
    "21955063": _DATA_SIZE,  # large: impressions
    "38123979": _DATA_SIZE,  # large: behaviours
}

# (value, file, file) -> the two different quantities that share the value in those files.
DISTINCT: dict[tuple[str, str, str], str] = {
    (value, *sorted(files)): why
    for (value, *files), why in {
        ("0.01", DEMO, BENCH): "TT's sd over seeds vs MovieLens sds and a TARQ − TT",
        ("1.22", DEMO, BENCH): "a planted effect's CTR ratio vs serving ratios (rq_history)",
        ("2.17", DEMO, BENCH): "seconds of a demo step vs a swap run's p99 outside in ms",
        ("1.25", "docs/operations.md", BENCH): "a validation CTR bound vs a TA p99 in ms",
        ("0.0108", RESULTS, BENCH): "a 2026-12-04 demo date's TARQ − TT vs IntTower − TT",
        ("0.0154", DEMO, BENCH): "the old world's headroom vs sds over seeds",
        ("0.0167", RESULTS, BENCH): "a demo date's interval bound vs TA − TT's and Taobao's",
        ("0.0176", RESULTS, BENCH): "a 2026-12-04 demo date's TARQ − TT vs the 7-day warm mean",
        ("0.0219", RESULTS, BENCH): "the demo's 2026-10-22 TARQ − TT vs the 3-seed mean",
        ("0.0311", RESULTS, BENCH): "a demo interval bound vs a Taobao sd",
        ("0.0341", RESULTS, BENCH): "a demo interval bound vs a Taobao sd",
        ("0.149", RESULTS, BENCH): "TT's replay recall at 10 vs a level's sticky-ID churn",
        ("0.178", RESULTS, BENCH): "TARQ's replay recall at 10 vs an interval bound",
        ("0.488", RESULTS, BENCH): "IntTower's replay clicks at 10 vs a next-item loss",
        ("0.724", DEMO, BENCH): "TT's exposed-row AUC (seed 1) vs MovieLens AUCs",
        ("0.7306", DEMO, BENCH): "TT's exposed-row AUC (seed 0) vs other models' AUC, GAUC",
        ("0.734", DEMO, BENCH): "TT after two epochs vs warm TT of one previous-world date",
        ("0.7553", DEMO, BENCH): "TA's exposed-row AUC (seed 0) vs tarq_no_align's GAUC",
        ("0.7632", RESULTS, BENCH): "cold TT of 2026-10-21 in two runs (make demo, continuous.py)",
        ("0.7702", RESULTS, BENCH): "MVKE on a demo date vs a TARQ variant's seed",
        ("0.7728", DEMO, BENCH): "the user-level part's AUC vs TT on a soak day",
        ("0.7818", RESULTS, BENCH): "cold TA of 2026-10-21 in two runs (make demo, continuous.py)",
        ("0.785", RESULTS, BENCH): "TT on a demo date vs the paper's Table 1 TT",
        ("0.7848", RESULTS, BENCH): "MVKE on a demo date vs a TARQ variant's seed",
        ("0.7857", RESULTS, BENCH): "TT on a demo date vs a soak day and a TARQ variant",
        ("0.789", DEMO, BENCH): "the old world's true-logit AUC vs a soak day and the paper's MVKE",
        ("0.7913", RESULTS, BENCH): "IntTower on a demo date vs TT on a soak day",
        ("0.8071", RESULTS, BENCH): "the re-scored champion vs TARQ of another window (sticky IDs)",
        ("0.8076", RESULTS, BENCH): "TARQ on a demo date vs TARQ on a soak day",
        ("0.8098", RESULTS, BENCH): "TA on a demo date vs TARQ on a soak day",
        ("1.07", DEMO, BENCH): "a control's CTR ratio vs a soak day's churn",
        ("1.08", DEMO, BENCH): "a history part's sd vs MovieLens rows per group",
        ("1.16", DEMO, BENCH): "the old world's user-level sd vs an HTTP latency",
        ("1.27", DEMO, BENCH): "the generator's slow-down on medium vs an HTTP p99",
        ("1.56", DEMO, BENCH): "a CTR ratio vs the shuffled 2-worker speed-up",
        ("102", RESULTS, BENCH): "a share of TA's lift (%) vs soak counts",
        ("12.2", DEMO, BENCH): "generation seconds vs HTTP and batch-scoring figures",
        ("15.4", DEMO, BENCH): "generation seconds vs an HTTP figure",
        ("178", RESULTS, BENCH): "the first demo date's rows (k) vs MovieLens train seconds",
        ("2.3", DEMO, BENCH): "generation seconds vs an HTTP figure",
        ("23.9", DEMO, BENCH): "the fast test's CTR vs an ID churn",
    }.items()
}

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_BLANKED = [
    re.compile(r"<!--.*?-->", re.S),  # HTML comments
    re.compile(r"(`+).+?\1", re.S),  # inline code spans
    re.compile(r"\]\([^)]*\)"),  # link targets: [text](target)
    re.compile(r"^\s*\[[^\]]+\]:\s*\S+.*$", re.M),  # reference-style link definitions
    re.compile(r"<?https?://[^\s)>]+>?"),  # URLs
    re.compile(r"\b\d{4}-\d{2}(?:-\d{2})?\b"),  # dates (2026-10-23, 2026-10)
    re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\b"),  # times
    re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"),  # commit hashes
    re.compile(r"\d+(?:\.\d+){2,}"),  # versions and addresses (2.13.0, 127.0.0.1)
    # a number named by what precedes it: a version, an arXiv id, a section, an issue
    re.compile(
        r"(?i)\b(?:python|mlflow|torch|pytorch|numpy|pandas|duckdb|prefect|faiss|numba|dask|"
        r"ruff|pytest|playwright|chromium|cuda|version|release|v|arxiv|section|sections|"
        r"sec\.|eqs?\.|table|figure|fig\.)\s*\d+(?:\.\d+)*\b(?![\w.]*[A-Za-z%×/])"
    ),
    re.compile(r"[§#]\s*\d[\d.]*"),
]
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?![.,]?\d)"
    r"(?P<unit>×| ?%| ?(?:ns|µs|us|ms|s|min|h|[KMG]i?B|B|k|M)\b)?",
)


def _blank(match: re.Match[str]) -> str:
    """The match replaced by spaces, its newlines kept (so line numbers stay right)."""
    return re.sub(r"[^\n]", " ", match.group(0))


def prose(text: str) -> str:
    """``text`` with everything that is not a figure's context blanked out, lines kept."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    out = "\n".join(lines)
    for pattern in _BLANKED:
        out = pattern.sub(_blank, out)
    return out


def significant_digits(num: str) -> int:
    """Significant digits of a number as written (``num`` without its sign)."""
    digits = num.replace(",", "")
    if "." in digits:
        return len(digits.replace(".", "").lstrip("0"))
    return len(digits.strip("0"))


class Figure(NamedTuple):
    value: str  # normalised: 22877, 0.7922, −0.035
    unit: str  # normalised: "", "%", "×", "ns", "k", ...
    line: int
    written: str  # as the page writes it: +0.0219, 18.6 ns, 1.69×


def normalise(sign: str, num: str, unit: str) -> tuple[str, str]:
    """(value, unit): no separators or trailing decimal zeros, a leading zero, a minus sign kept
    and a plus dropped; ``%`` without its space, ``us`` as ``µs``."""
    num = num.replace(",", "")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    if num.startswith("."):
        num = "0" + num
    return ("−" if sign in ("−", "-") else "") + num, unit.strip().replace("us", "µs")


def figures(text: str) -> list[Figure]:
    """Every figure in a Markdown ``text``, in order."""
    out = []
    for lineno, line in enumerate(prose(text).split("\n"), start=1):
        for match in _NUMBER.finditer(line):
            num, unit = match.group("num"), match.group("unit") or ""
            if significant_digits(num) < 3:
                continue
            if "." not in num and "," not in num and 1900 <= int(num) <= 2099:
                continue  # a year
            before = line[: match.start()]
            sign = before[-1] if before and before[-1] in "+−-" else ""
            if sign == "-" and before[:-1] and (before[-2].isalnum() or before[-2] in "-–"):
                sign = ""  # a hyphen inside a word or range (2e-4, 3-seed), not a minus
            value, unit_key = normalise(sign, num, unit)
            if value in ("0", "1"):
                continue  # 1.00, 0.000: a ratio's reference or an exact bound, not a reading
            out.append(Figure(value, unit_key, lineno, sign + num + unit))
    return out


def _same(a: Figure, b: Figure) -> bool:
    """Two readings of one figure: equal values, and equal units unless one has none (a
    table's cell takes its unit from the header: 18.6 there is 18.6 ns in prose)."""
    return a.value == b.value and (a.unit == b.unit or not a.unit or not b.unit)


def pages() -> list[Path]:
    """The documentation the rule covers."""
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "benchmarks/README.md",
    ]


def repeats(paths: list[Path]) -> dict[tuple[str, str, str], dict[str, list[str]]]:
    """(value, file, file) -> file -> ``line: as written``, for each value two files state."""
    by_value: dict[str, list[tuple[str, Figure]]] = defaultdict(list)
    for path in paths:
        rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name
        for fig in figures(path.read_text(encoding="utf-8")):
            by_value[fig.value].append((rel, fig))
    out: dict[tuple[str, str, str], dict[str, list[str]]] = {}
    for value, seen in sorted(by_value.items()):
        for i, (rel_a, a) in enumerate(seen):
            for rel_b, b in seen[i + 1 :]:
                if rel_a == rel_b or not _same(a, b):
                    continue
                key = (value, *sorted((rel_a, rel_b)))
                hits = out.setdefault(key, {rel_a: [], rel_b: []})
                for rel, fig in ((rel_a, a), (rel_b, b)):
                    if f"{fig.line}: {fig.written}" not in hits[rel]:
                        hits[rel].append(f"{fig.line}: {fig.written}")
    return out


def test_no_figure_is_stated_in_two_files() -> None:
    found = {
        key: hits
        for key, hits in repeats(pages()).items()
        if key[0] not in ALLOWED and key not in DISTINCT
    }
    report = "\n".join(
        f"{key[0]}: " + "; ".join(f"{f} line {', '.join(lines)}" for f, lines in hits.items())
        for key, hits in found.items()
    )
    assert not found, f"{len(found)} figures stated in two files (link instead):\n{report}"


def test_every_exemption_is_still_needed() -> None:
    """An ALLOWED value or DISTINCT pair that no longer occurs in two files is stale."""
    found = repeats(pages())
    assert [value for value in ALLOWED if not any(key[0] == value for key in found)] == []
    assert [key for key in DISTINCT if key not in found] == []


def test_what_counts_as_a_figure() -> None:
    text = "\n".join(
        [
            "AUC 0.7922 and .7922, +0.0219 [+0.0134, −0.0311], 18.6 ns, 1.69× faster, 851 req/s,",
            "22,877 rows, 13.6 %, 27.9k rows, ~127,000 hours, 0.100 s, 0.1600 | -0.0351 |",
            "not: 0.05, 1.5, 200, 1,000, 10,000 rows, 64, 2e-4, 3-seed, in 2026, #123, 1.00, 0.000",
            "not: on 2026-10-23 at 12:30, commit 723907c, torch 2.13.0, MLflow 3.17's, Python 3.11",
            "not: arXiv 2509.16931, section 2.3, eq. 13.5, 127.0.0.1, [link](docs/a.md#x-1.25)",
            "not: `make demo --pool 1,234` <!-- 1.234 --> https://example.org/a/1.234",
            "```",
            "uv pip install numpy==2.13.0  # 0.7922",
            "```",
            "−0.0351 and 0.0351, FAISS 1.25M/s",
        ]
    )
    assert [(f.value, f.unit, f.line, f.written) for f in figures(text)] == [
        ("0.7922", "", 1, "0.7922"),
        ("0.7922", "", 1, ".7922"),
        ("0.0219", "", 1, "+0.0219"),
        ("0.0134", "", 1, "+0.0134"),
        ("−0.0311", "", 1, "−0.0311"),
        ("18.6", "ns", 1, "18.6 ns"),
        ("1.69", "×", 1, "1.69×"),
        ("851", "", 1, "851"),
        ("22877", "", 2, "22,877"),
        ("13.6", "%", 2, "13.6 %"),
        ("27.9", "k", 2, "27.9k"),
        ("127000", "", 2, "127,000"),
        ("0.1", "s", 2, "0.100 s"),
        ("0.16", "", 2, "0.1600"),
        ("−0.0351", "", 2, "-0.0351"),
        ("−0.0351", "", 10, "−0.0351"),
        ("0.0351", "", 10, "0.0351"),
        ("1.25", "M", 10, "1.25M"),
    ]


def test_a_figure_in_two_files_is_reported_per_pair_of_files(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("TARQ .7922, and again 0.7922; alone 0.4567, 13.6 ms\n")
    (tmp_path / "b.md").write_text("x\n| 0.7922 | 18.6 |\n1,234 rows, 13.6 %\n")
    (tmp_path / "c.md").write_text("1234 rows, +0.4567 is not −0.4567; 18.6 ns, 0.79220\n")
    found = repeats([tmp_path / name for name in ("a.md", "b.md", "c.md")])
    assert found == {
        ("0.4567", "a.md", "c.md"): {"a.md": ["1: 0.4567"], "c.md": ["1: +0.4567"]},
        ("0.7922", "a.md", "b.md"): {"a.md": ["1: .7922", "1: 0.7922"], "b.md": ["2: 0.7922"]},
        ("0.7922", "a.md", "c.md"): {"a.md": ["1: .7922", "1: 0.7922"], "c.md": ["1: 0.79220"]},
        ("0.7922", "b.md", "c.md"): {"b.md": ["2: 0.7922"], "c.md": ["1: 0.79220"]},
        ("1234", "b.md", "c.md"): {"b.md": ["3: 1,234"], "c.md": ["1: 1234"]},
        ("18.6", "b.md", "c.md"): {"b.md": ["2: 18.6"], "c.md": ["1: 18.6 ns"]},
    }


def anchors(path: Path) -> set[str]:
    """The ``#fragment`` of each heading of a Markdown file, as GitHub makes them."""
    out: set[str] = set()
    seen: dict[str, int] = defaultdict(int)
    fenced = False
    for line in path.read_text(encoding="utf-8").split("\n"):
        if _FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            out.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
            seen[slug] += 1
    return out


def test_anchors_follow_github() -> None:
    assert anchors(ROOT / "benchmarks/README.md") >= {
        "model-comparison-train_modelspy",
        "against-the-targets-honestly",
        "against-the-targets-honestly-1",
        "closed-loop-ab-tarq-ab",
    }


def test_relative_links_between_the_pages_resolve() -> None:
    broken = []
    for path in pages():
        text = re.sub(r"(`+).+?\1", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, fragment = target.partition("#")
            linked = (path.parent / file) if file else path
            if not linked.exists() or (
                fragment and linked.suffix == ".md" and fragment not in anchors(linked)
            ):
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert broken == []
