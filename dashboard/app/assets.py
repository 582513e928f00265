"""Scripts and stylesheets the pages load, served by the dashboard itself: no CDN, no
collectstatic.

The ASGI server serves only the application, so they come through a view like the
pages: scripts to logged-in users only, stylesheets to anyone (the login page needs
one; they hold nothing but style). Each URL carries the file's content hash, which lets
the browser keep it for a year and still pick up a new one after an upgrade.

No page has an inline script or style, so the Content-Security-Policy can be strict
(``script-src 'self'; style-src 'self'``). What was inline is here: the overview's
colors and bar widths, and the stylesheet plotly.js would insert itself.

plotly.js is the official basic bundle (``plotly.js-basic-dist-min``: scatter and bar
traces, all these charts use; 1.2 MB, 0.4 MB gzipped, against 4.8 MB for the full
bundle), pinned by package-lock.json and copied to ``static/vendor/`` by ``make install``
(npm ci); it is not in git. The system check ``ballast.E002`` says when it is missing.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.http import HttpRequest
from django.urls import reverse

from dashboard.app.overview import PALETTE

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ballast"
# Where `make install` copies plotly.js's bundle from node_modules/ (see the Makefile).
PLOTLY_JS = Path(__file__).resolve().parent / "static" / "vendor" / "plotly.min.js"
PLOTLY_MISSING = (
    f"plotly.js is missing ({PLOTLY_JS}): run `make install`, which copies it from npm "
    "(package.json pins plotly.js-basic-dist-min)"
)
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    digest: str  # the first 16 hex digits of the body's SHA-256

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        return cls(name, body, hashlib.sha256(body).hexdigest()[:16])

    @property
    def content_type(self) -> str:
        return CSS if self.name.endswith(".css") else JAVASCRIPT

    @property
    def public(self) -> bool:
        """Served without a login: stylesheets (the login page has one)."""
        return self.name.endswith(".css")

    @property
    def url(self) -> str:
        return reverse("asset", args=[self.digest, self.name])

    def gzipped(self) -> bytes:
        """The body compressed with gzip, made once per content (plotly.min.js: 1.2 MB
        becomes about 0.4 MB, which is most of what the service page loads)."""
        held = _GZIPPED.get(self.name)
        if held is None or held[0] != self.digest:
            # mtime=0: the same bytes every time, so a cache in front may keep one copy.
            held = (self.digest, gzip.compress(self.body, compresslevel=9, mtime=0))
            _GZIPPED[self.name] = held
        return held[1]


# name → (digest, gzipped body): one entry per asset name, replaced when its content
# changes, so it never holds more than the assets there are.
_GZIPPED: dict[str, tuple[str, bytes]] = {}
_GZIP_REFUSED = re.compile(r"^\s*q\s*=\s*0(\.0*)?\s*$")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes gzip ("gzip, deflate, br" yes; "gzip;q=0",
    "identity" or none no)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            return not _GZIP_REFUSED.match(params)
    return False


class PlotlyMissing(RuntimeError):
    """plotly.js's bundle is not where `make install` puts it."""


@functools.cache
def _plotly_bundle() -> str:
    # Read once: it changes only with package-lock.json and a new `make install`.
    try:
        return PLOTLY_JS.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlotlyMissing(PLOTLY_MISSING) from None


def plotly_installed() -> bool:
    return PLOTLY_JS.is_file()


def _plotly() -> Asset:
    return _asset_of_bundle("plotly.min.js", lambda bundle: bundle)


def _asset_of_bundle(name: str, make: Callable[[str], str]) -> Asset:
    held = _BUNDLE_ASSETS.get(name)
    if held is None:
        held = _BUNDLE_ASSETS[name] = Asset.of(name, make(_plotly_bundle()).encode())
    return held


# Assets made from plotly.js's bundle, by name: hashed once, not on every page.
_BUNDLE_ASSETS: dict[str, Asset] = {}


