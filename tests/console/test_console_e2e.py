"""The operator console end to end: real `execflow serve`, real headless Chromium."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import screenshot


async def sign_in(page: Any, base_url: str, key: str) -> None:
    await page.goto(base_url + "/console")
    await page.get_by_label("API key", exact=True).fill(key)
    await page.get_by_role("button", name="Sign in").click()


async def test_sign_in_shows_scope_and_keeps_key_out_of_the_page(
    page: Any, base_url: str, console_keys
) -> None:
    await sign_in(page, base_url, console_keys["admin"])
    await page.get_by_text("console-admin · admin scope").wait_for()
    assert console_keys["admin"] not in await page.content()
    assert console_keys["admin"] not in page.url
    stored = await page.evaluate("sessionStorage.getItem('execflow.apiKey')")
    assert stored == console_keys["admin"]
    assert await page.evaluate("localStorage.length") == 0
    await screenshot(page, "chat")


async def test_bad_key_is_refused_with_the_api_message(page: Any, base_url: str) -> None:
    await sign_in(page, base_url, "ef_admin_" + "x" * 38)
    alert = page.locator("#signin-error")
    await alert.get_by_text("Malformed API key").wait_for()
    assert await page.locator("#workspace").is_hidden()
    await screenshot(page, "signin-refused")


async def test_read_key_sees_no_write_or_admin_controls(
    page: Any, base_url: str, console_keys
) -> None:
    await sign_in(page, base_url, console_keys["read"])
    await page.get_by_text("read scope").wait_for()
    assert await page.locator("#task-form").is_hidden()
    assert await page.get_by_role("tab", name="API keys").is_hidden()


async def test_admin_creates_a_key_shown_once(page: Any, base_url: str, console_keys) -> None:
    await sign_in(page, base_url, console_keys["admin"])
    await page.get_by_role("tab", name="API keys").click()
    await page.get_by_label("Name").fill("from-console")
    await page.get_by_role("button", name="Create key").click()
    created = page.locator("#new-key-value")
    await created.wait_for()
    key = await created.text_content()
    assert key and key.startswith("ef_read_")
    await page.get_by_role("cell", name="from-console").wait_for()
    await screenshot(page, "keys")
    await page.reload()  # the key is gone for good once the page is left
    assert key not in await page.content()


async def test_servers_panel_and_phone_width(page: Any, base_url: str, console_keys) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, base_url, console_keys["write"])
    await page.get_by_role("tab", name="Servers").click()
    await page.locator("#servers").get_by_text("Nothing here yet.").wait_for()
    await screenshot(page, "servers-phone")
