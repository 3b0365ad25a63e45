"""Credits per day per worker as a stacked bar chart, drawn as SVG on the server (no chart
library, no script): each day a bar, each worker a colour, with the numbers in a table too."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from kennel.models import DailyUsage

WIDTH, HEIGHT = 720, 220
LEFT, BOTTOM, TOP = 40, 24, 10
PALETTE = ("#2f6f5e", "#d08c2e", "#5b7fc7", "#b5527a", "#7a9a3a", "#8a63c4", "#3a9aa6", "#a86b4c")
OTHERS = "Other members' private workers"
REST = "Other workers"
_REST_KEY = "\0rest"


@dataclass(frozen=True, slots=True)
class Series:
    key: str
    title: str
    colour: str
    credits: int


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    days: list[date]
    series: list[Series]
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    """Gridlines: their height and credit label."""
    labels: list[tuple[float, str]]
    """Day labels under the bars: their x and text."""
    rows: list[tuple[date, str, int]]
    total: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: int = HEIGHT - BOTTOM


def credits_chart(usage: list[DailyUsage], first: date, last: date) -> Chart:
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    titles: dict[str, str] = {}
    totals: dict[str, int] = defaultdict(int)
    for line in usage:
        key = line.worker_id or ""
        titles[key] = line.worker_title or OTHERS
        totals[key] += line.credits
    # One colour per worker: the biggest spenders by name, the rest added up as one.
    ranked = sorted((key for key in totals if totals[key]), key=lambda k: (-totals[k], titles[k]))
    named = set(ranked if len(ranked) <= len(PALETTE) else ranked[: len(PALETTE) - 1])
    totals = defaultdict(int)
    for line in usage:
        key = line.worker_id or ""
        key = key if key in named else _REST_KEY
        titles.setdefault(_REST_KEY, REST)
        by_day[line.day][key] = by_day[line.day].get(key, 0) + line.credits
        totals[key] += line.credits
    order = [key for key in ranked if key in named]
    if totals.get(_REST_KEY):
        order.append(_REST_KEY)
    series = [
        Series(key, titles[key], PALETTE[n % len(PALETTE)], totals[key])
        for n, key in enumerate(order)
    ]
    peak = max((sum(day.values()) for day in by_day.values()), default=0)
    scale = _nice_ceiling(peak)
    plot_height = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(1, len(days))
    bars: list[Bar] = []
    for n, day in enumerate(days):
        base = float(HEIGHT - BOTTOM)
        for each in series:
            credits = by_day.get(day, {}).get(each.key, 0)
            if not credits:
                continue
            height = plot_height * credits / scale
            base -= height
            label = f"{day.isoformat()} · {each.title}: {credits} credits"
            bars.append(
                Bar(LEFT + n * slot + slot * 0.15, base, slot * 0.7, height, each.colour, label)
            )
    ticks = [
        (HEIGHT - BOTTOM - plot_height * share, f"{round(scale * share):,}")
        for share in (0.0, 0.5, 1.0)
    ]
    every = max(1, len(days) // 6)
    labels = [
        (LEFT + n * slot + slot / 2, day.strftime("%b %d"))
        for n, day in enumerate(days)
        if n % every == 0
    ]
    rows = [
        (day, next(s.title for s in series if s.key == key), credits)
        for day in days
        for key, credits in sorted(by_day.get(day, {}).items())
        if credits
    ]
    return Chart(days, series, bars, ticks, labels, rows, sum(totals.values()))


def _nice_ceiling(value: int) -> int:
    """A round top for the axis: 1, 2 or 5 times a power of ten, at least the value."""
    if value <= 0:
        return 10
    power = 1
    while True:
        for step in (1, 2, 5):
            if step * power >= value:
                return step * power
        power *= 10
