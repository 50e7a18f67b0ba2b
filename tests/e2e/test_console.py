"""The web console at /console, driven in a real headless Chromium through Playwright.

Needs Debian's `chromium` (`apt-get install chromium`, or AIRIA_TEST_CHROMIUM=/path)
and the `playwright` package (its driver only: never `playwright install`). Without
them the tests are SKIPPED, loudly; with AIRIA_TEST_REQUIRE_SERVICES=1 they fail.

The screenshots in docs/images/console-*.png (shown by docs/console.md) are
written by these tests, on the SQLite run.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import backends

from .support import LiveServer, assert_problem

pytestmark = pytest.mark.e2e

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1200, "height": 760}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000


def _chromium_path() -> str | None:
    configured = os.environ.get("AIRIA_TEST_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _require_browser() -> str:
    """The Chromium to launch; skip LOUDLY (or fail when required) without one."""
    problem = None
    path = _chromium_path()
    if path is None:
        problem = (
            "Chromium is not installed (apt-get install -y chromium, or set "
            "AIRIA_TEST_CHROMIUM): the web console's browser tests cannot run"
        )
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError as exc:
            problem = f"Playwright is not installed ({exc}): pip install playwright"
    if problem is not None:
        if backends.REQUIRED:
            pytest.fail(f"{problem}; AIRIA_TEST_REQUIRE_SERVICES=1 needs it")
        pytest.skip(f"SKIPPED BROWSER: {problem}")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # launch() starts Chromium on a fresh temporary profile (user data dir) of
        # its own; each test's users get separate contexts (storage) within it.
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def tenant(live_server: LiveServer) -> tuple[str, str]:
    """A tenant of the console tests' own, and an API key for it: clean feeds, plain names."""
    name = f"console-{uuid.uuid4().hex[:8]}"
    return name, live_server.create_api_key(name, name="console tests")


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    """Where to write screenshots: on the SQLite run only (they would be equal); into the
    docs' images only with AIRIA_UPDATE_SCREENSHOTS=1, so a test run leaves git clean."""
    if request.node.callspec.params.get("live_server") != "sqlite":
        return None
    if os.environ.get("AIRIA_UPDATE_SCREENSHOTS") != "1":
        return tmp_path
    IMAGES.mkdir(parents=True, exist_ok=True)
    return IMAGES


def shoot(page, directory: Path | None, name: str, full_page: bool = False) -> None:
    if directory is not None:
        page.mouse.move(0, 0)  # no hover effects in the picture
        page.screenshot(
            path=str(directory / f"console-{name}.png"), animations="disabled", full_page=full_page
        )


