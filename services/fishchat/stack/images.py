"""FishChat's container images, built without a Docker daemon: `make images`, `fishchat-stack images`.

`images/Containerfile` is an ordinary multi-stage build file; with an engine, `docker build` or
`podman build` makes the same images. Here no engine runs and no registry can be reached, so:

- the base is made from Debian's packages: debootstrap (minbase, python3 and its venv module) into a
  root filesystem, turned into an image by buildah; the build file takes it as its `BASE` argument;
- buildah builds the two targets (`fishchat`, `fishchat-operator`) with chroot isolation, its layer
  cache and its image store under `cache_dir()/containers`, pip's cache mounted as the build file asks;
- the small `pause` image (`images/pause/`) every Pod's sandbox needs is built from our own Go source;
- each image is exported once per build as an OCI archive under `cache_dir()/images/archives`, which
  the stack's node imports into containerd (`imagePullPolicy: IfNotPresent`, no registry).

The machine's CA bundle and pip configuration are lent to the build's RUN steps (a machine behind a
TLS-inspecting proxy needs them to reach PyPI); they are mounted, never copied into an image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fishchat.stack.base import StackError, apt_install, cache_dir, repo_root, run, stack_dir
from fishchat.stack.golang import go_build, go_build_lock

COMPONENT = "images"
REGISTRY = "ghcr.io/fishchat"
#: The build file's targets, one image each.
TARGETS = ("fishchat", "fishchat-operator")
PAUSE_VERSION = "1.0"
PAUSE_IMAGE = f"{REGISTRY}/pause:{PAUSE_VERSION}"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("FISHCHAT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: What the base holds besides Debian's minimal system: the interpreter and its venv module (Debian
#: 12's python3 is 3.11), and CA certificates for TLS clients.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
#: Removed from the base root filesystem: package caches and lists, documentation, translations.
BASE_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)
BUILD_TOOLS = ("buildah", "debootstrap")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
HOST_PIP_CONF = Path("/etc/pip.conf")


def project_version() -> str:
    """The version in pyproject.toml: the images' tag, the chart's appVersion, the CR's version."""
    data = tomllib.loads((repo_root() / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def image_ref(target: str, tag: str | None = None) -> str:
    return f"{REGISTRY}/{target}:{tag or project_version()}"


def images_dir() -> Path:
    path = cache_dir() / "images"
    path.mkdir(parents=True, exist_ok=True)
    return path


def install_log() -> Path:
    path = images_dir() / "build.log"
    return path


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    image_id: str
    size: str
    archive: Path


class Buildah:
    """buildah with its store under the cache (its layers are the images' build cache)."""

    def __init__(self, log: Path) -> None:
        self.log = log
        root = cache_dir() / "containers"
        self.storage = [
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            os.environ.get("FISHCHAT_BUILDAH_DRIVER", "overlay"),
        ]
        # buildah keeps RUN --mount=type=cache folders under TMPDIR: there, they outlive the build.
        self.tmpdir = root / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str | Path, timeout: float = 1800) -> None:
        run(
            COMPONENT, ["buildah", *self.storage, *map(str, args)], self.log, env=self._env(), timeout=timeout
        )

    def output(self, *args: str) -> str:
        result = subprocess.run(
            ["buildah", *self.storage, *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self._env()},
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(COMPONENT, f"buildah {' '.join(args)}: {result.stderr.strip()[:400]}", self.log)
        return result.stdout.strip()

    def image_id(self, ref: str) -> str | None:
        try:
            return self.output("inspect", "--type", "image", "--format", "{{.FromImageID}}", ref) or None
        except StackError:
            return None

    def size(self, ref: str) -> str:
        """Uncompressed size of all the image's layers, as buildah says it ("221 MB")."""
        listed = json.loads(self.output("images", "--json", ref) or "[]")
        return str(listed[0].get("size", "?")) if listed else "?"

    def _env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmpdir), "BUILDAH_ISOLATION": "chroot"}


