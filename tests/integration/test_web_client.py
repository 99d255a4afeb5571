"""The browser client in headless Chromium (Debian's, driven over the DevTools protocol): two users
sign up in their own browser contexts, exchange messages, see the read mark, survive a network drop;
a screenshot of the conversation is kept in `.stack/artifacts/` (FISHCHAT_ARTIFACTS overrides)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from fishchat.stack.base import stack_dir
from fishchat.web import build as web_build
from tests.integration.browser import Browser, Page, launch
from tests.integration.harness import PASSWORD, ChatServer, new_uid

pytestmark = pytest.mark.timeout(180)


def artifacts() -> Path:
    return Path(os.environ.get("FISHCHAT_ARTIFACTS", stack_dir() / "artifacts"))


@pytest.fixture(scope="module")
def built() -> None:
    """`make test` builds the client (make venv does); a bare pytest run builds it here."""
    if not web_build.is_current():
        web_build.build()


@pytest.fixture
async def browser(built: None) -> AsyncIterator[Browser]:
    async with launch() as running:
        yield running


async def sign_up(page: Page, uid: int, name: str) -> None:
    await page.wait_for("document.querySelector('#sign-in')")
    await page.fill("#sign-in input[name=uid]", str(uid))
    await page.fill("#sign-in input[name=name]", name)
    await page.fill("#sign-in input[name=password]", PASSWORD)
    await page.click("#register-button")
    await page.wait_for("document.querySelector('#status')?.textContent.startsWith('Online')")


async def open_chat(page: Page, uid: int) -> None:
    await page.fill("#chat-input", str(uid))
    await page.click("#chat-button")
    await page.wait_for("document.querySelector('#composer')")


async def say(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.click("#send-button")


def bubble(text: str, *, mine: bool) -> str:
    side = "mine" if mine else "theirs"
    return (
        f"[...document.querySelectorAll('#messages li.{side}')]"
        f".find(li => li.querySelector('.body').textContent === {json.dumps(text)})"
    )


async def test_two_users_chat_with_read_marks(chat_server: ChatServer, browser: Browser) -> None:
    app = f"{chat_server.api}/app/"
    alice_uid, bob_uid = new_uid(), new_uid()
    alice = await browser.new_page(app)
    bob = await browser.new_page(app)
    await sign_up(alice, alice_uid, "Alice")
    await sign_up(bob, bob_uid, "Bob")

    await open_chat(alice, bob_uid)
    await say(alice, "Hello Bob, this is Alice in a browser")
    # Acked: the bubble is in alice's timeline with one tick (sent).
    await alice.wait_for(
        f"{bubble('Hello Bob, this is Alice in a browser', mine=True)}?.querySelector('.mark')"
    )

    # Bob's browser lists the new conversation (live: notify, then sync) and opens it: a read mark.
    await bob.wait_for(f"document.querySelector('#conversations li[data-key=\"user:{alice_uid}\"]')")
    await bob.click(f'#conversations li[data-key="user:{alice_uid}"]')
    await bob.wait_for(bubble("Hello Bob, this is Alice in a browser", mine=False))
    await alice.wait_for(
        f"{bubble('Hello Bob, this is Alice in a browser', mine=True)}?.querySelector('.mark.read')"
    )

    await say(bob, "Hi Alice! Read you.")
    await alice.wait_for(bubble("Hi Alice! Read you.", mine=False))
    await bob.wait_for(f"{bubble('Hi Alice! Read you.', mine=True)}?.querySelector('.mark.read')")
    assert await alice.evaluate("document.querySelector('#message-input').value") == ""
    shot = await alice.screenshot(artifacts() / "web-client-read-mark.png")
    assert shot.stat().st_size > 10_000

    # A network drop: bob's page loses its WebSocket, reconnects by itself and catches up.
    await bob.offline(True)
    await bob.wait_for("!document.querySelector('#status')?.textContent.startsWith('Online')", timeout_s=40)
    await say(alice, "Sent while Bob was offline")
    await alice.wait_for(f"{bubble('Sent while Bob was offline', mine=True)}?.querySelector('.mark')")
    await bob.offline(False)
    await bob.wait_for(bubble("Sent while Bob was offline", mine=False), timeout_s=40)
    await bob.wait_for("document.querySelector('#status')?.textContent.startsWith('Online')")


async def test_the_page_is_served_by_the_http_api(chat_server: ChatServer, built: None) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{chat_server.api}/", allow_redirects=False) as home:
            assert home.status == 302 and home.headers["Location"] == "/app/"
        async with http.get(f"{chat_server.api}/app/") as page:
            assert page.status == 200 and page.content_type == "text/html"
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # nothing from a CDN
            assert '<script type="module" src="app.js">' in await page.text()
        async with http.get(f"{chat_server.api}/app/app.js") as script:
            assert script.status == 200 and script.content_type == "text/javascript"
        for missing in ("/app/nothing.js", "/app/..%2Fbuild.py", "/app/.inputs"):
            async with http.get(f"{chat_server.api}{missing}") as refused:
                assert refused.status == 404, missing
