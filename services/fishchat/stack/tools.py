"""Command-line tools the tests and scripts run (not servers), built from the Go module proxy and cached.

`helm` renders, lints and installs the chart in `helm/fishchat`. No registry we can reach serves its
binary, so the pinned release is compiled once (through the same locked, low-priority Go build as the
stack's servers) into `cache_dir()/tools/bin/`, one file per version. A wrapper module requires the
pinned version alone, so Go's version selection picks exactly the release's own dependency versions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fishchat.stack.base import StackError, cache_dir, stack_dir
from fishchat.stack.golang import go_build, go_build_lock


@dataclass(frozen=True)
class GoTool:
    """A command built from one Go module at a pinned version."""

    name: str
    module: str
    version: str
    package: str
    # -X flags that stamp the release's version in, as the project's own Makefile does.
    stamps: tuple[tuple[str, str], ...] = ()

    @property
    def binary(self) -> Path:
        return cache_dir() / "tools" / "bin" / f"{self.name}-{self.version}"

    @property
    def log(self) -> Path:
        return stack_dir() / "tools" / "log" / f"{self.name}-install.log"

    def ensure(self) -> Path:
        """The cached binary, built first if this version was never built on this machine."""
        if self.binary.is_file():
            return self.binary
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with go_build_lock(self.name):
            if self.binary.is_file():  # another process built it while we waited for the lock
                return self.binary
            began = time.monotonic()
            module_dir = cache_dir() / "tools" / f"build-{self.name}-{self.version}"
            shutil.rmtree(module_dir, ignore_errors=True)
            module_dir.mkdir(parents=True)
            (module_dir / "go.mod").write_text(
                f"module fishchat.local/tools/{self.name}\n\ngo 1.24\n\n"
                f"require {self.module} {self.version}\n\ntool {self.package}\n"
            )
            ldflags = " ".join(["-s", "-w", *(f"-X {var}={value}" for var, value in self.stamps)])
            go_build(self.name, module_dir, [(self.package, self.binary)], self.log, ldflags=ldflags)
            with self.log.open("a") as out:
                out.write(f"{self.name} {self.version}: build took {time.monotonic() - began:.0f}s\n")
        return self.binary


HELM_VERSION = "v4.3.2"
HELM = GoTool(
    name="helm",
    module="helm.sh/helm/v4",
    version=HELM_VERSION,
    package="helm.sh/helm/v4/cmd/helm",
    # Helm derives its default Kubernetes version (for `helm template` and Chart.yaml's kubeVersion)
    # from the client-go it was built with, so only its own version needs stamping.
    stamps=(("helm.sh/helm/v4/internal/version.version", HELM_VERSION),),
)

TOOLS: dict[str, GoTool] = {tool.name: tool for tool in (HELM,)}


def ensure_tools(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Build what is missing (one at a time: they share the Go build lock); name -> binary."""
    wanted = list(names) if names else list(TOOLS)
    unknown = [n for n in wanted if n not in TOOLS]
    if unknown:
        raise StackError(", ".join(unknown), f"unknown tool; choose from {', '.join(TOOLS)}")
    return {name: TOOLS[name].ensure() for name in wanted}


def helm_binary() -> Path:
    return HELM.ensure()