def ensure_build_tools(log: Path) -> None:
    apt_install(COMPONENT, list(BUILD_TOOLS), log)


def _base_ref() -> str:
    recipe = json.dumps([DEBIAN_SUITE, BASE_PACKAGES, BASE_PRUNE, DEBIAN_MIRROR])
    return f"localhost/fishchat/debian-base:{DEBIAN_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def ensure_base(buildah: Buildah, say: Callable[[str], None]) -> str:
    """The Debian base image (debootstrap once per recipe; the root filesystem tarball is cached)."""
    ref = _base_ref()
    if buildah.image_id(ref):
        return ref
    tarball = images_dir() / f"{ref.rsplit(':', 1)[1]}.rootfs.tar"
    if not tarball.is_file():
        say(f"[images] debootstrap {DEBIAN_SUITE} minbase + {', '.join(BASE_PACKAGES)} (about 2 min)")
        rootfs = images_dir() / "rootfs.partial"
        shutil.rmtree(rootfs, ignore_errors=True)
        run(
            COMPONENT,
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                rootfs,
                DEBIAN_MIRROR,
            ],
            buildah.log,
            timeout=1800,
        )
        for path in BASE_PRUNE:
            target = rootfs / path
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        partial = tarball.with_suffix(".partial")
        run(
            COMPONENT, ["tar", "--numeric-owner", "-C", rootfs, "-cf", partial, "."], buildah.log, timeout=600
        )
        partial.replace(tarball)
        shutil.rmtree(rootfs, ignore_errors=True)
    container = buildah.output("from", "scratch")
    try:
        buildah("add", container, tarball, "/")
        buildah(
            "config",
            "--env",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--label",
            f"org.opencontainers.image.description=Debian {DEBIAN_SUITE} minbase, python3 (FishChat base)",
            container,
        )
        buildah("commit", "--quiet", container, ref)
    finally:
        buildah("rm", container)
    return ref


