"""WEB-4: the pages behind the mailed links, in a real browser (headless Chromium driven by
Playwright), with and without JavaScript, checked by axe-core.

Run by the Rust test `browser::the_mailed_link_journey_works_in_a_real_browser`, which starts
`custode serve` and passes: CUSTODE_BASE (its address), CUSTODE_DATA_DIR (to read the Maildir
sink), CUSTODE_OPERATOR_KEY, CUSTODE_CHROMIUM (the browser) and CUSTODE_AXE (axe.min.js).
"""

import email
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

BASE = os.environ["CUSTODE_BASE"]
DATA_DIR = os.environ["CUSTODE_DATA_DIR"]
OPERATOR_KEY = os.environ["CUSTODE_OPERATOR_KEY"]
CHROMIUM = os.environ["CUSTODE_CHROMIUM"]
AXE = os.environ["CUSTODE_AXE"]


def api(method, path, body=None, token=None):
    request = urllib.request.Request(BASE + path, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(request, data) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode() or "null")


def mailbox(user_id, recovery_email, password):
    status, opened = api("POST", "/v1/admin/accounts", {"kind": "mailbox", "user_id": user_id, "plan": "pro", "contact_email": "titolare@example.it"}, OPERATOR_KEY)
    assert status == 201, (status, opened)
    temporary = opened["temporary_password"]
    status, session = api("POST", "/v1/sessions", {"user_id": user_id, "password": temporary})
    assert status == 201, (status, session)
    token = session["session_token"]
    status, _ = api("POST", "/v1/account/password", {"current_password": temporary, "new_password": password, "new_password_repeat": password}, token)
    assert status == 204, status
    status, session = api("POST", "/v1/sessions", {"user_id": user_id, "password": password})
    assert status == 201, status
    status, _ = api("PUT", "/v1/account/recovery-info", {"email": recovery_email}, session["session_token"])
    assert status == 200, status


def mailed_link(to, page):
    """The newest link to `page` in a mail to `to`, once it has arrived."""
    deadline = time.time() + 15
    while time.time() < deadline:
        for path in sorted(glob.glob(os.path.join(DATA_DIR, "mail", "new", "*")), key=os.path.getmtime, reverse=True):
            message = email.message_from_binary_file(open(path, "rb"))
            if message["To"] != to:
                continue
            for part in message.walk():
                if part.get_content_type() == "text/plain":
                    text = part.get_payload(decode=True).decode()
                    found = re.search(re.escape(BASE) + re.escape(page) + r"\?token=[A-Za-z0-9_-]{43}", text)
                    if found:
                        return found.group(0)
        time.sleep(0.1)
    raise AssertionError("no mail to %s with a link to %s" % (to, page))


def recovery_link(user_id, to):
    status, started = api("POST", "/v1/recovery", {"user_id": user_id, "captcha_token": "solved"})
    assert status == 200, (status, started)
    status, _ = api("POST", "/v1/recovery/%s/email" % started["recovery_id"], {})
    assert status in (200, 202), status
    return mailed_link(to, "/recovery")


