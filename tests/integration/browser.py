"""A headless Debian Chromium driven over the Chrome DevTools Protocol, for the web client's tests.

No browser automation package: the protocol is JSON over a WebSocket (the `websockets` client the
project already uses), and the tests need little of it: separate browser contexts (one per user, so
their storage is apart), pages, JavaScript evaluation, network emulation and screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from fishchat.stack.chromium import chromium_command, ensure_chromium


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium process and its DevTools connection (`launch`)."""

    def __init__(self, process: asyncio.subprocess.Process, ws: ClientConnection, profile: Path) -> None:
        self.process = process
        self._ws = ws
        self._profile = profile
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(BrowserError(f"{message['error']}"))
                    else:
                        future.set_result(message.get("result", {}))
            elif "method" in message:
                self._events.setdefault(message["method"], []).append(message)

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = future
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send(json.dumps(message))
        async with asyncio.timeout(30):
            return await future

    async def new_page(self, url: str) -> Page:
        """A page in a browser context of its own (separate cookies and storage)."""
        context = (await self.call("Target.createBrowserContext"))["browserContextId"]
        target = (
            await self.call("Target.createTarget", {"url": "about:blank", "browserContextId": context})
        )["targetId"]
        session = (await self.call("Target.attachToTarget", {"targetId": target, "flatten": True}))[
            "sessionId"
        ]
        page = Page(self, session)
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        await page.call("Network.enable")
        await page.goto(url)
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("Browser.close")
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        with contextlib.suppress(Exception):
            await self._ws.close()
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)


class Page:
    """One tab: evaluate JavaScript in it, wait for a condition, take a screenshot."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.call(method, params, self.session)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 15.0) -> None:
        """Poll until `expression` is truthy (in JavaScript's sense: an element is)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            if await self.evaluate(f"!!({expression})"):
                return
            if loop.time() > deadline:
                text = await self.evaluate("document.body.innerText")
                raise AssertionError(f"not true within {timeout_s}s: {expression}\npage:\n{text}")
            await asyncio.sleep(0.1)

    async def fill(self, selector: str, value: str) -> None:
        element = f"document.querySelector({json.dumps(selector)})"
        await self.evaluate(
            f"(() => {{ const e = {element}; e.value = {json.dumps(value)};"
            " e.dispatchEvent(new Event('input', {bubbles: true})); })()"
        )

    async def click(self, selector: str) -> None:
        await self.wait_for(f"document.querySelector({json.dumps(selector)})")
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    async def offline(self, offline: bool) -> None:
        """Cut (or restore) the page's network, open WebSockets included."""
        await self.call(
            "Network.emulateNetworkConditions",
            {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )

    async def screenshot(self, path: Path) -> Path:
        data = (await self.call("Page.captureScreenshot", {"format": "png"}))["data"]
        await asyncio.to_thread(_write, path, base64.b64decode(data))
        return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """A headless Chromium (installed from Debian on first use) in a fresh profile."""
    executable = await asyncio.to_thread(ensure_chromium)
    profile = Path(tempfile.mkdtemp(prefix="fishchat-chromium-"))
    process = await asyncio.create_subprocess_exec(
        *chromium_command(executable, profile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    port_file = profile / "DevToolsActivePort"
    try:
        async with asyncio.timeout(30):
            while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
                if process.returncode is not None:
                    raise BrowserError(f"chromium exited with {process.returncode}")
                await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None)
    except BaseException:
        process.kill()
        await process.wait()
        shutil.rmtree(profile, ignore_errors=True)
        raise
    browser = Browser(process, ws, profile)
    try:
        yield browser
    finally:
        await browser.close()
