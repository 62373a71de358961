"""The agent desktop and the supervisor console in a real browser (Debian's chromium driven
by Playwright) against the real stack: a person logs in, goes ready, takes an offer, completes
it and the books count it; the supervisor moves an agent to another queue."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright, expect

from router.gateway.auth import Role
from router.gateway.roster import Profile
from router.routing.store import domain_stats

from ..conftest import eventually
from ._gateway import GatewayUnderTest, gw, request_contact

pytestmark = pytest.mark.integration
__all__ = ["gw"]
CHROMIUM = "/usr/bin/chromium"  # Debian's (`make tools`): `playwright install` cannot download


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make tools` installs it"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    pg = await context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    await context.close()
    assert errors == [], f"the page raised: {errors}"


async def test_an_agent_takes_a_contact_in_the_browser_and_the_books_count_it(
        gw: GatewayUnderTest, domain: str, page: Page, kafka_producer: AIOKafkaProducer) -> None:
    await gw.gateway.roster.put(domain, [_profile("web-1")], by="test")
    await page.goto(f"{gw.base}/?token={gw.token('web-1', domain)}")
    await expect(page.locator("#state-badge")).to_have_text("Not ready")
    assert "token=" not in page.url  # taken out of the address bar (history, referrers)
    await page.get_by_test_id("state-ready").click()
    await expect(page.locator("#state-badge")).to_have_text("Ready")
    cid = await request_contact(kafka_producer, gw.settings, domain, "refunds", priority=2)
    offer = page.get_by_test_id("offer")
    await expect(offer).to_be_visible(timeout=15_000)
    await expect(offer).to_contain_text("refunds")
    await expect(offer.locator(".countdown")).to_contain_text("expires in")
    await page.get_by_test_id("accept").click()
    active = page.get_by_test_id("active-contact")
    await expect(active).to_have_count(1, timeout=10_000)
    await expect(active).to_contain_text(cid)
    await expect(page.get_by_test_id("offer")).to_have_count(0)
    await active.locator(".wrap-up").select_option("follow_up")
    await page.get_by_test_id("complete").click()
    await expect(page.get_by_test_id("active-contact")).to_have_count(0, timeout=10_000)
    stats = await domain_stats(gw.gateway.redis, domain)
    assert (stats["answered"], stats["completed"]) == (1, 1)
    await expect(page.locator('[data-figure="completed"]')).to_have_text("1", timeout=10_000)
    await expect(page.locator('[data-figure="answered"]')).to_have_text("1")


async def test_the_desktop_works_from_the_keyboard_and_in_chinese(
        gw: GatewayUnderTest, domain: str, page: Page, kafka_producer: AIOKafkaProducer) -> None:
    await gw.gateway.roster.put(domain, [_profile("web-2")], by="test")
    await page.goto(f"{gw.base}/?token={gw.token('web-2', domain)}")
    await expect(page.locator("#state-badge")).to_have_text("Not ready")
    await page.locator("#lang").click()
    await expect(page.get_by_test_id("state-ready")).to_have_text("就绪")
    await page.keyboard.press("r")
    await expect(page.locator("#state-badge")).to_have_text("就绪")
    await request_contact(kafka_producer, gw.settings, domain, "refunds")
    await expect(page.get_by_test_id("offer")).to_be_visible(timeout=15_000)
    await expect(page.get_by_test_id("accept")).to_be_focused()  # Enter takes the offer
    await page.keyboard.press("Enter")
    await expect(page.get_by_test_id("active-contact")).to_have_count(1, timeout=10_000)
    await page.keyboard.press("c")
    await expect(page.get_by_test_id("active-contact")).to_have_count(0, timeout=10_000)
    await eventually(lambda: _completed(gw, domain), timeout_s=10)


async def test_the_supervisor_changes_skills_and_the_next_contact_of_that_skill_follows(
        gw: GatewayUnderTest, domain: str, page: Page, kafka_producer: AIOKafkaProducer) -> None:
    agent = await gw.agent("a-sec", domain, {"zh": 1, "orders": 1})
    await page.goto(f"{gw.base}/supervisor?token={gw.token('sup-1', domain, Role.SUPERVISOR)}")
    row = page.locator('[data-agent-row="a-sec"]')
    await expect(row).to_contain_text("Ready", timeout=10_000)
    await expect(page.locator("#queues tr")).to_have_count(7)  # the shipped policy's queues
    await expect(page.locator('#queues tr[data-queue="security"]')).to_contain_text("45 s")
    await expect(page.get_by_test_id("rating")).to_have_text(
        "Service rating: unrated, too few contacts (0 contacts, today)")
    skills = page.get_by_test_id("skills-a-sec")
    await skills.fill("zh=1,orders=1,security=2")
    await page.get_by_test_id("save-a-sec").click()
    await expect(page.locator("#toast")).to_contain_text("Saved")
    await expect(row).to_contain_text("security", timeout=10_000)  # its queues, from Redis
    cid = await request_contact(kafka_producer, gw.settings, domain, "security")
    offer = await agent.until("offer", contact_id=cid)
    assert offer["queue"] == "security"
    await expect(page.locator('#queues tr[data-queue="security"]')).to_be_visible()
    await row.get_by_role("button", name="Not ready").click()
    await expect(row).to_contain_text("Not ready", timeout=10_000)
    assert (await agent.until("state", state="not_ready"))["state"] == "not_ready"


async def test_the_console_refuses_an_agent_token(gw: GatewayUnderTest, domain: str,
                                                  page: Page) -> None:
    await gw.gateway.roster.put(domain, [_profile("web-3")], by="test")
    await page.goto(f"{gw.base}/supervisor?token={gw.token('web-3', domain)}")
    await expect(page.locator("#refused")).to_have_text("This console needs a supervisor token.")
    await expect(page.locator("#console")).to_be_hidden()


def _profile(agent_id: str) -> Profile:
    return Profile(agent_id, {"zh": 1, "refunds": 1}, {"chat": 2}, f"Web {agent_id}")


async def _completed(gw: GatewayUnderTest, domain: str) -> bool:
    return (await domain_stats(gw.gateway.redis, domain))["completed"] == 1
