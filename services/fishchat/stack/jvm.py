"""What the JVM servers of the stack (Kafka, HBase) share: a Java 17+ runtime and their jars from Maven.

Only package registries are reachable here, so these servers are not installed from release
tarballs: a small pom per server (package data under `java/<server>/`) names the server artifacts,
and Maven copies their whole dependency closure into one jar folder in the cache, which becomes the
classpath. Resolution happens once per pom content; a marker written after a complete copy makes an
interrupted copy start over, and a file lock keeps concurrent `fishchat-stack up` runs (and the
Kafka and HBase installs of one run, which go in parallel) from writing the local repository at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from fishchat.stack.base import StackError, cache_dir, run
from fishchat.stack.progress import activity

MIN_JAVA = 17
COMPLETE_MARKER = ".complete"

# Flags every server JVM of the stack gets: IPv4 loopback only, no GUI toolkit, logging that goes on
# until the JVM exits (log4j2's own shutdown hook would otherwise silence the servers' shutdown
# hooks), and a process that dies on OutOfMemoryError instead of limping on.
COMMON_JVM_FLAGS = (
    "-Djava.net.preferIPv4Stack=true",
    "-Djava.awt.headless=true",
    "-Dlog4j2.shutdownHookEnabled=false",
    "-XX:+UseG1GC",
    "-XX:+ExitOnOutOfMemoryError",
)


def maven_repo() -> Path:
    return cache_dir() / "m2"


def pom(server: str) -> Path:
    """The pom shipped as package data for `server` (java/<server>/pom.xml beside this module)."""
    return Path(__file__).resolve().parent / "java" / server / "pom.xml"


@functools.cache
def java_executable(component: str) -> str:
    """A `java` of version 17 or later: FISHCHAT_JAVA, then $JAVA_HOME/bin/java, then PATH."""
    candidates = [
        os.environ.get("FISHCHAT_JAVA"),
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else None,
        shutil.which("java"),
    ]
    found = [c for c in candidates if c and Path(c).is_file()]
    if not found:
        raise StackError(component, f"no java found (install a JDK >= {MIN_JAVA} or set FISHCHAT_JAVA)")
    java = found[0]
    try:
        probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(component, f"cannot run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    if match is None:
        raise StackError(component, f"cannot tell the version of {java}: {probe.stderr.strip()[:200]}")
    major = int(match.group(1))
    if major == 1:  # "1.8.0_x" style
        major = int(match.group(2) or 0)
    if major < MIN_JAVA:
        raise StackError(component, f"{java} is Java {major}; Java {MIN_JAVA} or later is needed")
    return java


def jar_folder_ready(lib: Path, pom_file: Path, properties: Mapping[str, str]) -> bool:
    marker = lib / COMPLETE_MARKER
    return marker.is_file() and marker.read_text().strip() == _fingerprint(pom_file, properties)


def resolve_jars(
    component: str, pom_file: Path, lib: Path, log: Path, properties: Mapping[str, str] | None = None
) -> Path:
    """Copy the runtime dependency closure of `pom_file` into `lib`, once; return `lib`.

    `properties` override the pom's (`-Dname=value`), e.g. the server version.
    """
    props = dict(properties or {})
    if jar_folder_ready(lib, pom_file, props):
        return lib
    if not pom_file.is_file():
        raise StackError(component, f"pom not found: {pom_file} (package data missing?)", log)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(component, "mvn not found; install Maven (Debian package `maven`)", log)
    with _locked(component, cache_dir() / "m2.lock"):
        if jar_folder_ready(lib, pom_file, props):  # another process finished it while we waited
            return lib
        partial = lib.with_name(lib.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)
        with activity(component, f"downloading {pom_file.parent.name} jars from Maven Central (mvn)"):
            run(
                component,
                [
                    mvn,
                    "-B",
                    "-q",
                    f"-Dmaven.repo.local={maven_repo()}",
                    "-f",
                    pom_file,
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={partial}",
                    "-DincludeScope=runtime",
                    *(f"-D{key}={value}" for key, value in sorted(props.items())),
                ],
                log,
                timeout=1800,
            )
        if not any(partial.glob("*.jar")):
            raise StackError(component, f"Maven copied no jars into {partial}", log)
        partial.rename(lib)
        (lib / COMPLETE_MARKER).write_text(_fingerprint(pom_file, props) + "\n")
    return lib


def classpath(*entries: Path) -> str:
    """A classpath of folders (for config files) and jar folders (as `folder/*` wildcards)."""
    parts = [f"{e}/*" if any(e.glob("*.jar")) else str(e) for e in entries]
    return os.pathsep.join(parts)


def _fingerprint(pom_file: Path, properties: Mapping[str, str]) -> str:
    digest = hashlib.sha256(pom_file.read_bytes() if pom_file.is_file() else b"")
    for key, value in sorted(properties.items()):
        digest.update(f"\0{key}={value}".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(component: str, path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        with activity(component, f"waiting for another Maven download to finish (lock {path})"):
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
