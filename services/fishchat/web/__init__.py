"""FishChat's browser client: sources in `src/`, built by `build.py` (`make web`) into `dist/`, which
the HTTP API serves at `/app/` (and `/` redirects there)."""

from __future__ import annotations

from pathlib import Path

DIST = Path(__file__).resolve().parent / "dist"
#: What the page loads, with its content type; nothing else of dist/ is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.js.map": "application/json",
    "app.css": "text/css; charset=utf-8",
}


def asset(name: str) -> tuple[Path, str] | None:
    """The built file `name` and its content type, or None when it is not one (or not built)."""
    content_type = ASSETS.get(name)
    path = DIST / name
    if content_type is None or not path.is_file():
        return None
    return path, content_type


def is_built() -> bool:
    return (DIST / "index.html").is_file() and (DIST / "app.js").is_file()
