"""The figures a benchmark reports, each with the baseline it is measured against in the same run.

Every benchmark's `--json FILE` holds `{"figures": [...], "details": {...}}`: `figures` in the shape
below (what `bench/run.py` records and `bench/readme.py` renders into the README), `details` whatever
else the benchmark measured (stages, per-process CPU, settings).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Baseline:
    what: str
    value: float
    unit: str


@dataclass(frozen=True)
class Figure:
    #: Stable id, e.g. "chat.throughput"; the README rows are keyed by it.
    key: str
    what: str
    value: float
    unit: str
    baseline: Baseline | None = None
    #: e.g. ">= 0.3 x relay"; empty when the issue set none.
    target: str = ""
    met: bool | None = None
    #: What else a reader needs to judge the figure (latency at that rate, losses, conditions).
    detail: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.value or self.baseline.unit != self.unit:
            return None
        return self.value / self.baseline.value

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratio"] = self.ratio
        return out


def write(path: Path, figures: list[Figure], details: Any) -> None:
    """The benchmark's `--json` file."""
    path.write_text(json.dumps({"figures": [f.to_json() for f in figures], "details": details}, indent=2))


def from_json(data: dict[str, Any]) -> Figure:
    baseline = data.get("baseline")
    return Figure(
        key=str(data["key"]),
        what=str(data["what"]),
        value=float(data["value"]),
        unit=str(data["unit"]),
        baseline=Baseline(str(baseline["what"]), float(baseline["value"]), str(baseline["unit"]))
        if baseline
        else None,
        target=str(data.get("target", "")),
        met=data.get("met"),
        detail=str(data.get("detail", "")),
    )


def number(value: float, unit: str) -> str:
    """`6,342 msg/s`, `0.026 ms`, `1.02 KiB`: digits enough for the magnitude, no more."""
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100 or value == 0:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".rstrip()
