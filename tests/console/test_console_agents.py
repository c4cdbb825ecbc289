"""The console's agent flows end to end: a real `execflow serve` (in-process workers, the
offline model), real Chromium. Dispatch, watch the stream, approve and reject in the card,
and verify the resulting audit entry in the page."""

from __future__ import annotations

from typing import Any

import httpx

from tests.console.conftest import screenshot
from tests.console.test_console_e2e import sign_in


async def dispatch(page: Any, text: str) -> None:
    await page.get_by_role("tab", name="Chat").click()
    await page.get_by_label("Task", exact=True).fill(text)
    await page.get_by_role("button", name="Send").click()


async def test_read_only_task_streams_to_its_answer(page: Any, base_url: str, console_keys) -> None:
    await sign_in(page, base_url, console_keys["write"])
    await dispatch(page, "List all the servers we manage")
    conversation = page.locator("#conversation")
    await conversation.get_by_text("Routed to the").wait_for(timeout=60_000)
    await conversation.locator(".msg.tool", has_text="list_servers").wait_for(timeout=60_000)
    await conversation.get_by_text("Task succeeded.").wait_for(timeout=60_000)
    await screenshot(page, "chat-read-only")


async def test_quarantine_approved_in_the_card_then_verified(
    page: Any, base_url: str, console_keys
) -> None:
    await sign_in(page, base_url, console_keys["admin"])
    await dispatch(page, "Quarantine 203.0.113.45 for 6 hours, it is brute-forcing SSH")
    card = page.locator(".card.approval", has_text="quarantine_target")
    await card.wait_for(timeout=60_000)
    assert "203.0.113.45" in await card.locator("textarea").input_value()
    await screenshot(page, "approval-card")
    await card.get_by_role("button", name="Approve", exact=True).click()
    await card.get_by_text("Decision recorded: approve").wait_for()
    await page.locator("#conversation").get_by_text("Task succeeded.").wait_for(timeout=60_000)

    await page.get_by_role("tab", name="Quarantines").click()
    await page.locator("#quarantines").get_by_role("cell", name="203.0.113.45").wait_for()
    await screenshot(page, "quarantines")

    await page.get_by_role("tab", name="Audit log").click()
    await page.get_by_label("Action").fill("quarantine")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_function(  # the filtered table has replaced the unfiltered one
        """() => {
          const rows = [...document.querySelectorAll('#audit tbody tr')];
          return rows.length > 0 && rows.every((r) => r.children[2].textContent === 'quarantine');
        }"""
    )
    row = page.locator("#audit tr", has_text="203.0.113.45").first
    await row.get_by_role("button", name="Verify").click()
    await row.get_by_text("verified in this browser").wait_for(timeout=30_000)
    await screenshot(page, "audit-verified")


async def test_rejected_quarantine_never_happens(page: Any, base_url: str, console_keys) -> None:
    await sign_in(page, base_url, console_keys["admin"])
    await dispatch(page, "Please quarantine 198.51.100.77 for 2 hours")
    card = page.locator(".card.approval", has_text="quarantine_target")
    await card.wait_for(timeout=60_000)
    await card.get_by_role("button", name="Reject").click()
    await card.get_by_text("Decision recorded: reject").wait_for()
    await page.locator("#conversation").get_by_text("Task", exact=False).last.wait_for()
    headers = {"Authorization": f"Bearer {console_keys['admin']}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as api:
        for _ in range(100):  # wait (bounded) for the task to finish after the rejection
            tasks = (await api.get("/api/agents/tasks", params={"limit": 1})).json()["tasks"]
            if tasks and tasks[0]["status"] not in {"queued", "running", "awaiting_approval"}:
                break
            await page.wait_for_timeout(200)
        quarantines = (await api.get("/api/eshield/quarantine")).json()
    assert "198.51.100.77" not in str(quarantines)


async def test_read_key_sees_no_approve_buttons(page: Any, base_url: str, console_keys) -> None:
    headers = {"Authorization": f"Bearer {console_keys['write']}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers) as api:
        created = await api.post(
            "/api/agents/task", json={"task": "Quarantine 192.0.2.200 for 1 hour"}
        )
        task_id = created.json()["task_id"]
        for _ in range(300):  # bounded wait for the approval to be requested
            approvals = (await api.get("/api/agents/approvals")).json()["approvals"]
            if any(a["task_id"] == task_id for a in approvals):
                break
            await page.wait_for_timeout(200)
    await sign_in(page, base_url, console_keys["read"])
    await page.get_by_role("tab", name="Approvals").click()
    card = page.locator(".card.approval", has_text="quarantine_target").first
    await card.wait_for()
    assert await card.get_by_role("button", name="Approve", exact=True).count() == 0
    await card.get_by_text("Your key cannot decide approvals.").wait_for()
    await screenshot(page, "approvals-read-only")