def open_page(browser, server: LiveServer, viewport: dict[str, int] = DESKTOP, clock: bool = False):
    """A signed-out console in a context of its own; `clock` gives the page a clock the
    test moves on (`page.clock.fast_forward`)."""
    context = browser.new_context(viewport=viewport, base_url=server.base_url, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    if clock:
        page.clock.install()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # checked at the end of each test
    page.goto("/console")
    return page


def sign_in_bearer(page, token: str) -> None:
    from playwright.sync_api import expect

    page.get_by_label("Bearer token").check()
    page.locator("#signin-secret").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible()


def open_conversation(page, conversation_id: str) -> None:
    from playwright.sync_api import expect

    page.evaluate("id => { location.hash = '#/c/' + id; }", conversation_id)
    expect(page.locator("#view-conversation")).to_be_visible()


def api(server: LiveServer, key: str) -> httpx.Client:
    return server.client(headers={"X-API-KEY": key})


def test_console_is_served_with_its_assets_and_headers(server: LiveServer) -> None:
    """No browser needed: the page, its assets, its headers, and a problem for a miss."""
    with server.client() as http:
        page = http.get("/console")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for asset, media in (("app.js", "javascript"), ("app.css", "text/css")):
            # Relative to /console, so that a proxy may serve the server under a path.
            assert f'"console/assets/{asset}"' in page.text
            got = http.get(f"/console/assets/{asset}")
            assert got.status_code == 200 and media in got.headers["content-type"], asset
            assert got.headers["x-content-type-options"] == "nosniff"
            assert got.headers["content-security-policy"] == csp
        # Nothing the page loads is from elsewhere.
        assert "http://" not in page.text and "https://" not in page.text
        missing = http.get("/console/assets/nope.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
        # The page has one address, with its headers: not also among the assets
        # (where it had none: no CSP, and it could be framed).
        assert_problem(http.get("/console/assets/index.html"), 404)
        slash = http.get("/console/")
        assert (slash.status_code, slash.headers["location"]) == (308, "../console")


def test_the_api_reference_page_renders_the_document(browser, server: LiveServer) -> None:
    """/docs: Swagger UI 5 (4.x could not read OpenAPI 3.1: "Unable to render this
    definition"), from this server alone, under a CSP that lets nothing else in."""
    from playwright.sync_api import expect

    with server.client() as http:
        page = http.get("/docs")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert "<script>" not in page.text  # no inline script for the CSP to allow
    context = browser.new_context(viewport=DESKTOP, base_url=server.base_url)
    context.set_default_timeout(TIMEOUT_MS)
    docs = context.new_page()
    errors: list[str] = []
    docs.on("pageerror", lambda exc: errors.append(str(exc)))
    docs.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    docs.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    docs.goto("/docs")
    expect(docs.locator(".opblock").first).to_be_visible()
    assert docs.locator(".opblock").count() >= 20
    assert "Unable to render" not in docs.content()
    assert errors == []
    context.close()


def unread(server: LiveServer, key: str, user: str, cid: str, wait: float = 5.0) -> int:
    """The user's unread count on the conversation, once it is 0 or `wait` has passed."""
    deadline = time.monotonic() + wait
    with api(server, key) as http:
        while True:
            feed = http.get("/v1/Conversations/feed", params={"userId": user}).json()
            count = next(i["unreadCount"] for i in feed["items"] if i["conversationId"] == cid)
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.1)


def test_two_people_see_each_others_messages_and_typing_live(
    browser, server: LiveServer, tenant: tuple[str, str], screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    tenant_id, key = tenant
    with api(server, key) as http:
        created = http.post(
            "/v1/Conversations", json={"userId": "alice", "title": "Trip to Lisbon"}
        )
        assert created.status_code == 201, created.text
        cid = created.json()["conversationId"]
        shared = http.post(
            f"/v1/Conversations/{cid}/share", json={"userId": "bob", "role": "Collaborator"}
        )
        assert shared.status_code == 200, shared.text
        for who, text in [
            ("alice", "Flights are cheapest on the 14th."),
            ("bob", "Works for me. Hotel or apartment?"),
        ]:
            sent = http.post(
                f"/v1/Conversations/{cid}/messages", json={"message": text, "userId": who}
            )
            assert sent.status_code == 201, sent.text

    alice = open_page(browser, server)
    bob = open_page(browser, server)
    try:
        sign_in_bearer(alice, server.mint_token("alice", tenant_id))
        sign_in_bearer(bob, server.mint_token("bob", tenant_id))
        open_conversation(alice, cid)
        open_conversation(bob, cid)
        for page in (alice, bob):
            expect(page.locator("#conv-title")).to_have_text("Trip to Lisbon")
            expect(page.locator("#message-list .message")).to_have_count(2)
            participants = page.locator("#participant-list")
            expect(participants.locator('[data-user="alice"]')).to_contain_text("Owner")
            expect(participants.locator('[data-user="bob"]')).to_contain_text("Collaborator")
        # Presence: each sees the other here (the later one is answered by the earlier).
        expect(alice.locator('#here-list [data-user="bob"]')).to_be_visible()
        expect(bob.locator('#here-list [data-user="alice"]')).to_be_visible()

        # Alice types: Bob sees it; she sends: Bob sees the message and no more typing.
        alice.locator("#composer-text").press_sequentially("An apartment near Alfama?")
        expect(bob.locator("#typing")).to_have_text("alice is typing…")
        alice.locator("#composer-text").press("Enter")
        expect(bob.locator("#message-list")).to_contain_text("An apartment near Alfama?")
        expect(bob.locator("#typing")).to_have_text("")

        # And back the other way.
        bob.locator("#composer-text").press_sequentially("Perfect, booking it now")
        expect(alice.locator("#typing")).to_have_text("bob is typing…")
        # A pause ends "typing" by itself.
        expect(alice.locator("#typing")).to_have_text("", timeout=TIMEOUT_MS)
        bob.get_by_role("button", name="Send").click()
        last = alice.locator("#message-list .message").last
        expect(last).to_contain_text("Perfect, booking it now")
        expect(last.locator(".message-author")).to_have_text("bob")
        expect(alice.locator("#message-list .message")).to_have_count(4)
        expect(bob.locator("#message-list .message")).to_have_count(4)
        shoot(alice, screenshots, "conversation")

        # Viewing marks as read (shortly after each new message): nothing unread remains.
        for who in ("alice", "bob"):
            assert unread(server, key, who, cid) == 0
        assert alice.js_errors == [] and bob.js_errors == [], (alice.js_errors, bob.js_errors)
    finally:
        alice.context.close()
        bob.context.close()


def test_sign_in_with_a_bad_key_shows_the_problem_message(
    browser, server: LiveServer, screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    with server.client() as http:
        expected = http.get("/v1/Conversations/feed", headers={"X-API-KEY": "not-a-key"})
    assert expected.status_code == 401
    message = expected.json()["message"]

    page = open_page(browser, server)
    try:
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.locator("#signin-user").fill("alice")
        shoot(page, screenshots, "sign-in")
        page.locator("#signin-secret").fill("not-a-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.locator("#error-text")).to_have_text(message)
        # Still signed out, and nothing kept.
        expect(page.locator("#view-signin")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
        assert page.js_errors == []
    finally:
        page.context.close()


def test_feed_search_bookmark_and_unread(
    browser, server: LiveServer, tenant: tuple[str, str], screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    tenant_id, key = tenant
    user = "carol"
    titles = ["Quarterly report draft", "Team offsite ideas", "Hiring plan 2027"]
    with api(server, key) as http:
        ids = {}
        for i, title in enumerate(titles):
            r = http.post("/v1/Conversations", json={"userId": user, "title": title})
            assert r.status_code == 201, r.text
            ids[title] = r.json()["conversationId"]
            for n in range(i + 1):
                sent = http.post(
                    f"/v1/Conversations/{ids[title]}/messages",
                    json={"message": f"note {n}", "userId": "dave"},
                )
                assert sent.status_code == 201, sent.text

    page = open_page(browser, server)
    try:
        sign_in_bearer(page, server.mint_token(user, tenant_id))
        items = page.locator("#feed-list .feed-item")
        expect(items).to_have_count(3)
        offsite = page.locator(f'.feed-item[data-id="{ids["Team offsite ideas"]}"]')
        expect(offsite.locator(".badge")).to_have_text("2")

        # Bookmark one: the star toggles and the server has it.
        star = offsite.get_by_role("button", name="Bookmark Team offsite ideas")
        star.click()
        expect(offsite.locator(".star")).to_have_attribute("aria-pressed", "true")
        with api(server, key) as http:
            got = http.get(f"/v1/Conversations/{ids['Team offsite ideas']}").json()
        assert got["isBookmarked"] is True
        shoot(page, screenshots, "feed")

        # Search narrows the feed to matching titles.
        page.get_by_label("Search conversations").fill("report")
        expect(items).to_have_count(1)
        expect(items.first).to_contain_text("Quarterly report draft")
        page.get_by_label("Search conversations").fill("no such title")
        expect(items).to_have_count(0)
        expect(page.locator("#feed-empty")).to_be_visible()
        page.get_by_label("Search conversations").fill("")
        expect(items).to_have_count(3)

        # Sorting by title.
        page.get_by_label("Sort by").select_option("title:asc")
        expect(items.locator(".feed-title")).to_have_text(sorted(titles))
        assert page.js_errors == []
    finally:
        page.context.close()


def test_narrow_screen_is_one_column(
    browser, server: LiveServer, tenant: tuple[str, str], screenshots: Path | None
) -> None:
    from playwright.sync_api import expect

    tenant_id, key = tenant
    with api(server, key) as http:
        r = http.post("/v1/Conversations", json={"userId": "erin", "title": "Groceries"})
        assert r.status_code == 201, r.text
        cid = r.json()["conversationId"]
        for text in ["Milk, eggs, bread", "And coffee beans, please"]:
            sent = http.post(
                f"/v1/Conversations/{cid}/messages", json={"message": text, "userId": "erin"}
            )
            assert sent.status_code == 201
        upload = http.post(
            f"/v1/Conversations/{cid}/agent-attachments",
            files={"file": ("list.txt", b"milk\neggs\nbread\n", "text/plain")},
        )
        assert upload.status_code == 200, upload.text

    page = open_page(browser, server, PHONE)
    try:
        sign_in_bearer(page, server.mint_token("erin", tenant_id))
        open_conversation(page, cid)
        expect(page.locator("#message-list .message")).to_have_count(2)
        link = page.get_by_role("link", name="list.txt")
        expect(link).to_be_visible()
        # The signed link downloads the file, without credentials.
        href = link.get_attribute("href")
        assert href and httpx.get(href, timeout=10).content == b"milk\neggs\nbread\n"

        columns = page.locator(".conv-grid").evaluate(
            "el => getComputedStyle(el).gridTemplateColumns.split(' ').length"
        )
        assert columns == 1
        main_box = page.locator(".conv-main").bounding_box()
        side_box = page.locator(".conv-side").bounding_box()
        assert main_box and side_box
        assert side_box["y"] >= main_box["y"] + main_box["height"], (main_box, side_box)
        assert main_box["width"] <= PHONE["width"]
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        shoot(page, screenshots, "conversation-narrow", full_page=True)
        assert page.js_errors == []
    finally:
        page.context.close()


def test_owner_tools_with_an_api_key(browser, server: LiveServer, tenant: tuple[str, str]) -> None:
    """An API key user acting as `frank`: create, rename, bookmark, share, write,
    upload, truncate, page back through older messages, read positions."""
    from playwright.sync_api import expect

    _, key = tenant
    with api(server, key) as http:
        r = http.post("/v1/Conversations", json={"userId": "frank", "title": "Long thread"})
        assert r.status_code == 201, r.text
        long_id = r.json()["conversationId"]
        for n in range(60):
            sent = http.post(
                f"/v1/Conversations/{long_id}/messages",
                json={"message": f"line {n:02d}", "userId": "gina"},
            )
            assert sent.status_code == 201, sent.text

    page = open_page(browser, server)
    try:
        page.locator("#signin-secret").fill(key)
        page.locator("#signin-user").fill("frank")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Conversations")).to_be_visible()
        expect(page.locator("#whoami")).to_have_text("Signed in as frank (API key)")

        page.get_by_role("button", name="New conversation").click()
        page.get_by_label("Title", exact=True).fill("Draft")
        page.get_by_role("button", name="Create").click()
        expect(page.locator("#conv-title")).to_have_text("Draft")
        new_id = page.evaluate("location.hash").removeprefix("#/c/")

        page.get_by_role("button", name="Rename").click()
        page.get_by_label("New title").fill("Budget 2027")
        page.get_by_role("button", name="Save").click()
        expect(page.locator("#conv-title")).to_have_text("Budget 2027")
        page.locator("#conv-bookmark").click()
        expect(page.locator("#conv-bookmark")).to_have_attribute("aria-pressed", "true")

        page.get_by_label("Share with user id").fill("gina")
        page.get_by_label("Role").select_option("Viewer")
        page.get_by_role("button", name="Share").click()
        expect(page.locator('#participant-list [data-user="gina"]')).to_contain_text("Viewer")

        page.locator("#upload-input").set_input_files(
            files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}]
        )
        expect(page.get_by_role("link", name="notes.txt")).to_be_visible()

        for text in ("first", "second", "third"):
            page.locator("#composer-text").fill(text)
            page.locator("#composer-text").press("Enter")
            expect(page.locator("#message-list .message").last).to_contain_text(text)
        expect(page.locator("#message-list .message")).to_have_count(3)
        expect(page.locator(".message-author").first).to_have_text("frank")

        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#message-list .message").nth(1).get_by_role(
            "button", name="Delete this message and every later one"
        ).click()
        expect(page.locator("#message-list .message")).to_have_count(1)

        with api(server, key) as http:
            got = http.get(f"/v1/Conversations/{new_id}").json()
            assert got["title"] == "Budget 2027" and got["isBookmarked"] is True
            assert [m["message"] for m in got["messages"]] == ["first"]
            assert [m["userId"] for m in got["messages"]] == ["frank"]
            roles = {
                p["userId"]: p["role"]
                for p in http.get(f"/v1/Conversations/{new_id}/participants").json()
            }
            assert roles == {"frank": "Owner", "gina": "Viewer"}

        # The newest page first, then older ones on request.
        open_conversation(page, long_id)
        messages = page.locator("#message-list .message")
        expect(messages).to_have_count(50)
        expect(messages.last).to_contain_text("line 59")
        page.get_by_role("button", name="Load older messages").click()
        expect(messages).to_have_count(60)
        expect(messages.first).to_contain_text("line 00")
        expect(page.get_by_role("button", name="Load older messages")).to_be_hidden()
        assert unread(server, key, "frank", long_id) == 0

        # Signing out forgets the credentials.
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#view-signin")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
        assert page.js_errors == []
    finally:
        page.context.close()


def test_the_feed_loads_where_the_largest_page_is_small(browser, tmp_path: Path) -> None:
    """The console asks for 20 a page; a server whose AIRIA_FEED_MAX_PAGE_SIZE is 10
    answered 422, and the feed never loaded. It now pages by what the server allows."""
    from playwright.sync_api import expect

    from .support import running_server

    with running_server(tmp_path, AIRIA_FEED_MAX_PAGE_SIZE="10") as server:
        with server.client() as http:
            for i in range(12):
                made = http.post(
                    "/v1/Conversations",
                    json={"userId": "hana", "title": f"small page {i:02d}"},
                    headers=server.headers(),
                )
                assert made.status_code == 201, made.text
        page = open_page(browser, server)
        try:
            page.locator("#signin-secret").fill(server.api_key)
            page.locator("#signin-user").fill("hana")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#feed-list li")).to_have_count(10)
            expect(page.locator("#feed-page")).to_contain_text("Page 1 of 2")
            expect(page.locator("#error")).to_be_hidden()
            assert page.js_errors == []
        finally:
            page.context.close()


def sign_in_key(page, key: str, user: str) -> None:
    from playwright.sync_api import expect

    page.locator("#signin-secret").fill(key)
    page.locator("#signin-user").fill(user)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Conversations")).to_be_visible()


def new_conversation(server: LiveServer, key: str, user: str, title: str) -> str:
    with api(server, key) as http:
        made = http.post("/v1/Conversations", json={"userId": user, "title": title})
        assert made.status_code == 201, made.text
        return made.json()["conversationId"]


def stored_messages(server: LiveServer, key: str, cid: str) -> list[str]:
    with api(server, key) as http:
        page = http.get(f"/v1/Conversations/{cid}/messages", params={"limit": 100})
        assert page.status_code == 200, page.text
        return [m["message"] for m in page.json()["items"]]


def test_text_typed_while_a_message_goes_is_kept(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """The box used to be emptied when the send came back, with what was typed meanwhile."""
    import re

    from playwright.sync_api import expect

    _, key = tenant
    cid = new_conversation(server, key, "ines", "Slow send")
    held = []
    page = open_page(browser, server)
    try:
        sign_in_key(page, key, "ines")
        open_conversation(page, cid)
        expect(page.locator("#conv-title")).to_have_text("Slow send")
        page.route(
            re.compile(r"/messages$"),
            lambda route: (
                held.append(route) if route.request.method == "POST" else route.continue_()
            ),
        )
        box = page.locator("#composer-text")
        box.fill("first part")
        box.press("Enter")
        page.wait_for_function("() => document.querySelector('#composer-send').disabled")
        box.press("End")
        box.press_sequentially(" and a second thought")
        assert len(held) == 1
        held[0].continue_()
        expect(page.locator("#message-list .message").last).to_contain_text("first part")
        expect(box).to_have_value(" and a second thought")
        assert stored_messages(server, key, cid) == ["first part"]
        assert page.js_errors == []
    finally:
        page.context.close()


def test_a_retry_after_a_lost_answer_stores_the_message_once(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """The server stores the message but its answer is lost; Enter again sends the same
    Idempotency-Key (a new one each time stored it twice), and a changed text a new one."""
    import re

    from playwright.sync_api import expect

    _, key = tenant
    cid = new_conversation(server, key, "jon", "Lost answers")
    keys: list[str | None] = []

    def lose_the_first_answer(route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # stored...
            route.abort("connectionreset")  # ...but the answer never arrives
        else:
            route.continue_()

    page = open_page(browser, server)
    try:
        sign_in_key(page, key, "jon")
        open_conversation(page, cid)
        expect(page.locator("#conv-title")).to_have_text("Lost answers")
        page.route(re.compile(r"/messages$"), lose_the_first_answer)
        box = page.locator("#composer-text")
        box.fill("retry me once")
        box.press("Enter")
        expect(page.locator("#error-text")).to_contain_text("Cannot reach the server")
        expect(box).to_have_value("retry me once")
        box.press("Enter")
        expect(box).to_have_value("")
        expect(page.locator("#message-list .message")).to_have_count(1)
        assert stored_messages(server, key, cid) == ["retry me once"]
        assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys

        # Once sent, the same words again are a new message, with a new key.
        box.fill("retry me once")
        box.press("Enter")
        expect(page.locator("#message-list .message")).to_have_count(2)
        assert len(keys) == 3 and keys[2] != keys[0], keys
        assert stored_messages(server, key, cid) == ["retry me once"] * 2
        assert page.js_errors == []
    finally:
        page.context.close()


@contextmanager
def socket_for(server: LiveServer, key: str, cid: str) -> Iterator[object]:
    """A WebSocket on the conversation with the API key's ticket: frames name their user."""
    from websockets.sync.client import connect

    with api(server, key) as http:
        got = http.get(f"/v1/Conversations/{cid}/websocket-url")
        assert got.status_code == 200, got.text
    with connect(got.json()["websocketUrl"]) as ws:
        yield ws


def signal(ws, user: str, **frame: object) -> None:
    ws.send(json.dumps({**frame, "userId": user}))


def test_long_user_ids_never_make_the_page_wider_than_the_screen(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """E-mail addresses as user ids (no space to break at) in the top bar, People, Here
    now, the typing line and message authors, on a desktop and on a phone."""
    from playwright.sync_api import expect

    _, key = tenant
    me = "maximilian.mustermann-schneider@verylongcompanyname.example.com"
    other = "konstantinos.papadopoulos-vasilakis@anotherlongcompany.example.org"
    cid = new_conversation(server, key, me, "Long ids")
    with api(server, key) as http:
        shared = http.post(
            f"/v1/Conversations/{cid}/share", json={"userId": other, "role": "Collaborator"}
        )
        assert shared.status_code == 200, shared.text
        for who in (me, other):
            sent = http.post(
                f"/v1/Conversations/{cid}/messages", json={"message": "hello", "userId": who}
            )
            assert sent.status_code == 201, sent.text
    for viewport in (
        {"width": 1280, "height": 800},
        {"width": 375, "height": 740},
    ):
        page = open_page(browser, server, viewport)
        try:
            sign_in_key(page, key, me)
            open_conversation(page, cid)
            expect(page.locator("#message-list .message")).to_have_count(2)
            expect(page.locator(f'#participant-list [data-user="{other}"]')).to_be_visible()
            with socket_for(server, key, cid) as ws:
                signal(ws, other, type="presence", action="joined")
                signal(ws, other, type="typing", isTyping=True)
                expect(page.locator(f'#here-list [data-user="{other}"]')).to_be_visible()
                expect(page.locator("#typing")).to_contain_text(other)
                widths = page.evaluate(
                    """() => ({
                        page: document.documentElement.scrollWidth,
                        messages: document.querySelector('#messages').scrollWidth -
                            document.querySelector('#messages').clientWidth,
                    })"""
                )
                assert widths["page"] <= viewport["width"], (viewport, widths)
                assert widths["messages"] <= 0, (viewport, widths)
            assert page.js_errors == []
        finally:
            page.context.close()


def test_user_ids_are_isolated_from_the_text_around_them(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """A user id with an unclosed RIGHT-TO-LEFT OVERRIDE (U+202E) reversed the rest of
    the line it was joined into ("Signed in as …", the feed, People, typing)."""
    from playwright.sync_api import expect

    _, key = tenant
    me, other = "\u202eeilrahc", "\u202etnegalv"
    cid = new_conversation(server, key, me, "Bidi")
    with api(server, key) as http:
        shared = http.post(
            f"/v1/Conversations/{cid}/share", json={"userId": other, "role": "Collaborator"}
        )
        assert shared.status_code == 200, shared.text
    # Where each id's text ends up: its own element must isolate it (unicode-bidi: isolate).
    isolation = """([selector, id]) => [...document.querySelectorAll(selector)].flatMap((root) => {
        const found = [];
        const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
        while (walk.nextNode()) {
            if (walk.currentNode.data.includes(id)) found.push([
                walk.currentNode.data,
                getComputedStyle(walk.currentNode.parentElement).unicodeBidi,
            ]);
        }
        return found;
    })"""
    page = open_page(browser, server)
    try:
        sign_in_key(page, key, me)
        expect(page.locator(f'.feed-item[data-id="{cid}"]')).to_be_visible()
        for selector in ("#whoami", f'.feed-item[data-id="{cid}"] .feed-meta'):
            assert page.evaluate(isolation, [selector, me]) == [[me, "isolate"]], selector
        open_conversation(page, cid)
        expect(page.locator(f'#participant-list [data-user="{other}"]')).to_be_visible()
        with socket_for(server, key, cid) as ws:
            signal(ws, other, type="presence", action="joined")
            signal(ws, other, type="typing", isTyping=True)
            expect(page.locator("#typing")).to_contain_text("is typing")
            expect(page.locator(f'#here-list [data-user="{other}"]')).to_be_visible()
            for selector, user in (
                ("#participant-list", me),
                ("#participant-list", other),
                ("#here-list", me),
                ("#here-list", other),
                ("#typing", other),
            ):
                found = page.evaluate(isolation, [selector, user])
                assert found == [[user, "isolate"]], (selector, user, found)
        assert page.js_errors == []
    finally:
        page.context.close()


def test_the_tab_title_names_each_view(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """The tab kept the last conversation's title on the feed and on a missing one."""
    from playwright.sync_api import expect

    _, key = tenant
    cid = new_conversation(server, key, "kim", "Tab titles")
    page = open_page(browser, server)
    try:
        expect(page).to_have_title("Sign in · Airia Conversations")
        sign_in_key(page, key, "kim")
        expect(page).to_have_title("Conversations · Airia Conversations")
        open_conversation(page, cid)
        expect(page).to_have_title("\u2068Tab titles\u2069 · Airia Conversations")
        page.get_by_role("link", name="Back to conversations").click()
        expect(page).to_have_title("Conversations · Airia Conversations")
        open_conversation(page, cid)
        expect(page).to_have_title("\u2068Tab titles\u2069 · Airia Conversations")
        open_conversation(page, str(uuid.uuid4()))
        expect(page.locator("#conv-title")).to_have_text("Conversation unavailable")
        expect(page).to_have_title("Conversation unavailable · Airia Conversations")
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_title("Sign in · Airia Conversations")
        assert page.js_errors == []
    finally:
        page.context.close()


CONTROLS = ("#composer", "#upload-button", "#conv-rename", "#conv-bookmark", "#share-form")


def test_a_conversation_that_is_gone_offers_no_controls(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """Missing, deleted while open, or the user removed while open: the message box,
    Upload, Rename, the star and Share go, and the banner says which it was."""
    from playwright.sync_api import expect

    tenant_id, key = tenant
    deleted = new_conversation(server, key, "lea", "Deleted while open")
    removed = new_conversation(server, key, "lea", "Removed while open")
    with api(server, key) as http:
        shared = http.post(
            f"/v1/Conversations/{removed}/share", json={"userId": "max", "role": "Collaborator"}
        )
        assert shared.status_code == 200, shared.text

    def controls_gone(page) -> None:
        for selector in CONTROLS:
            expect(page.locator(selector)).to_be_hidden()

    owner = open_page(browser, server)
    guest = open_page(browser, server)
    try:
        sign_in_key(owner, key, "lea")
        open_conversation(owner, str(uuid.uuid4()))
        expect(owner.locator("#error-text")).to_have_text("Conversation not found")
        controls_gone(owner)

        open_conversation(owner, deleted)
        expect(owner.locator("#composer")).to_be_visible()
        expect(owner.locator("#conv-rename")).to_be_visible()
        with api(server, key) as http:
            assert http.delete(f"/v1/Conversations/{deleted}").status_code == 204
        expect(owner.locator("#error-text")).to_have_text("This conversation was deleted.")
        controls_gone(owner)

        sign_in_bearer(guest, server.mint_token("max", tenant_id))
        open_conversation(guest, removed)
        expect(guest.locator("#composer")).to_be_visible()
        expect(guest.locator("#upload-button")).to_be_visible()
        with api(server, key) as http:
            gone = http.delete(f"/v1/Conversations/{removed}/participants/max")
            assert gone.status_code == 200, gone.text
        expect(guest.locator("#error-text")).to_have_text(
            "You no longer have access to this conversation."
        )
        controls_gone(guest)
        guest.wait_for_timeout(500)  # a late failure does not replace the reason
        expect(guest.locator("#error-text")).to_have_text(
            "You no longer have access to this conversation."
        )
        assert owner.js_errors == [] and guest.js_errors == []
    finally:
        owner.context.close()
        guest.context.close()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of these tests' own: 20 requests a minute per API key, and revoked keys'
    sockets closed within a second (the check runs at every heartbeat)."""
    from .support import running_server

    root = tmp_path_factory.mktemp("strict-server")
    with running_server(
        root, AIRIA_RATE_LIMIT_PER_KEY="20", AIRIA_WS_HEARTBEAT_SECONDS="1"
    ) as server:
        yield server


def test_a_rate_limit_says_how_long_to_wait(browser, strict_server: LiveServer) -> None:
    """A 429 said only "Rate limit exceeded", and titled the conversation unavailable."""
    import re

    from playwright.sync_api import expect

    server = strict_server
    key = server.create_api_key(f"limited-{uuid.uuid4().hex[:8]}", name="limited")
    cid = new_conversation(server, key, "noa", "Limited")
    page = open_page(browser, server)
    try:
        sign_in_key(page, key, "noa")
        if time.time() % 60 > 50:  # the count starts over each minute: not just before
            time.sleep(61 - time.time() % 60)
        with api(server, key) as http:
            for _ in range(25):
                answer = http.get("/v1/Conversations/feed", params={"PageSize": 1})
                if answer.status_code == 429:
                    break
            assert answer.status_code == 429, answer.text
            assert int(answer.headers["Retry-After"]) > 0
        open_conversation(page, cid)
        expect(page.locator("#error-text")).to_have_text(
            re.compile(r"^Rate limit exceeded; try again in \d+ s$")
        )
        expect(page.locator("#conv-title")).to_have_text("Rate limited")
        expect(page).to_have_title("Rate limited · Airia Conversations")
        assert page.js_errors == []
    finally:
        page.context.close()


def test_a_key_revoked_while_a_conversation_is_open_returns_to_sign_in(
    browser, strict_server: LiveServer
) -> None:
    """The socket's 1008 "API key revoked" used to read "You no longer have access to
    this conversation", signed in still; docs/console.md promises the sign-in view."""
    from playwright.sync_api import expect

    server = strict_server
    tenant_id = f"revoked-{uuid.uuid4().hex[:8]}"
    key = server.create_api_key(tenant_id, name="to-revoke")
    cid = new_conversation(server, key, "olga", "Revoked while open")
    page = open_page(browser, server)
    try:
        sign_in_key(page, key, "olga")
        open_conversation(page, cid)
        expect(page.locator('#here-list [data-user="olga"]')).to_be_visible()  # socket open
        listing = server.cli("keys", "list", "--tenant", tenant_id)
        (row,) = [line for line in listing.stdout.splitlines() if "to-revoke" in line]
        assert server.cli("keys", "revoke", row.split()[0]).returncode == 0
        expect(page.locator("#view-signin")).to_be_visible()
        expect(page.locator("#error-text")).to_have_text("API key revoked")
        expect(page).to_have_title("Sign in · Airia Conversations")
        assert page.evaluate("sessionStorage.length") == 0
        assert page.js_errors == []
    finally:
        page.context.close()


def test_opening_a_conversation_puts_the_cursor_in_the_message_box(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """From the keyboard: the message box has the focus once a conversation opens, and
    every message's "Delete from here" is one Tab stop (the arrow keys move along it),
    not 55 on the way to the box."""
    from playwright.sync_api import expect

    _, key = tenant
    cid = new_conversation(server, key, "pia", "Keyboard")
    with api(server, key) as http:
        for n in range(55):
            sent = http.post(
                f"/v1/Conversations/{cid}/messages", json={"message": f"kb {n}", "userId": "pia"}
            )
            assert sent.status_code == 201, sent.text
    page = open_page(browser, server)
    try:
        sign_in_key(page, key, "pia")
        page.locator(f'.feed-item[data-id="{cid}"] .feed-link').focus()
        page.keyboard.press("Enter")
        expect(page.locator("#message-list .message")).to_have_count(50)
        box = page.locator("#composer-text")
        expect(box).to_be_focused()

        page.keyboard.press("Shift+Tab")
        messages = page.locator("#message-list .message")
        expect(messages.last.locator(".truncate")).to_be_focused()
        page.keyboard.press("ArrowUp")
        expect(messages.nth(48).locator(".truncate")).to_be_focused()
        assert page.locator('#message-list .truncate[tabindex="0"]').count() == 1
        page.keyboard.press("Tab")
        expect(box).to_be_focused()
        assert page.js_errors == []
    finally:
        page.context.close()


def presence_answer(ws, user: str) -> dict:
    """The next presence event of `user` on the socket (others' are skipped)."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        event = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if event["type"] == "presence" and event["data"]["userId"] == user:
            return event["data"]


def test_here_now_is_answered_after_a_reconnect_and_forgets_the_silent(
    browser, server: LiveServer, tenant: tuple[str, str]
) -> None:
    """Someone already listed who announces again (their socket came back) is answered,
    so their list fills in again; and someone silent for 75 s (a browser that died,
    which sends no "left") leaves "Here now"."""
    from playwright.sync_api import expect

    _, key = tenant
    cid = new_conversation(server, key, "quinn", "Presence")
    page = open_page(browser, server, clock=True)
    try:
        sign_in_key(page, key, "quinn")
        open_conversation(page, cid)
        expect(page.locator('#here-list [data-user="quinn"]')).to_be_visible()
        with socket_for(server, key, cid) as ws:
            signal(ws, "ravi", type="presence", action="joined")
            assert presence_answer(ws, "quinn") == {"userId": "quinn", "action": "joined"}
            expect(page.locator('#here-list [data-user="ravi"]')).to_be_visible()
            # Ravi's socket dropped and came back: he announces again, and is answered.
            page.clock.fast_forward(5_000)
            signal(ws, "ravi", type="presence", action="joined")
            assert presence_answer(ws, "quinn") == {"userId": "quinn", "action": "joined"}
        # Then his browser dies: no "left" ever comes.
        page.clock.fast_forward(80_000)
        expect(page.locator('#here-list [data-user="ravi"]')).to_have_count(0)
        expect(page.locator('#here-list [data-user="quinn"]')).to_be_visible()
        assert page.js_errors == []
    finally:
        page.context.close()
