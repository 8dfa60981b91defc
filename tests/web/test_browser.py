"""The whole sign-in journey in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import browser_tab
from tests.web.conftest import LiveServer

NEW_PASSWORD = "my-own-long-password"
SHOTS = "/tmp"


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    with browser_tab(
        browser, live_server.url, 15_000, permissions=["clipboard-read", "clipboard-write"]
    ) as tab:
        yield tab


def test_first_admin_signs_in_enrols_totp_and_creates_a_key(
    page: Page, live_server: LiveServer
) -> None:
    # 1. The one-time password printed at bootstrap works once, then must be replaced.
    page.goto("/")
    assert page.url.endswith("/login")
    page.get_by_label("Username").fill(live_server.admin)
    page.get_by_label("Password").fill(live_server.one_time_password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/account/password")
    expect(page.get_by_text("Choose your own password to continue")).to_be_visible()
    page.get_by_label("Current password").fill(live_server.one_time_password)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url(live_server.url + "/")
    expect(page.get_by_text("Your password was changed.")).to_be_visible()

    # 2. Enrol TOTP: read the secret off the page, as a person would type it into an app.
    page.get_by_role("link", name="Account").click()
    page.get_by_role("link", name="Set up two-factor sign-in").click()
    page.get_by_role("button", name="Set up two-factor sign-in").click()
    secret_box = page.locator("#totp-secret")
    expect(secret_box).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()
    page.screenshot(path=f"{SHOTS}/agora-totp.png", full_page=True)
    totp = pyotp.TOTP(secret_box.inner_text().replace(" ", ""))
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    page.wait_for_url("**/account")
    expect(page.get_by_text("Two-factor sign-in is on.")).to_be_visible()

    # 3. Sign out, then in again with the password and a code of the next time step (the
    #    current one was spent on enrolment and cannot be replayed).
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.get_by_label("Username").fill(live_server.admin)
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/login/totp*")
    page.get_by_label("Code").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url(live_server.url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.get_by_text("Current project")).to_be_visible()
    page.screenshot(path=f"{SHOTS}/agora-dashboard.png", full_page=True)

    # 4. Create an API key: its secret is shown once, works, and is gone from the list.
    page.get_by_role("navigation").get_by_role("link", name="API keys").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").input_value()
    assert secret.startswith("agora_")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied ✓")).to_be_visible()
    page.screenshot(path=f"{SHOTS}/agora-key.png", full_page=True)
    me = httpx.get(live_server.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["user"]["username"] == live_server.admin
    page.get_by_role("link", name="Done").click()
    expect(page.get_by_role("cell", name="laptop")).to_be_visible()
    assert secret not in page.content()

    # 5. Revoking asks first.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row", name="laptop").get_by_role("button", name="Revoke").click()
    expect(page.get_by_text("The key laptop was revoked.")).to_be_visible()
