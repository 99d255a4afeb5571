"""`make bench`'s record (bench/run.py) and the README table rendered from it (bench/readme.py).

The benchmarks are scripts, not a package: they are loaded from bench/ by path, with bench/ on the
import path as when they run.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def bench_module(name: str) -> ModuleType:
    """bench/<name>.py as module `bench_<name>` (bench/ on the path: the scripts import each other)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


figures, readme, run = (bench_module(n) for n in ("figures", "readme", "run"))


def sample_record(**changes: Any) -> dict[str, Any]:
    chat = figures.Figure(
        key="chat.sustained",
        what="chat, embedded profile: sustained throughput, 40 connections",
        value=6342.4,
        unit="msg/s",
        baseline=figures.Baseline("bare uvloop relay", 18090.0, "msg/s"),
        target=">= 0.3 x relay",
        met=True,
        detail="p99 send-to-synced 91 ms at that rate; missing 0, duplicates 0, reordered 0",
    )
    cluster = figures.Figure(
        key="cluster.sustained",
        what="production pipeline | every role its own process",
        value=521.0,
        unit="msg/s",
        baseline=figures.Baseline("one-process embedded profile, same load", 4283.0, "msg/s"),
        target=">= 5,000 msg/s, p99 < 100 ms",
        met=False,
    )
    record: dict[str, Any] = {
        "format": 1,
        "started": "2026-12-06T00:15:00Z",
        "finished": "2026-12-06T00:31:10Z",
        "machine": {"host": "vm", "cores": 2, "cpu": "AMD EPYC", "memory_gib": 23.5, "os": "Debian 12"},
        "load_average": {"before": [0.42, 0.5, 0.6], "after": [1.87, 1.5, 1.0]},
        "code": {"commit": "0123456789abcdef", "uncommitted_changes": 0},
        "benchmarks": [
            {"name": "chat", "status": "ok", "figures": [chat.to_json()]},
            {"name": "cluster", "status": "ok", "figures": [cluster.to_json()]},
            {"name": "idgen", "status": "failed (exit 1)", "figures": []},
        ],
    }
    record.update(changes)
    return record


def test_numbers_keep_the_digits_their_size_deserves() -> None:
    assert [figures.number(v, "u") for v in (18090.4, 42.42, 1.0234, 0.02612)] == [
        "18,090 u",
        "42.4 u",
        "1.02 u",
        "0.026 u",
    ]
    assert figures.number(float("nan"), "ms") == "n/a"


def test_a_figure_round_trips_and_has_a_ratio_only_against_the_same_unit() -> None:
    figure = figures.Figure("k", "w", 5.0, "KiB", figures.Baseline("relay", 4.0, "KiB"), "<= 8 KiB", True)
    data = json.loads(json.dumps(figure.to_json()))
    assert data["ratio"] == 1.25
    assert figures.from_json(data) == figure
    assert figures.Figure("k", "w", 5.0, "ms", figures.Baseline("b", 4.0, "msg/s")).ratio is None


def test_the_table_names_its_run_and_every_figure_with_its_baseline() -> None:
    table = readme.render(sample_record(), "bench/results/x.json")
    lines = table.splitlines()
    assert lines[0].startswith("<!-- bench record: bench/results/x.json ")
    assert "from 2026-12-06T00:15:00Z to 2026-12-06T00:31:10Z at commit `0123456789`" in lines[1]
    assert (
        "on vm (2 cores, AMD EPYC, 23.5 GiB, Debian 12); load average 0.42 before and 1.87 after" in lines[1]
    )
    chat_row = next(line for line in lines if line.startswith("| chat, embedded"))
    assert "| 6,342 msg/s | bare uvloop relay: 18,090 msg/s | 0.35 | >= 0.3 x relay: met |" in chat_row
    cluster_row = next(line for line in lines if line.startswith("| production pipeline"))
    assert "production pipeline \\| every role" in cluster_row  # a | in a cell is escaped
    assert ">= 5,000 msg/s, p99 < 100 ms: **not met**" in cluster_row
    assert "Not in this run's figures: `idgen` failed (exit 1)." in lines
    assert lines[-1] == readme.END


def test_update_then_check_and_a_hand_edit_is_caught(tmp_path: Path) -> None:
    results = tmp_path / "bench" / "results"
    results.mkdir(parents=True)
    record = results / "20261206T001500Z-0123456789.json"
    record.write_text(json.dumps(sample_record()))
    page = tmp_path / "README.md"
    page.write_text(f"# Title\n\n<!-- bench record: none (...) -->\nold\n{readme.END}\n\n## After\n")
    readme.update(record, page, root=tmp_path)
    text = page.read_text()
    assert text.startswith("# Title\n\n<!-- bench record: bench/results/20261206T001500Z-0123456789.json")
    assert text.endswith(f"{readme.END}\n\n## After\n") and "old" not in text
    assert readme.check(page, root=tmp_path) is None
    page.write_text(text.replace("6,342 msg/s", "7,000 msg/s"))
    assert "is not the rendering of bench/results/" in (readme.check(page, root=tmp_path) or "")
    with pytest.raises(readme.RecordError, match="not inside"):
        readme.update(record, page, root=tmp_path / "bench" / "elsewhere")
    (results / "broken.json").write_text("{")
    with pytest.raises(readme.RecordError, match="cannot read the record"):
        readme.update(results / "broken.json", page, root=tmp_path)


def test_the_readmes_benchmark_table_is_the_rendering_of_its_record() -> None:
    assert readme.check() is None


def test_a_record_holds_when_where_how_busy_which_code_and_what_ran(tmp_path: Path) -> None:
    script = tmp_path / "tiny_bench.py"
    script.write_text(
        '"""Benchmark: writes one figure."""\n'
        "import json, sys\n"
        "from pathlib import Path\n"
        "print('tiny: 3 things/s')\n"
        "Path(sys.argv[sys.argv.index('--json') + 1]).write_text(json.dumps({'figures': [\n"
        "    {'key': 'tiny', 'what': 'tiny', 'value': 3.0, 'unit': 'things/s'}], 'details': {'n': 1}}))\n"
    )
    assert run.describe(script) == "Benchmark: writes one figure."
    output = tmp_path / "tiny.json"
    outcome = run.run_one("tiny", [sys.executable, str(script), "--json", str(output)], output, 60.0)
    assert outcome.status == "ok" and outcome.stdout == "tiny: 3 things/s\n"
    record = run.build_record(1_780_000_000.0, 1_780_000_060.0, [0.5, 0.4, 0.3], [outcome], ["tiny"])
    assert record["started"] == "2026-05-28T20:26:40Z" and record["finished"] == "2026-05-28T20:27:40Z"
    assert record["machine"]["cores"] and record["machine"]["host"]
    assert record["load_average"]["before"] == [0.5, 0.4, 0.3] and len(record["load_average"]["after"]) == 3
    assert len(record["code"]["commit"]) == 40
    (bench,) = record["benchmarks"]
    assert bench["figures"][0]["value"] == 3.0 and bench["details"] == {"n": 1}
    assert bench["command"].endswith(f"tiny_bench.py --json {output}")
    path = run.record_path(record, tmp_path)
    assert path.name == f"20260528T202640Z-{record['code']['commit'][:10]}.json"
