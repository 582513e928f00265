"""Scripts the pages load, served by the dashboard itself: no CDN, no collectstatic.

The ASGI server serves only the application, so the scripts come through a view like
the pages (and, like them, to logged-in users only). Each URL carries the script's
content hash, which lets the browser keep it for a year and still pick up a new one
after an upgrade.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.urls import reverse

STATIC_DIR = Path(__file__).resolve().parent / "static" / "ballast"
JAVASCRIPT = "text/javascript; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    name: str
    body: bytes
    digest: str  # the first 16 hex digits of the body's SHA-256

    @classmethod
    def of(cls, name: str, body: bytes) -> Asset:
        return cls(name, body, hashlib.sha256(body).hexdigest()[:16])

    @property
    def url(self) -> str:
        return reverse("asset", args=[self.digest, self.name])


@functools.cache
def _plotly() -> Asset:
    # Read once: the bundle is ~5 MB and changes only with the installed package.
    from plotly.offline import get_plotlyjs

    return Asset.of("plotly.min.js", get_plotlyjs().encode())


def _ours(name: str) -> Callable[[], Asset]:
    # Read on every use: they are small, and an edit shows without a restart.
    return lambda: Asset.of(name, (STATIC_DIR / name).read_bytes())


ASSETS: dict[str, Callable[[], Asset]] = {
    "plotly.min.js": _plotly,
    "service.js": _ours("service.js"),
    "controls.js": _ours("controls.js"),
    "overview.js": _ours("overview.js"),
}


def asset(name: str) -> Asset | None:
    """The script called `name`; None when there is no such script."""
    load = ASSETS.get(name)
    return load() if load else None
