"""Template pieces of the overview: imbalance badges, share bars, percentages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join

from dashboard.app.overview import Share

register = template.Library()

# Why Ballast's uneven share is not flagged (frames.lean_away), on hover.
LEANS_AWAY_TITLE = (
    "The policy is load-aware: it sends fewer calls to the pods that clients bypassing"
    " Ballast keep busy, which evens out what the pods carry in all."
)


@register.filter
def percent(ratio: float | None) -> str:
    """0.0123 → "1.2%"; None → "—"."""
    return "—" if ratio is None else f"{100 * ratio:.1f}%"


@register.simple_tag
def imbalance_badge(score: Mapping[str, Any], label: str) -> str:
    """ "via Ballast: busiest 2.40× mean, CV 0.61", warning-colored when flagged; "leans away
    from L4 load" when a load-aware policy's skew evens out bypassing clients' load."""
    max_mean, cv = score.get("max_mean"), score.get("cv")
    if max_mean is None or cv is None:
        return format_html('<span class="badge">{}: no traffic</span>', label)
    if score.get("flagged"):
        return format_html(
            '<span class="badge warn" title="busiest pod: {}">{}: imbalanced, busiest {}× mean,'
            " CV {}</span>",
            score.get("busiest") or "",
            label,
            f"{max_mean:.2f}",
            f"{cv:.2f}",
        )
    if score.get("leans_away"):
        return format_html(
            '<span class="badge ok" title="{}">{}: leans away from L4 load, busiest {}× mean,'
            " CV {}</span>",
            LEANS_AWAY_TITLE,
            label,
            f"{max_mean:.2f}",
            f"{cv:.2f}",
        )
    return format_html(
        '<span class="badge ok">{}: balanced, max/mean {}, CV {}</span>',
        label,
        f"{max_mean:.2f}",
        f"{cv:.2f}",
    )


@register.simple_tag
def share_bar(shares: Sequence[Share], label: str, total: float | None) -> str:
    """A stacked bar of each pod's share of the requests, one color per pod."""
    segments = format_html_join(
        "",
        # A width class, not a style attribute: the Content-Security-Policy allows no inline
        # style (assets.py makes .w0 … .w100).
        '<span class="p{} w{}" title="{}: {} req/s ({}%)"></span>',
        ((s.color, _percent(s.percent), s.pod, f"{s.rps:.1f}", f"{s.percent:.0f}") for s in shares),
    )
    figure = "—" if total is None else f"{total:.1f} req/s"
    return format_html(
        '<div><div class="bar-label"><span>{}</span><span>{}</span></div>'
        '<div class="bar" role="img" aria-label="{}">{}</div></div>',
        label,
        figure,
        label,
        segments,
    )


def _percent(value: float) -> int:
    """A share as a whole percent within 0..100 (the width classes there are)."""
    return min(100, max(0, round(value)))
