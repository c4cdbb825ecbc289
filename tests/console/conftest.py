"""A real `execflow serve` on SQLite and headless Chromium (Debian's) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import run_cli, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def console_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("console-data")
    return {"EXECFLOW_DATA_DIR": str(data), "EXECFLOW_LOG_LEVEL": "WARNING"}


@pytest.fixture(scope="module")
def console_keys(console_env: dict[str, str]) -> dict[str, str]:
    keys = {}
    for scope in ("read", "write", "admin"):
        created = run_cli(
            "keys",
            "create",
            "--name",
            f"console-{scope}",
            "--scope",
            scope,
            "--plan",
            "enterprise",
            "--rate",
            "100000",
            env=console_env,
        )
        assert created.returncode == 0, created.stderr
        keys[scope] = created.stdout.strip().splitlines()[-1]
    return keys


@pytest.fixture(scope="module")
def base_url(console_env: dict[str, str], console_keys: dict[str, str]) -> Iterator[str]:
    with serve(console_env) as base:
        yield base


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup --dev installs it)")
    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    tab = await context.new_page()
    yield tab
    await context.close()


async def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)
