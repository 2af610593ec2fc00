"""The setup page in Debian's headless chromium (selenium, the system chromedriver; nothing is
downloaded): an unpaired browser is refused, a press of the stdin button alone does not pair it
(the device needs a token: a press is still a person's try at a call), the 5 s hold and then a
press do; pasting the auth record makes the app refresh and the status shows the time left; a
form without its CSRF token and a replayed pairing code are refused; no page holds a token.
Screenshots of the pairing page and the paired status page go to the test's directory, or to the
folder named by SESAME_PI_SCREENSHOTS (`SESAME_PI_SCREENSHOTS=app/docs` renews the README's
pictures).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from sesame_pi.states import State
from support.setup_rig import EMAIL, SetupRig, auth_record

SHOTS_ENV = "SESAME_PI_SCREENSHOTS"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=900,1300", "--force-device-scale-factor=1",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def click(driver: webdriver.Chrome, element_id: str) -> None:
    """Click a submit button and wait until the answer has replaced the page."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, element_id).click()
    WebDriverWait(driver, 10).until(lambda _driver: replaced(page))


def replaced(element: WebElement) -> bool:
    """The page this element belonged to is gone. Mid-navigation chromedriver may answer with
    a generic error ("Node ... does not belong to the document") rather than a stale one."""
    try:
        element.is_enabled()
    except WebDriverException:
        return True
    return False


def shoot(driver: webdriver.Chrome, name: str, folder: Path) -> None:
    """A PNG of the whole page (the window grown to the document's height)."""
    driver.set_window_size(900, 400)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(900, int(height) + 120)
    folder = Path(os.environ.get(SHOTS_ENV) or folder)
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / name))
    driver.set_window_size(900, 1300)


def post_form(driver: webdriver.Chrome, action: str, fields: dict[str, str]) -> None:
    """Submit a same-origin form built in the page (as a replaying or careless client would)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.execute_script(
        """
        const [action, fields] = arguments;
        const form = document.createElement('form');
        form.method = 'post'; form.action = action;
        for (const [name, value] of Object.entries(fields)) {
          const input = document.createElement('input');
          input.type = 'hidden'; input.name = name; input.value = value;
          form.appendChild(input);
        }
        document.body.appendChild(form); form.submit();
        """,
        action,
        fields,
    )
    WebDriverWait(driver, 10).until(lambda _driver: replaced(page))


def test_pair_by_the_hold_and_a_press_hand_over_the_record_and_see_the_time_left(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    pages: list[str] = []

    def seen() -> str:
        pages.append(browser.page_source)
        return pages[-1]

    with SetupRig(tmp_path, token=None, mode="auto") as rig:
        rig.wait_state(State.NEEDS_TOKEN)
        browser.get(rig.url + "/")
        assert "This browser is not paired" in seen() and not browser.find_elements(By.ID, "state")
        browser.get(rig.url + "/api/status")
        assert "pair this browser first" in seen()

        browser.get(rig.url + "/")
        click(browser, "start-pairing")
        code = text(browser, "pairing-code")
        assert re.fullmatch(r"[A-Z2-9]{6}", code)
        csrf = browser.find_element(By.NAME, "csrf").get_attribute("value")
        shoot(browser, "setup-pairing.png", tmp_path)
        click(browser, "finish-pairing")
        assert "has not been pressed yet" in text(browser, "notice")
        step = text(browser, "pairing-step")
        assert "Hold the device's button for 5 seconds" in step and "press it once" in step

        rig.press()  # a press alone (someone tries a call) confirms nothing
        time.sleep(0.2)
        click(browser, "finish-pairing")
        assert "has not been pressed yet" in text(browser, "notice")

        rig.setup_hold()  # the owner holds the device's button, then presses it
        time.sleep(1.5)
        rig.press()
        time.sleep(0.2)
        click(browser, "finish-pairing")
        assert text(browser, "state") == "needs_token"
        assert text(browser, "token-left") == "no token yet"
        seen()

        # The same pairing code again (a replay) is refused, and pairs nobody.
        post_form(browser, "/pair/finish", {"code": code, "csrf": str(csrf)})
        assert "used already" in text(browser, "notice")
        browser.get(rig.url + "/")

        # A form without its CSRF token is refused.
        browser.execute_script("document.querySelector('#login input[name=csrf]').remove()")
        browser.find_element(By.ID, "record").send_keys(auth_record())
        click(browser, "login-submit")
        assert "check token is missing or wrong" in text(browser, "notice")
        assert rig.issuer.issued == []

        browser.get(rig.url + "/")
        field = browser.find_element(By.ID, "record")
        browser.execute_script("arguments[0].value = arguments[1]", field, auth_record())
        click(browser, "login-submit")
        notice = text(browser, "notice")
        assert f"Signed in for {EMAIL}" in notice and re.search(r"(59|60) min left", notice)
        assert len(rig.issuer.issued) == 1
        seen()

        rig.wait_state(State.IDLE)  # the link came up with the new ID token
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            browser.get(rig.url + "/")
            if re.fullmatch(r"(59|60) min left", text(browser, "token-left")):
                break
            time.sleep(0.5)
        assert re.fullmatch(r"(59|60) min left", text(browser, "token-left"))
        assert text(browser, "state") == "idle" and text(browser, "link") == "up"
        assert text(browser, "token-account") == EMAIL
        click(browser, "test-sound")
        assert "Played a test sound" in text(browser, "notice")
        browser.get(rig.url + "/")
        shoot(browser, "setup-status.png", tmp_path)
        seen()

        cookies = {c["name"]: c for c in browser.get_cookies()}
        session = cookies["sesame_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"

        secrets = [*rig.secrets(), rig.token_file.read_text().strip()]
        secrets.append(rig.token_file.with_name("refresh_token").read_text().strip())
        for page in pages:
            for secret in secrets:
                assert secret not in page, "a page holds a token"
