"""Debian's Chromium for the browser tests, installed on first use (idempotently, with the stack's
`apt_install`: no browser download of a test tool's own, which this machine's network refuses).

`chromium_command` is the command line of a headless browser as root on a closed network: no
sandbox (root), no GPU, and none of the background traffic (component updates, sync, safe browsing)
a fresh profile would start, each in a fresh profile directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fishchat.stack.base import StackError, apt_install, stack_dir

COMPONENT = "chromium"
PACKAGES = ("chromium",)
EXECUTABLE = Path("/usr/bin/chromium")


def ensure_chromium() -> Path:
    """The Chromium executable, installing Debian's package when it is missing."""
    if not EXECUTABLE.exists():
        log = stack_dir() / COMPONENT / "install.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        apt_install(COMPONENT, PACKAGES, log)
    if not EXECUTABLE.exists():
        found = shutil.which("chromium")
        if found is None:
            raise StackError(COMPONENT, f"{EXECUTABLE} is missing after installing {' '.join(PACKAGES)}")
        return Path(found)
    return EXECUTABLE


def chromium_command(executable: Path, profile_dir: Path, *, debugging_port: int = 0) -> list[str]:
    """A headless Chromium with the DevTools protocol on `debugging_port` (0: any free port, written
    to `profile_dir/DevToolsActivePort`)."""
    return [
        str(executable),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--metrics-recording-only",
        "--password-store=basic",
        "--mute-audio",
        f"--user-data-dir={profile_dir}",
        f"--remote-debugging-port={debugging_port}",
        "--remote-allow-origins=*",
        "--window-size=1280,800",
        "about:blank",
    ]
