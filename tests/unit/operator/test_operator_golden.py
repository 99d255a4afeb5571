"""Golden-file tests of the operator's pure core: render, conditions and the generated CRD.

Each `golden/<kind>/<case>.input.yaml` has a `<case>.output.yaml` next to it holding the exact
expected output. A change in behaviour shows as a readable diff of manifests or status. To accept a
deliberate change, regenerate and review the diff before committing:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/operator
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

from fishchat_operator import yamlio
from fishchat_operator.conditions import conditions
from fishchat_operator.crd import render_crd
from fishchat_operator.model import parse_cluster
from fishchat_operator.observations import parse_observation
from fishchat_operator.render import render
from fishchat_operator.schema import to_mapping

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "crds" / "fishchatcluster.yaml"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def cases(kind: str) -> list[str]:
    return sorted(p.name.removesuffix(".input.yaml") for p in (GOLDEN / kind).glob("*.input.yaml"))


def check_golden(expected_file: Path, actual: str) -> None:
    """Compare with the golden file, or (UPDATE_GOLDEN=1) rewrite it."""
    if UPDATE:
        expected_file.write_text(actual)
        return
    if not expected_file.exists():
        pytest.fail(f"{expected_file} is missing; create it with UPDATE_GOLDEN=1 and review it")
    expected = expected_file.read_text()
    if expected != actual:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=str(expected_file),
                tofile="actual",
            )
        )
        pytest.fail(f"output differs from {expected_file.name} (UPDATE_GOLDEN=1 accepts it):\n{diff}")


@pytest.mark.parametrize("case", cases("render"))
def test_render_matches_golden(case: str) -> None:
    body = yamlio.load((GOLDEN / "render" / f"{case}.input.yaml").read_text())
    manifests = render(parse_cluster(body))
    check_golden(GOLDEN / "render" / f"{case}.output.yaml", yamlio.dump_all(manifests))


@pytest.mark.parametrize("case", cases("conditions"))
def test_conditions_match_golden(case: str) -> None:
    observation = parse_observation(yamlio.load((GOLDEN / "conditions" / f"{case}.input.yaml").read_text()))
    status = conditions(observation)
    check_golden(GOLDEN / "conditions" / f"{case}.output.yaml", yamlio.dump({"status": to_mapping(status)}))


def test_crd_file_is_generated_from_the_types() -> None:
    check_golden(CRD_FILE, render_crd())


def test_golden_cases_exist() -> None:
    # Guards against a glob silently matching nothing after a rename.
    assert {"minimal", "full", "partition-shrink"} <= set(cases("render"))
    assert {"not-ready", "degraded-kafka-unreachable", "partition-shrink", "all-ready"} <= set(
        cases("conditions")
    )
