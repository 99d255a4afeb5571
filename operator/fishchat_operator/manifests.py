"""Every file generated from the operator's types: `python -m fishchat_operator.manifests` writes them.

One source each, no hand-kept copies:

- the CRD (from model.py and status.py) in `crds/` and, byte for byte the same, in the chart's `crds/`;
- the RBAC rules (from rbac.py) in `operator/rbac/clusterrole.yaml` and the chart's `_rules.tpl`;
- the FishChatCluster spec schema (the CRD's) inside the chart's `values.schema.json`, as the schema of
  `cluster.spec` (the rest of that file is written by hand and kept as it is).

`--check` writes nothing and exits 1 naming the files that differ (the unit tests run the same check).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fishchat_operator import rbac
from fishchat_operator.crd import crd, render_crd

CHART = Path("helm") / "fishchat"
VALUES_SCHEMA = CHART / "values.schema.json"


def repo_root() -> Path:
    """The checkout this module runs from (it is installed editable in development)."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file() and (parent / "operator").is_dir():
            return parent
    raise RuntimeError("not running from a FishChat checkout: nothing to generate")


def values_spec_schema() -> dict[str, Any]:
    """The CRD's spec schema as JSON Schema for Helm values: API-server-only keywords dropped, and
    unknown keys refused (the API server would silently prune a misspelt field; `helm install` says so).
    """
    spec = copy.deepcopy(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "default"}
        if "properties" in out:
            out["additionalProperties"] = False
        return out

    converted: dict[str, Any] = convert(spec)
    return converted


def render_values_schema(current: str) -> str:
    """values.schema.json with its `cluster.spec` schema replaced by the generated one."""
    schema = json.loads(current)
    try:
        cluster = schema["properties"]["cluster"]
        cluster["then"]["properties"]["spec"] = values_spec_schema()
    except KeyError as missing:
        raise RuntimeError(f"{VALUES_SCHEMA} lacks properties.cluster.then.properties ({missing})") from None
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generated(root: Path) -> dict[Path, Callable[[], str]]:
    """Relative path -> its content; values.schema.json's depends on the file as it is."""
    crd_text = render_crd()
    return {
        Path("crds") / "fishchatcluster.yaml": lambda: crd_text,
        CHART / "crds" / "fishchatcluster.yaml": lambda: crd_text,
        Path("operator") / "rbac" / "clusterrole.yaml": rbac.render_cluster_role,
        CHART / "templates" / "_rules.tpl": rbac.render_chart_helpers,
        VALUES_SCHEMA: lambda: render_values_schema((root / VALUES_SCHEMA).read_text()),
    }


def drifted(root: Path) -> list[Path]:
    """The generated files whose content differs from what the generator writes."""
    return [
        path
        for path, content in generated(root).items()
        if not (root / path).is_file() or (root / path).read_text() != content()
    ]


def write_all(root: Path) -> list[Path]:
    written: list[Path] = []
    for path, content in generated(root).items():
        text = content()
        target = root / path
        if not target.is_file() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fishchat_operator.manifests",
        description="Write the files generated from the operator's types (CRD, RBAC, chart schema).",
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if any file differs")
    args = parser.parse_args(argv)
    root = repo_root()
    if args.check:
        stale = drifted(root)
        for path in stale:
            print(f"{path}: differs from its generator", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(root):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
