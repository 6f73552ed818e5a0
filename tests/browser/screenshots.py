"""The README's screenshots (docs/pages/*.png), taken from a running `custode serve`.

    CUSTODE_BASE=http://127.0.0.1:8080 CUSTODE_OPERATOR_KEY=… CUSTODE_CHROMIUM=/usr/bin/chromium \
        python tests/browser/screenshots.py docs/pages

Opens a demo mailbox, walks its first login and takes each main page at 390 pixels wide.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("CUSTODE_DATA_DIR", "")
os.environ.setdefault("CUSTODE_AXE", "")

from pages import BASE, CHROMIUM, OPERATOR_KEY, api, fresh_code  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402


def main(out):
    os.makedirs(out, exist_ok=True)
    user_id = "mario.rossi@pec.example.it"
    status, opened = api("POST", "/v1/admin/accounts", {"kind": "mailbox", "user_id": user_id, "plan": "pro", "contact_email": "mario.rossi@example.it", "language": "en"}, OPERATOR_KEY)
    assert status == 201, (status, opened)
    password = "Girasole!Tramonto-77"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-GB").new_page()

        def shot(name):
            page.screenshot(path=os.path.join(out, name + ".png"), full_page=True)

        page.goto(BASE + "/login?lang=en")
        shot("login")
        page.fill("#user_id", user_id)
        page.fill("#password", opened["temporary_password"])
        with page.expect_navigation():
            page.click("main button[type=submit]")
        page.fill("#current_password", opened["temporary_password"])
        page.type("#new_password", password)
        page.fill("#new_password_repeat", password)
        page.wait_for_timeout(800)
        shot("password")
        with page.expect_navigation():
            page.click("main form button[type=submit]")
        page.fill("#user_id", user_id)
        page.fill("#password", password)
        with page.expect_navigation():
            page.click("main button[type=submit]")
        page.fill("#email", "mario.recupero@example.org")
        with page.expect_navigation():
            page.click("form:has(#email) button[type=submit]")
        page.goto(BASE + "/account/two-factor")
        with page.expect_navigation():
            page.click("form:has(#channel-app) button[type=submit]")
        shot("two-factor")
        uri = page.get_attribute("#otpauth", "href")
        page.fill("#confirm-code", fresh_code(uri))
        with page.expect_navigation():
            page.click("form:has(#confirm-code) button[type=submit]")
        page.goto(BASE + "/account/app-passwords")
        with page.expect_navigation():
            page.click("form:has(#create-scope) button[type=submit]")
        shot("app-passwords")
        page.goto(BASE + "/account")
        shot("account")
        page.goto(BASE + "/account/access-history")
        shot("access-history")
        page.context.clear_cookies()
        page.goto(BASE + "/recover?lang=en")
        shot("recover")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/pages")
