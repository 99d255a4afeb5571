"""Build the browser client into `dist/` (what the HTTP API serves at `/app/`): `make web`.

1. The npm tools pinned by `package-lock.json` (@bufbuild/protobuf, @bufbuild/protoc-gen-es, esbuild)
   are installed with `npm ci` into `$FISHCHAT_CACHE/web/<hash of package.json and the lockfile>/`,
   once per lockfile; npm's own cache is `$FISHCHAT_CACHE/npm`. Nothing of npm's lands in the checkout.
2. The client protocol's `.proto` files (the same ones the servers are built from) become JavaScript
   with protoc-gen-es, run as a plugin of grpcio-tools' protoc: no hand-written encoding.
3. esbuild bundles `src/app.js` with the generated code and @bufbuild/protobuf into one
   `dist/app.js`; `index.html` and `app.css` are copied beside it. Everything the page loads comes
   from FishChat (no CDN).

`dist/` is ignored by git and declared as package data, so a wheel built after this contains it.
Run: `python -m fishchat.web.build [--check]` (`--check`: exit 1 if dist/ is missing or stale).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

WEB_ROOT = Path(__file__).resolve().parent
SOURCE = WEB_ROOT / "src"
DIST = WEB_ROOT / "dist"
PROTO_ROOT = WEB_ROOT.parent / "proto"
#: The client protocol: what a browser speaks (the internal rpc/ protos are not needed).
PROTOS = ("external/base.proto", "external/error.proto", "external/gateway.proto", "external/access.proto")
STATIC = ("index.html", "app.css")
STAMP = DIST / ".inputs"


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    path = Path(os.environ.get("FISHCHAT_CACHE", Path.home() / ".cache" / "fishchat")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _inputs() -> Iterable[Path]:
    yield WEB_ROOT / "package.json"
    yield WEB_ROOT / "package-lock.json"
    yield Path(__file__)
    yield from sorted(p for p in SOURCE.rglob("*") if p.is_file())
    yield from (PROTO_ROOT / name for name in PROTOS)


def inputs_digest() -> str:
    digest = hashlib.sha256()
    for path in _inputs():
        digest.update(path.relative_to(WEB_ROOT.parent).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current() -> bool:
    return STAMP.exists() and STAMP.read_text().strip() == inputs_digest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _run(command: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise BuildError(
            f"{what} failed ({done.returncode}): {' '.join(command)}\n{done.stdout}{done.stderr}"
        )


def tools() -> Path:
    """The directory whose node_modules holds the pinned tools (installed once per lockfile)."""
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError("npm not found: install Node.js 20+ with npm (Debian: apt-get install nodejs npm)")
    lock = (WEB_ROOT / "package.json").read_bytes() + (WEB_ROOT / "package-lock.json").read_bytes()
    home = cache_dir() / "web" / hashlib.sha256(lock).hexdigest()[:16]
    done = home / ".installed"
    with _locked(cache_dir() / "web" / "install.lock"):
        if not done.exists():
            home.mkdir(parents=True, exist_ok=True)
            for name in ("package.json", "package-lock.json"):
                shutil.copy2(WEB_ROOT / name, home / name)
            print(f"web: npm ci into {home}", file=sys.stderr, flush=True)
            env = {
                **os.environ,
                "npm_config_cache": str(cache_dir() / "npm"),
                "npm_config_update_notifier": "false",
            }
            _run([npm, "ci", "--no-audit", "--no-fund"], home, "npm ci", env)
            done.touch()
    return home


def build() -> float:
    """Build dist/; returns the seconds it took."""
    began = time.monotonic()
    home = tools()
    bin_dir = home / "node_modules" / ".bin"
    # The sources are bundled inside the tools' directory, so imports resolve from its node_modules.
    with tempfile.TemporaryDirectory(dir=home, prefix="build-") as work_text:
        work = Path(work_text)
        gen = work / "gen"
        gen.mkdir()
        _run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--plugin=protoc-gen-es={bin_dir / 'protoc-gen-es'}",
                f"--es_out={gen}",
                "--es_opt=target=js,import_extension=js",
                *PROTOS,
            ],
            PROTO_ROOT,
            "protoc-gen-es",
        )
        shutil.copytree(SOURCE, work / "src")
        staging = work / "dist"
        _run(
            [
                str(bin_dir / "esbuild"),
                str(work / "src" / "app.js"),
                "--bundle",
                "--format=esm",
                "--target=es2022",
                "--minify-syntax",
                "--sourcemap",
                "--legal-comments=external",
                f"--outfile={staging / 'app.js'}",
            ],
            work,
            "esbuild",
        )
        for name in STATIC:
            shutil.copy2(SOURCE / name, staging / name)
        (staging / ".inputs").write_text(inputs_digest() + "\n")
        if DIST.exists():
            shutil.rmtree(DIST)
        shutil.copytree(staging, DIST)
    return time.monotonic() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fishchat.web.build", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if dist/ is missing or stale")
    args = parser.parse_args(argv)
    if args.check:
        current = is_current()
        print(f"web: dist/ is {'current' if current else 'missing or stale'}")
        return 0 if current else 1
    try:
        seconds = build()
    except BuildError as exc:
        print(f"web: {exc}", file=sys.stderr)
        return 1
    print(f"web: built {DIST} in {seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
