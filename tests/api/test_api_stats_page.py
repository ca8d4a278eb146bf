"""The funnel page in headless Chromium against `journey-worker serve`: the key in the address's
fragment, the chart drawn from the stats JSON, and what a wrong or missing key shows.

Chromium comes from Debian's `chromium` package (.ci/run installs it); the test installs nothing.
Missing, it fails the run under CI=true and is skipped loudly elsewhere, like a missing service.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from db import stats
from tests.api.conftest import KEY_A, World, api_settings
from tests.api.serve_process import Server, serve

pytestmark = pytest.mark.slow

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Let the page's fetch and drawing finish before the DOM is dumped or the screenshot taken.
    "--virtual-time-budget=15000",
    "--window-size=1000,420",
]


def require_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "chromium is not installed; install it with: apt-get install -y chromium"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI requires chromium: {message}", pytrace=False)
    print(f"\n!!! SKIPPING: {message} !!!\n")
    pytest.skip(f"!!! {message} !!!")


class FunnelDom(HTMLParser):
    """What the page shows: its state, the status line, and each bar's node and count."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ""
        self.nodes: list[tuple[str, int]] = []
        self.rects = 0
        self.status = ""
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "body":
            self.state = attributes.get("data-state") or ""
        if tag == "g" and attributes.get("class") == "node":
            self.nodes.append(
                (attributes["data-node-id"] or "", int(attributes["data-reached"] or 0))
            )
        if tag == "rect" and attributes.get("class") == "bar":
            self.rects += 1
        self._in_status = attributes.get("id") == "status"

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status += data

    def handle_endtag(self, tag: str) -> None:
        self._in_status = False


def chromium(binary: str, profile: Path, url: str, *extra: str) -> str:
    profile.mkdir(parents=True)
    result = subprocess.run(
        [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dom(binary: str, profile: Path, url: str) -> FunnelDom:
    parser = FunnelDom()
    parser.feed(chromium(binary, profile, url, "--dump-dom"))
    return parser


@pytest.fixture
def server(world: World, pg_url: str, pg_engine: Engine, tmp_path: Path) -> Any:
    require_chromium()
    stats.refresh(pg_engine, statement_timeout_ms=60_000, lock_timeout_ms=1000)
    env = {"DATABASE_URL": pg_url, "API_KEYS": api_settings(world).keys.get_secret_value()}
    with serve(env, tmp_path / "serve.log") as running:
        yield running


def test_the_funnel_page_draws_the_stats_it_fetched(
    server: Server, world: World, tmp_path: Path
) -> None:
    binary = require_chromium()
    journey = world.a.journey.journey_id
    page_url = f"{server.url}/v1/journeys/{journey}/stats.html"
    expected = httpx.get(
        f"{server.url}/v1/journeys/{journey}/stats", headers={"Authorization": f"Bearer {KEY_A}"}
    ).json()
    assert sum(n["reached"] for n in expected["nodes"]) > 0  # a chart of zeros proves little

    shown = dom(binary, tmp_path / "profile-dom", f"{page_url}#key={KEY_A}")
    assert shown.state == "ready", shown.status
    assert shown.nodes == [(n["node_id"], n["reached"]) for n in expected["nodes"]]
    assert shown.rects == len(expected["nodes"]) and shown.status == f"{len(shown.nodes)} nodes"

    screenshot = tmp_path / "funnel.png"
    chromium(
        binary, tmp_path / "profile-shot", f"{page_url}#key={KEY_A}", f"--screenshot={screenshot}"
    )
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    print(f"screenshot: {screenshot} ({len(png)} bytes)")

    # The key never reached the server: it travels in the fragment only.
    assert KEY_A not in server.log.read_text()


def test_the_page_without_a_key_or_with_a_wrong_one_says_so(
    server: Server, world: World, tmp_path: Path
) -> None:
    binary = require_chromium()
    page_url = f"{server.url}/v1/journeys/{world.a.journey.journey_id}/stats.html"
    missing = dom(binary, tmp_path / "profile-none", page_url)
    assert missing.state == "error" and "#key=" in missing.status and not missing.nodes
    wrong = dom(binary, tmp_path / "profile-wrong", f"{page_url}#key=not-the-key-0123456789")
    assert wrong.state == "error" and wrong.status.startswith("Unauthorized") and not wrong.nodes
    foreign = dom(
        binary,
        tmp_path / "profile-b",
        f"{server.url}/v1/journeys/{world.b.journey.journey_id}/stats.html#key={KEY_A}",
    )
    assert foreign.state == "error" and foreign.status.startswith("Not Found")


def test_the_page_loads_nothing_from_elsewhere(server: Server, world: World) -> None:
    response = httpx.get(f"{server.url}/v1/journeys/{world.a.journey.journey_id}/stats.html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert " src=" not in response.text and "href=" not in response.text
    assert response.text.count("http") == 1  # the SVG namespace, nothing fetched
