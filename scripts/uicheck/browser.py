"""The browser (headless system Chromium, loopback only), :class:`Checker` (one page: open it,
assert what a person must see, take its screenshot) and the helpers that act on a page as a
person does (close a tip, pick columns and options, scroll, read a row)."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from uicheck import Missing

VIEWPORT = {"width": 1400, "height": 900}


@contextlib.contextmanager
def browser(chromium: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise Missing(
            "Playwright is not installed: `make ui-check` installs the `ui` extra "
            "(pip install -e '.[ui]')"
        ) from exc
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"],
        )
        try:
            ctx = b.new_context(viewport=VIEWPORT, device_scale_factor=1, locale="en-US")
            yield ctx
        finally:
            b.close()


def loopback_only(ctx: Any, blocked: list[str]) -> None:
    """Abort every request that would leave the machine (fonts, telemetry, banners)."""

    def route(r: Any) -> None:
        host = urlparse(r.request.url).hostname or ""
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            r.continue_()
        else:
            blocked.append(host)
            r.abort()

    ctx.route("**/*", route)


@dataclass
class PageResult:
    name: str
    url: str
    screenshot: str | None = None
    seen: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class Checker:
    """One browser page; each check opens a URL, asserts, and takes its screenshot: into
    ``shots``, and for the pages in ``doc_pages`` that passed also into ``out``."""

    def __init__(
        self,
        page: Any,
        out: Path,
        shots: Path,
        doc_pages: Sequence[str],
        timeout_ms: int,
        blocked: list[str],
    ) -> None:
        self.page, self.out, self.shots, self.doc_pages = page, out, shots, doc_pages
        self.timeout_ms = timeout_ms
        self.blocked = blocked
        self.results: list[PageResult] = []
        self.seen_assistant: bool | None = None  # MLflow's assistant panel, once looked for

    def visit(self, name: str, url: str, check: Callable[[PageResult], None]) -> PageResult:
        from playwright.sync_api import Error as PlaywrightError

        res = PageResult(name=name, url=url)
        self.results.append(res)
        print(f"  {name}: {url}", flush=True)
        first_blocked = len(self.blocked)
        try:
            self.page.goto(url, wait_until="domcontentloaded", timeout=self.timeout_ms)
            check(res)
        except (PlaywrightError, AssertionError) as exc:
            lines = str(exc).splitlines() or [""]
            waiting = next((ln.strip() for ln in lines if ln.strip().startswith("- waiting")), "")
            res.failures.append(f"{type(exc).__name__}: {lines[0][:400]} {waiting[:300]}".strip())
        with contextlib.suppress(PlaywrightError):
            self.page.wait_for_timeout(800)  # let charts finish drawing (plotly animates)
        res.blocked = sorted(set(self.blocked[first_blocked:]))
        self.shots.mkdir(parents=True, exist_ok=True)
        shot = self.shots / f"{name}.png"
        try:
            self.page.screenshot(path=str(shot), full_page=False)
            res.screenshot = str(shot)
        except PlaywrightError as exc:
            res.failures.append(f"screenshot: {exc}")
        if res.ok and name in self.doc_pages:
            self.out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, self.out / shot.name)
            res.screenshot = str(self.out / shot.name)
        for f in res.failures:
            print(f"    FAIL {f}", flush=True)
        for n in res.notes:
            print(f"    NOTE {n}", flush=True)
        if res.blocked:
            print(f"    refused requests to {', '.join(res.blocked)} (not loopback)", flush=True)
        print(f"    {'ok' if res.ok else 'failed'}: {res.screenshot}", flush=True)
        return res

    # -- helpers

    def text(self, value: str, within: Any | None = None, timeout_ms: int | None = None) -> Any:
        """The first visible element with exactly ``value`` as its text (waits for it)."""
        loc = (within or self.page).get_by_text(value, exact=True).filter(visible=True).first
        loc.wait_for(state="visible", timeout=timeout_ms or self.timeout_ms)
        return loc

    def has_text(self, value: str, within: Any | None = None, timeout_ms: int = 3000) -> bool:
        try:
            self.text(value, within, timeout_ms)
            return True
        except Exception:
            return False


def dismiss(ck: Checker, label: str) -> None:
    """Click away a tip that covers the page, when it is there."""
    if ck.has_text(label, timeout_ms=1500):
        ck.page.get_by_text(label, exact=True).first.click(timeout=ck.timeout_ms)


def close_assistant(ck: Checker) -> None:
    """Close the "MLflow Assistant" side panel (it opens itself on the first visit; closed,
    it stays closed in this browser)."""
    # The panel's chat box (its title also labels the button that reopens it).
    panel = ck.page.get_by_placeholder("Ask a question").filter(visible=True).first
    if ck.seen_assistant is None:
        try:
            panel.wait_for(state="visible", timeout=5000)
            ck.seen_assistant = True
        except Exception:
            ck.seen_assistant = False
    if panel.is_visible():
        close = ck.page.get_by_role("button", name="Close", exact=True).filter(visible=True)
        close.first.click(timeout=ck.timeout_ms)
        panel.wait_for(state="hidden", timeout=ck.timeout_ms)


def toggle_columns(ck: Checker, labels: Sequence[str], show: bool = True) -> None:
    """Show (or hide) the runs-table columns ``labels`` with its Columns menu: metric keys
    to show, or attribute columns (``Source``) to hide."""
    page = ck.page
    for label in labels:
        page.get_by_role("button", name="Columns").first.click(timeout=ck.timeout_ms)
        page.get_by_placeholder("Search columns").fill(label, timeout=ck.timeout_ms)
        node = page.locator("[class*=tree-treenode]").filter(has_text=re.compile(f"^{label}$"))
        node.locator("[class*=tree-checkbox]").first.click(timeout=ck.timeout_ms)
        page.keyboard.press("Escape")
        col = f"metrics.`{label}`" if show else f"attributes.`{label}`"
        header = page.locator(f'.ag-header-cell[col-id="{col}"]').first
        header.wait_for(state="visible" if show else "detached", timeout=ck.timeout_ms)


def pick_options(ck: Checker, placeholder: str, options: Sequence[str]) -> None:
    """Choose ``options`` in the multi-select showing ``placeholder`` (type, click)."""
    page = ck.page
    page.locator("[class*=-select-selector]", has_text=placeholder).first.click(
        timeout=ck.timeout_ms
    )
    for option in options:
        page.keyboard.type(option)
        item = page.locator(f"[class*=select-item-option][title='{option}']").filter(visible=True)
        item.first.click(timeout=ck.timeout_ms)
    page.keyboard.press("Escape")


def scroll_to_metric_row(ck: Checker, key: str) -> None:
    """Scroll the compare view's metrics table (with the mouse wheel, as a person does: it
    scrolls the values and the names together) until the row ``key`` is in sight."""
    page = ck.page
    page.get_by_text("Metrics", exact=True).last.scroll_into_view_if_needed()
    section = page.locator("[class*=collapse-item]").filter(
        has=page.get_by_text("Metrics", exact=True)
    )
    grid = section.last.locator(".ReactVirtualized__Grid").last
    link = page.locator('a[title="Plot chart"]').filter(has_text=re.compile(f"^{key}$")).first
    for _ in range(300):
        box = grid.bounding_box()
        assert box, "the metrics table is not shown"
        seen = link.bounding_box() if link.count() else None
        if (
            seen
            and box["y"] <= seen["y"]
            and seen["y"] + seen["height"] <= box["y"] + box["height"]
        ):
            # The names column follows the values one wheel event late (MLflow 3.17 in
            # headless Chromium, no smooth scrolling): two 1-px steps line them up again.
            page.mouse.wheel(0, 1)
            page.wait_for_timeout(100)
            page.mouse.wheel(0, -1)
            page.wait_for_timeout(100)
            return
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 45)
        page.wait_for_timeout(60)
    raise AssertionError(f"no metric row {key!r} in the compare view")


def row_text(ck: Checker, name: str) -> str:
    """The cells of the runs-table row of run ``name`` (its pinned and scrolled parts),
    tab-separated."""
    row = ck.page.locator(".ag-row", has=ck.page.get_by_text(name, exact=True)).first
    index = row.get_attribute("row-index", timeout=ck.timeout_ms)
    parts = ck.page.locator(f".ag-row[row-index='{index}']").all()
    cells = [c for p in parts for c in p.locator("[role=gridcell]").all_inner_texts()]
    return "\t".join(" ".join(c.split()) for c in cells)
