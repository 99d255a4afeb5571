"""Render the README's benchmark table from one record of `make bench` (bench/results/*.json).

The table sits between two marker lines in README.md; the first names the record. Rendering replaces
what is between them, so every figure in that table is one of that run, with the run's date, machine
and load. `--check` says whether the README's table is exactly the rendering of the record it names
(the unit tests run it, so a figure edited by hand or a record changed afterwards is caught).

    .venv/bin/python bench/readme.py bench/results/20261206T001500Z-0123456789.json
    .venv/bin/python bench/readme.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from figures import Figure, from_json, number

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BEGIN = re.compile(r"^<!-- bench record: (\S+) .*-->$", re.MULTILINE)
END = "<!-- end of bench record -->"


class RecordError(Exception):
    """The record or the README cannot be used (missing, malformed, markers absent)."""


def load(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read the record {path}: {exc}") from exc
    if not isinstance(record, dict) or "benchmarks" not in record or "machine" not in record:
        raise RecordError(f"{path} is not a record of bench/run.py")
    return record


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(figure: Figure) -> str:
    baseline = (
        f"{figure.baseline.what}: {number(figure.baseline.value, figure.baseline.unit)}"
        if figure.baseline
        else "none"
    )
    ratio = f"{figure.ratio:.2f}" if figure.ratio is not None else ""
    target = figure.target + ({True: ": met", False: ": **not met**", None: ""}[figure.met])
    cells = [figure.what, number(figure.value, figure.unit), baseline, ratio, target, figure.detail]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _command(record: dict[str, Any]) -> str:
    """The run's command from the script on (`bench/run.py` is what `make bench` runs)."""
    command = str(record.get("command", ""))
    start = command.find("bench/run.py")
    shown = command[start:] if start >= 0 else command
    return "make bench" if shown == "bench/run.py" else shown


def render(record: dict[str, Any], name: str) -> str:
    """The table (and its heading line) for `record`, stored at `name` (a path relative to the repo)."""
    host = record["machine"]
    load = record["load_average"]
    code = record["code"]
    dirty = (
        f", with {code['uncommitted_changes']} uncommitted change(s)"
        if code.get("uncommitted_changes")
        else ""
    )
    lines = [
        f"<!-- bench record: {name} (rendered by bench/readme.py; do not edit by hand) -->",
        f"Measured by `{_command(record)}` from {record['started']} to {record['finished']} at commit "
        f"`{code['commit'][:10]}`{dirty}, on {host['host']} ({host['cores']} cores, {host['cpu']}, "
        f"{host['memory_gib']} GiB, {host['os']}); load average {load['before'][0]:.2f} before and "
        f"{load['after'][0]:.2f} after (1 minute). Record: [`{name}`]({name}).",
        "",
        "| what | figure | baseline (same run) | ratio | target | notes |",
        "|---|---|---|---|---|---|",
    ]
    lines[1] += (
        " Benchmarks: "
        + ", ".join(
            f"`{bench['name']}` {bench.get('status', 'unknown')} in {bench.get('seconds', 0):.0f} s"
            for bench in record["benchmarks"]
        )
        + "."
    )
    missing: list[str] = []
    for bench in record["benchmarks"]:
        rows = [_row(from_json(data)) for data in bench.get("figures", [])]
        lines.extend(rows)
        if bench.get("status") != "ok" or not rows:
            missing.append(f"`{bench['name']}` {bench.get('status', 'unknown')}")
    if missing:
        lines.append("")
        lines.append("Not in this run's figures: " + ", ".join(missing) + ".")
    lines.append(END)
    return "\n".join(lines)


def _section(readme: str) -> tuple[re.Match[str], int]:
    begin = BEGIN.search(readme)
    end = readme.find(END)
    if begin is None or end < begin.start():
        raise RecordError(
            f"{README.name} has no bench record markers ({END!r} after '<!-- bench record: ...')"
        )
    return begin, end + len(END)


def update(record_path: Path, readme_path: Path = README, root: Path = REPO) -> None:
    """Replace the README's table by the rendering of `record_path` (a file under `root`)."""
    record = load(record_path)
    try:
        name = record_path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise RecordError(f"{record_path} is not inside {root}: keep records in bench/results/") from None
    readme = readme_path.read_text()
    begin, end = _section(readme)
    readme_path.write_text(readme[: begin.start()] + render(record, name) + readme[end:])


def check(readme_path: Path = README, root: Path = REPO) -> str | None:
    """None when the README's table is the rendering of the record it names, else what differs."""
    readme = readme_path.read_text()
    begin, end = _section(readme)
    name = begin.group(1)
    expected = render(load(root / name), name)
    if readme[begin.start() : end] != expected:
        return (
            f"{readme_path.name}'s benchmark table is not the rendering of {name}: run bench/readme.py {name}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", nargs="?", type=Path, help="a record of bench/run.py")
    parser.add_argument("--check", action="store_true", help="check the README against its record")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problem = check()
            if problem:
                print(problem, file=sys.stderr)
                return 1
            print("README's benchmark table matches its record")
            return 0
        if args.record is None:
            parser.error("give a record (bench/results/*.json) or --check")
        update(args.record)
    except RecordError as exc:
        print(f"readme: {exc}", file=sys.stderr)
        return 1
    print(f"README.md: benchmark table rendered from {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
