"""Prometheus from Debian's `prometheus` package, with a config tests extend with scrape targets.

Targets are file-based service discovery: a test writes `targets/<name>.json` (see
`add_scrape_target`) and Prometheus picks it up within seconds, no restart or reload needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fishchat.stack.base import (
    HOST,
    Component,
    Ports,
    Process,
    apt_install,
    http_ok,
    stack_dir,
    system_binary,
    wait_until,
)

SCRAPE_INTERVAL = "2s"


def targets_dir() -> Path:
    path = stack_dir() / "prometheus" / "targets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_scrape_target(job: str, addresses: list[str], labels: dict[str, str] | None = None) -> Path:
    """Make Prometheus scrape `addresses` (host:port, path /metrics) under job label `job`."""
    return write_scrape_groups(job, [{"targets": addresses, "labels": {"job": job, **(labels or {})}}])


def write_scrape_groups(job: str, groups: list[dict[str, Any]]) -> Path:
    """Replace the file of `job` with these target groups (file_sd format: targets and labels each)."""
    path = targets_dir() / f"{job}.json"
    tmp = path.with_suffix(".tmp")
    # Written aside and renamed so Prometheus never reads a half-written file.
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)
    return path


def remove_scrape_target(job: str) -> None:
    (targets_dir() / f"{job}.json").unlink(missing_ok=True)


class Prometheus(Component):
    name = "prometheus"

    @property
    def port(self) -> int:
        return Ports.of(Ports.PROMETHEUS)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def process(self) -> Process:
        return Process(self.name, "prometheus", self.workdir)

    def install(self) -> None:
        apt_install(self.name, ["prometheus"], self.install_log)

    def start(self) -> None:
        if self.running():
            return
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_INTERVAL}\n"
            f"  evaluation_interval: {SCRAPE_INTERVAL}\n"
            "scrape_configs:\n"
            "  - job_name: prometheus\n"
            f"    static_configs: [{{targets: ['{HOST}:{self.port}']}}]\n"
            "  - job_name: file-targets\n"
            "    file_sd_configs:\n"
            f"      - files: ['{targets_dir()}/*.json']\n"
            "        refresh_interval: 2s\n"
        )
        process = self.process
        process.start(
            [
                system_binary(self.name, "prometheus", self.install_log),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                "--storage.tsdb.retention.time=1d",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
            ]
        )
        wait_until(self.name, lambda: http_ok(f"{self.url}/-/ready"), 60, process.log, process.alive)

    def stop(self) -> None:
        self.process.stop()

    def running(self) -> bool:
        return self.process.alive()

    def env(self) -> dict[str, str]:
        return {"FISHCHAT_PROMETHEUS_URL": self.url}