def _revision() -> tuple[str, str]:
    """The commit and its time (labels; the time keeps the label stable across rebuilds of a commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_root()), "log", "-1", "--format=%H %cI"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        return out[0], out[1]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown", "1970-01-01T00:00:00Z"


def _host_mounts() -> list[str]:
    mounts: list[str] = []
    for path in (HOST_CA_BUNDLE, HOST_PIP_CONF):
        if path.is_file():
            mounts += ["--volume", f"{path}:{path}:ro"]
    return mounts


def _export(buildah: Buildah, ref: str, image_id: str) -> Path:
    """The image as an OCI archive, written again only when the image changed.

    Archives belong to the checkout (its `.stack/images/`): the image store is shared by every
    checkout of this machine, the tag of a name moves with each build, and a node must import what
    its own checkout built."""
    archives = stack_dir() / "images"
    archives.mkdir(parents=True, exist_ok=True)
    name = ref.rsplit("/", 1)[1].replace(":", "_")
    archive = archives / f"{name}.oci.tar"
    stamp = archive.with_suffix(".id")
    if archive.is_file() and stamp.is_file() and stamp.read_text().strip() == image_id:
        return archive
    partial = archive.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    buildah("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
    partial.replace(archive)
    stamp.write_text(image_id + "\n")
    return archive


def build_images(tags: Sequence[str] = (), say: Callable[[str], None] | None = None) -> list[BuiltImage]:
    """Build (or find up to date) both images under the project version and any extra `tags`."""
    report = say or (lambda _: None)
    log = install_log()
    ensure_build_tools(log)
    with _build_lock():
        return _build_images(tags, report, log)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """One image build at a time on this machine: the store and the tags are shared by checkouts."""
    with (images_dir() / "build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_images(tags: Sequence[str], report: Callable[[str], None], log: Path) -> list[BuiltImage]:
    proto_stamp = repo_root() / "services" / "fishchat" / "proto" / "gen" / "__init__.py"
    if not proto_stamp.is_file():
        raise StackError(COMPONENT, "generated protobuf code is missing: run `make proto` first", log)
    buildah = Buildah(log)
    base = ensure_base(buildah, report)
    version = project_version()
    revision, created = _revision()
    built: list[BuiltImage] = []
    for target in TARGETS:
        ref = image_ref(target, version)
        began = time.monotonic()
        report(f"[images] building {ref} (log: {log})")
        buildah(
            "build",
            "--layers",
            "--isolation",
            "chroot",
            *_host_mounts(),
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"VERSION={version}",
            "--build-arg",
            f"REVISION={revision}",
            "--build-arg",
            f"CREATED={created}",
            "--target",
            target,
            "--file",
            repo_root() / "images" / "Containerfile",
            "--tag",
            ref,
            repo_root(),
        )
        image_id = buildah.image_id(ref)
        if image_id is None:
            raise StackError(COMPONENT, f"{ref} missing after its build", log)
        for name in (ref, *(image_ref(target, tag) for tag in tags)):
            if name != ref:
                buildah("tag", ref, name)
            built.append(BuiltImage(name, image_id, buildah.size(name), _export(buildah, name, image_id)))
        report(f"[images] {ref} ready in {time.monotonic() - began:.1f}s")
    return built


_PAUSE_GO_MOD = "module fishchat.local/images/pause\n\ngo 1.24\n"


def build_pause_image(say: Callable[[str], None] | None = None) -> BuiltImage:
    """The Pod sandbox image: our own static `pause` (images/pause/main.go) in an empty image."""
    log = install_log()
    ensure_build_tools(log)
    buildah = Buildah(log)
    source = repo_root() / "images" / "pause"
    digest = hashlib.sha256((source / "main.go").read_bytes() + _PAUSE_GO_MOD.encode()).hexdigest()[:12]
    context = images_dir() / f"pause-{digest}"
    binary = context / "pause"
    if not binary.is_file():
        with go_build_lock():
            if not binary.is_file():
                (say or (lambda _: None))("[images] building the pause binary (Go)")
                context.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / "main.go", context / "main.go")
                (context / "go.mod").write_text(_PAUSE_GO_MOD)
                go_build(COMPONENT, context, [(".", binary)], log)
    with _build_lock():
        return _build_pause(buildah, context, digest, log)


def _build_pause(buildah: Buildah, context: Path, digest: str, log: Path) -> BuiltImage:
    source = repo_root() / "images" / "pause"
    image_id = buildah.image_id(PAUSE_IMAGE)
    if image_id is None or _label(buildah, PAUSE_IMAGE, "fishchat.source") != digest:
        buildah(
            "build",
            "--isolation",
            "chroot",
            "--build-arg",
            f"VERSION={PAUSE_VERSION}",
            "--label",
            f"fishchat.source={digest}",
            "--file",
            source / "Containerfile",
            "--tag",
            PAUSE_IMAGE,
            context,
        )
        image_id = buildah.image_id(PAUSE_IMAGE)
    if image_id is None:
        raise StackError(COMPONENT, f"{PAUSE_IMAGE} missing after its build", log)
    return BuiltImage(
        PAUSE_IMAGE, image_id, buildah.size(PAUSE_IMAGE), _export(buildah, PAUSE_IMAGE, image_id)
    )


def _label(buildah: Buildah, ref: str, key: str) -> str:
    return buildah.output(
        "inspect", "--type", "image", "--format", f'{{{{index .OCIv1.Config.Labels "{key}"}}}}', ref
    )


def build_and_report(tags: Sequence[str] = ()) -> int:
    """`fishchat-stack images [--tag T]`: build every image and print its size; the exit status."""
    began = time.monotonic()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        images = [*build_images(tags, say), build_pause_image(say)]
    except StackError as exc:
        print(f"fishchat-stack images: {exc}", file=sys.stderr)
        return 1
    for image in images:
        archive_mib = image.archive.stat().st_size / 2**20
        print(f"{image.ref:50} {image.size:>8} uncompressed, OCI archive {archive_mib:.1f} MiB")
    say(f"images: done in {time.monotonic() - began:.1f}s")
    return 0