def accessibility(page, name):
    page.add_script_tag(path=AXE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, "%s: %s" % (name, json.dumps([(v["id"], v["impact"], v["help"]) for v in bad], indent=1))


def fits(page, name):
    width = page.evaluate("() => document.scrollingElement.scrollWidth")
    assert width <= 360, "%s is %d pixels wide at 360" % (name, width)


def journey(browser, javascript, n):
    user_id = "browser%d@pec.example.it" % n
    to = "browser%d.recupero@example.org" % n
    old, new = "Tr4m-Colle!Verde%d" % n, "Girasole!Tramonto-%d7" % n
    mailbox(user_id, to, old)
    link = recovery_link(user_id, to)
    # Audited pages run with the CSP bypassed only so that axe-core can be injected.
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="it-IT", bypass_csp=not javascript)
    page = context.new_page()
    response = page.goto(link)
    assert response.status == 200, response.status
    assert page.get_attribute("html", "lang") == "it"
    assert page.locator("h1").inner_text() == "Scegli una nuova password"
    fits(page, "the recovery page")
    # By keyboard alone: the first field takes focus from the top of the page.
    page.focus("#user_id")
    page.keyboard.type(user_id)
    page.keyboard.press("Tab")
    page.keyboard.type(new)
    page.keyboard.press("Tab")
    page.keyboard.type(new + "x")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    # The refusal is named next to the field, in Italian, and the user id is kept.
    errors = page.locator("#new_password_repeat-errors")
    assert errors.count() == 1, page.content()
    assert "Le due password non coincidono." in errors.inner_text()
    assert page.input_value("#user_id") == user_id
    fits(page, "the refused form")
    if not javascript:
        context_axe = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True)
        audit = context_axe.new_page()
        audit.goto(link)
        accessibility(audit, "the recovery page")
        audit.fill("#user_id", user_id)
        audit.fill("#new_password", "abc")
        audit.fill("#new_password_repeat", "abc")
        with audit.expect_navigation():
            audit.click("button[type=submit]")
        accessibility(audit, "the refused form")
        context_axe.close()
    page.fill("#new_password", new)
    page.fill("#new_password_repeat", new)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/password-saved\?lang=it$"))
    assert page.locator("h1").inner_text() == "Password salvata"
    # The next login takes the new password, and only it.
    assert api("POST", "/v1/sessions", {"user_id": user_id, "password": new})[0] == 201
    assert api("POST", "/v1/sessions", {"user_id": user_id, "password": old})[0] == 401
    # The link works once.
    page.goto(link)
    page.fill("#user_id", user_id)
    page.fill("#new_password", new + "2")
    page.fill("#new_password_repeat", new + "2")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.locator("#form-error").is_visible()
    context.close()
    return user_id, new


def another_origin_is_refused(browser, user_id, password):
    """A form on another origin posting to the page changes nothing: the SameSite cookie is
    not sent, the token does not match."""
    to = "browser9.recupero@example.org"
    mailbox("browser9@pec.example.it", to, "Tr4m-Colle!Verde9")
    link = recovery_link("browser9@pec.example.it", to)
    token = link.split("token=")[1]
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)  # the victim has the page's cookie
    evil = context.new_page()
    evil.set_content(
        '<form method="post" action="%s/recovery">'
        '<input name="csrf" value="guess"><input name="token" value="%s">'
        '<input name="user_id" value="browser9@pec.example.it">'
        '<input name="new_password" value="Attacker!Pass-123"><input name="new_password_repeat" value="Attacker!Pass-123">'
        '<button>go</button></form>' % (BASE, token)
    )
    with evil.expect_navigation() as navigation:
        evil.click("button")
    assert navigation.value.status == 403, navigation.value.status
    assert api("POST", "/v1/sessions", {"user_id": "browser9@pec.example.it", "password": "Attacker!Pass-123"})[0] == 401
    assert api("POST", "/v1/sessions", {"user_id": "browser9@pec.example.it", "password": "Tr4m-Colle!Verde9"})[0] == 201
    context.close()


def english(browser):
    context = browser.new_context(locale="en-GB", java_script_enabled=False)
    page = context.new_page()
    response = page.goto(BASE + "/recovery")
    assert response.status == 400
    assert page.get_attribute("html", "lang") == "en"
    assert page.locator("h1").inner_text() == "Incomplete link"
    page.click("text=Italiano")
    assert page.get_attribute("html", "lang") == "it"
    context.close()


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        user_id, password = journey(browser, javascript=True, n=1)
        journey(browser, javascript=False, n=2)
        another_origin_is_refused(browser, user_id, password)
        english(browser)
        browser.close()
    print("browser journeys passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print("FAILED: %s" % error, file=sys.stderr)
        raise