def _ours(name: str) -> Callable[[], Asset]:
    # Read on every use: they are small, and an edit shows without a restart.
    return lambda: Asset.of(name, (STATIC_DIR / name).read_bytes())


# plotly.js's own rules, which it would otherwise insert as an inline <style> that the
# Content-Security-Policy refuses: one object literal in the bundle, every key a selector
# with X for ".js-plotly-plot .plotly" and Y for ".plotly-notifier".
_PLOTLY_RULES = re.compile(r'\{"X,X div":.*?\};for\(', re.DOTALL)
_JS_PAIR = re.compile(r'"((?:[^"\\]|\\.)*)":(?:"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\')')


def plotly_rules(bundle: str) -> list[str]:
    """The CSS rules plotly.js inserts at load, in the order they apply; empty when this
    bundle does not hold them as expected (the charts work, with a plainer mode bar)."""
    found = _PLOTLY_RULES.search(bundle)
    if found is None:
        return []
    rules = []
    for key, double, single in _JS_PAIR.findall(found.group()):
        selector = key.replace("X", ".js-plotly-plot .plotly").replace("Y", ".plotly-notifier")
        body = (double or single).replace('\\"', '"').replace("\\'", "'")
        rules.append(f"{selector.lstrip(',')}{{{body}}}")
    # plotly.js inserts each rule at the top of its sheet: the last one comes first.
    return rules[::-1]


# Styles plotly.js inserts at load unless an element of the page has this id (the map
# traces' stylesheet, which these charts never use).
_STYLE_GUARD = re.compile(
    r'if\(!document\.getElementById\("([0-9a-f]{16,64})"\)\)\{'
    r'var \w+=document\.createElement\("style"\)'
)


@functools.cache
def plotly_guard_ids() -> tuple[str, ...]:
    """Ids that, present in the page, keep plotly.js from inserting inline styles."""
    return tuple(_STYLE_GUARD.findall(_plotly_bundle()))


def _plotly_css() -> Asset:
    return _asset_of_bundle("plotly.css", lambda bundle: "\n".join(plotly_rules(bundle)))


def _overview_css() -> Asset:
    colors = "".join(f".p{i} {{ background: {c}; }}\n" for i, c in enumerate(PALETTE))
    widths = "".join(f".w{n} {{ width: {n}%; }}\n" for n in range(101))
    return Asset.of(
        "overview.css", (STATIC_DIR / "overview.css").read_bytes() + (colors + widths).encode()
    )


ASSETS: dict[str, Callable[[], Asset]] = {
    "plotly.min.js": _plotly,
    "plotly.css": _plotly_css,
    "service.js": _ours("service.js"),
    "charts.js": _ours("charts.js"),
    "controls.js": _ours("controls.js"),
    "explain.js": _ours("explain.js"),
    "oom.js": _ours("oom.js"),
    "overview.js": _ours("overview.js"),
    "automation.js": _ours("automation.js"),
    "ballast.css": _ours("ballast.css"),
    "overview.css": _overview_css,
    "audit.css": _ours("audit.css"),
    "service.css": _ours("service.css"),
    "explain.css": _ours("explain.css"),
    "automation.css": _ours("automation.css"),
}
STYLESHEETS = [name for name in ASSETS if name.endswith(".css")]


def asset(name: str) -> Asset | None:
    """The script or stylesheet called `name`; None when there is no such file."""
    load = ASSETS.get(name)
    return load() if load else None


def stylesheets(request: HttpRequest) -> dict[str, dict[str, str]]:
    """Context processor: ``ballast_css.<name>`` is the URL of stylesheet ``<name>.css``
    (``ballast_css.ballast`` in base.html, a page's own in its head block)."""
    return {"ballast_css": {name.removesuffix(".css"): _url(name) for name in STYLESHEETS}}


def _url(name: str) -> str:
    try:
        found = asset(name)
    except PlotlyMissing:
        return ""  # plotly.css: only the service page links it, and it says what is missing
    assert found is not None, name
    return found.url
