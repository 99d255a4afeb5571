"""The kind tier: runs only where a Docker engine answers; elsewhere each test here is skipped, saying why."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    e2e = [item for item in items if here in item.path.resolve().parents]
    if e2e and not docker_engine_available():
        skip = pytest.mark.skip(reason="e2e on kind needs a Docker engine; none answers `docker info` here")
        for item in e2e:
            item.add_marker(skip)
