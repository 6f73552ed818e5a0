"""WEB-4: every page, in a real browser (headless Chromium driven by Playwright), with and
without JavaScript, at 360 pixels, checked by axe-core: the mailed recovery link, opening →
first login → required actions, the live strength meter, two-step activation with a code
computed from the QR's URI, an app password shown once, collaborators and their mailed link,
the forgotten-password journey, an identity's contacts and suspension, the access history with
its filters and paging, and forms from another origin or without their token refused.

Run by the Rust test `browser::the_mailed_link_journey_works_in_a_real_browser`, which starts
`custode serve` and passes: CUSTODE_BASE (its address), CUSTODE_DATA_DIR (to read the Maildir
sink), CUSTODE_OPERATOR_KEY, CUSTODE_CHROMIUM (the browser) and CUSTODE_AXE (axe.min.js).
"""

import base64
import email
import glob
import hashlib
import hmac
import struct
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
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



def totp(uri, at=None, step_offset=0):
    """RFC 6238's code (SHA-1, 6 digits, 30 s) of an otpauth URI, computed here."""
    query = urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)
    secret = query["secret"][0]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((at or time.time()) // 30) + step_offset
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1000000)


USED_STEPS = set()


def fresh_code(uri):
    """A code valid now (±1 step) of a later step than any used: a used step, and any before
    it, is a replay."""
    while True:
        now = int(time.time() // 30)
        step = max(now - 1, max(USED_STEPS, default=now - 2) + 1)
        if step <= now + 1:
            USED_STEPS.add(step)
            return totp(uri, at=step * 30 + 1)
        time.sleep(max(0.5, (step - 1) * 30 - time.time() + 0.5))


def last_sms_code(to_digits):
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            lines = open(os.path.join(DATA_DIR, "sms.jsonl")).read().splitlines()
        except FileNotFoundError:
            lines = []
        for line in reversed(lines):
            if to_digits in line:
                found = re.search(r"(?<![0-9])[0-9]{6}(?![0-9])", json.loads(line)["text"])
                if found:
                    return found.group(0)
        time.sleep(0.1)
    raise AssertionError("no SMS to %s" % to_digits)


PAGES_AUDITED = set()


def check(page, name):
    """Every page: its language declared, fits 360 pixels, no serious axe-core violation
    (audited once per page name: the same HTML, in a context where the CSP lets axe-core in)."""
    assert page.get_attribute("html", "lang") in ("it", "en"), name
    if (page.viewport_size or {}).get("width") == 360:
        fits(page, name)
    if name not in PAGES_AUDITED:
        PAGES_AUDITED.add(name)
        audit = AUDIT_CONTEXT["page"]
        audit.goto(BASE + "/healthz")
        audit.set_content(page.content())
        accessibility(audit, name)


AUDIT_CONTEXT = {"page": None}


def wait_until(condition, what, seconds=10):
    """Polls `condition` (the pages' CSP forbids evaluated script, so no wait_for_function)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("waited in vain for " + what)


def submit(page, form_selector):
    with page.expect_navigation():
        page.click(form_selector + " button[type=submit]")


def login_page(page, user_id, password, otp=None):
    page.goto(BASE + "/login?lang=en")
    check(page, "login")
    page.fill("#user_id", user_id)
    page.fill("#password", password)
    if otp is not None:
        page.fill("#otp", otp)
    with page.expect_navigation():
        page.click("main button[type=submit]")


def opening_journey(browser, javascript, n):
    """Opening → first login → required actions (a new password, with the meter; recovery
    information) → the account page → logout → the next login."""
    user_id = "pagine%d@pec.example.it" % n
    status, opened = api("POST", "/v1/admin/accounts", {"kind": "mailbox", "user_id": user_id, "plan": "pro", "contact_email": "titolare%d@example.it" % n}, OPERATOR_KEY)
    assert status == 201, (status, opened)
    temporary = opened["temporary_password"]
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="en-GB")
    page = context.new_page()
    login_page(page, user_id, "wrong-" + temporary)
    assert page.locator("#form-error").is_visible(), page.content()
    assert page.input_value("#user_id") == user_id
    login_page(page, user_id, temporary)
    # The first required action: the temporary password goes.
    assert page.url.startswith(BASE + "/account/password"), page.url
    check(page, "password")
    new = "Girasole!Pagine-%d7" % n
    page.fill("#current_password", temporary)
    if javascript:
        # PW-3: the meter moves as the holder types, and the rules tick off.
        page.type("#new_password", "abc")
        wait_until(lambda: page.get_attribute('[data-rule="PW-1.min_length"]', "data-met") == "no", "the meter's rules")
        assert page.locator("#strength-label").inner_text() in ("very weak", "weak")
        page.fill("#new_password", "")
        page.type("#new_password", new)
        wait_until(lambda: page.locator("#strength-label").inner_text() in ("good", "strong"), "the meter's score")
        assert page.locator('[data-rule="PW-1.min_length"]').get_attribute("data-met") == "yes"
        page.fill("#new_password", "")
    page.fill("#new_password", "short")
    page.fill("#new_password_repeat", "short")
    submit(page, "form[action='/account/password']")
    errors = page.locator("#new_password-errors")
    assert errors.count() == 1, page.content()
    check(page, "password refused")
    page.fill("#current_password", temporary)
    page.fill("#new_password", new)
    page.fill("#new_password_repeat", new)
    submit(page, "form[action='/account/password']")
    # PW-4: every session ends; the holder logs in again with the new password.
    assert "/login" in page.url and page.locator("#notice").is_visible(), page.content()
    login_page(page, user_id, new)
    assert page.url.startswith(BASE + "/account/recovery-info"), page.url
    # Then recovery information, from the account page's list of what to do.
    page.goto(BASE + "/account")
    check(page, "account")
    assert page.locator(".required a").count() >= 1, (page.url, page.content())
    with page.expect_navigation():
        page.click(".required a >> nth=0")
    assert page.url.startswith(BASE + "/account/recovery-info"), page.url
    check(page, "recovery-info")
    page.fill("#email", "pagine%d.recupero@example.org" % n)
    page.select_option("#suggested_question", index=1)
    page.fill("#security_answer", "Fido")
    page.fill("#security_answer_repeat", "Fida")
    submit(page, "form:has(#security_answer)")
    assert page.locator("#save-security_answer_repeat-errors, #security_answer_repeat-errors").count() >= 1, page.content()
    page.fill("#email", "pagine%d.recupero@example.org" % n)
    page.fill("#mobile", "347 555 00%02d" % n)
    page.select_option("#suggested_question", index=1)
    page.fill("#security_answer", "Fido")
    page.fill("#security_answer_repeat", "Fido")
    submit(page, "form:has(#security_answer)")
    assert page.locator("#notice").is_visible(), page.content()
    summary = page.locator("#recovery-summary").inner_text()
    assert ".org" in summary and "example.org" not in summary, summary  # masked (RI-3)
    page.goto(BASE + "/account")
    assert page.locator(".required").count() == 0, page.content()
    assert page.locator("#user-id").inner_text() == user_id
    # Logout ends the session: the account page then sends to the login. `/logout` itself
    # only offers the button.
    page.goto(BASE + "/logout")
    check(page, "logout")
    with page.expect_navigation():
        page.click("#logout-confirm")
    assert "/login" in page.url
    assert page.locator("#notice").is_visible()
    page.goto(BASE + "/account")
    assert "/login" in page.url, page.url
    login_page(page, user_id, new)
    assert page.url.startswith(BASE + "/account"), page.url
    context.close()
    return user_id, new


def two_factor_journey(browser, javascript, user_id, password):
    """Two-step activation with a code computed from the QR's URI; a replayed code refused; the
    next login asks for the second factor."""
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="en-GB")
    page = context.new_page()
    login_page(page, user_id, password)
    # RC-6: after a recovery the holder confirms the recovery information first.
    assert page.url.startswith(BASE + "/account/recovery-info"), page.url
    with page.expect_navigation():
        page.click("#confirm-as-is")
    assert page.locator("#notice").is_visible(), page.content()
    assert page.locator("#confirm-as-is").count() == 0
    page.goto(BASE + "/account/two-factor")
    check(page, "two-factor")
    submit(page, "form:has(#channel-app)")
    assert page.locator(".qr svg").count() == 1, page.content()
    check(page, "two-factor enrolment")
    uri = page.get_attribute("#otpauth", "href")
    assert uri.startswith("otpauth://totp/"), uri
    assert page.locator("#totp-secret").inner_text() == urllib.parse.parse_qs(urllib.parse.urlparse(uri).query)["secret"][0]
    page.fill("#confirm-code", "000000" if totp(uri) != "000000" else "111111")
    submit(page, "form:has(#confirm-code)")
    assert page.locator("#form-error").is_visible(), page.content()
    assert page.locator(".qr svg").count() == 1, "the QR code stays for a retry"
    code = fresh_code(uri)
    page.fill("#confirm-code", code)
    submit(page, "form:has(#confirm-code)")
    assert page.get_attribute("#two-factor-state", "data-active") == "yes", page.content()
    # A reload shows no secret any more.
    page.reload()
    assert page.locator("#totp-secret").count() == 0
    with page.expect_navigation():
        page.click("#logout")
    # The next login needs the code: first asked for, then given (the next step's, as the
    # confirming one was used).
    login_page(page, user_id, password)
    assert page.locator("#otp").count() == 1, page.content()
    check(page, "login second factor")
    page.fill("#password", password)
    page.fill("#otp", code)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert page.locator("#form-error").is_visible(), "a replayed code is refused"
    page.fill("#password", password)
    page.fill("#otp", fresh_code(uri))
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert page.url.startswith(BASE + "/account"), page.url
    context.close()
    return uri


def app_password_journey(browser, javascript, user_id, password, uri):
    """An app password shown once and gone on reload; allowed by the mail servers' check;
    regenerated; deactivated. Collaborators: created, their link mailed, reset, deactivated."""
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="it-IT")
    page = context.new_page()
    page.goto(BASE + "/login?lang=it")
    page.fill("#user_id", user_id)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    page.fill("#password", password)
    page.fill("#otp", fresh_code(uri))
    with page.expect_navigation():
        page.click("main button[type=submit]")
    assert page.url.startswith(BASE + "/account"), (page.url, page.locator("#form-error").inner_text())
    page.goto(BASE + "/account/app-passwords")
    check(page, "app-passwords")
    page.select_option("#create-scope", "mailbox")
    submit(page, "form:has(#create-scope)")
    shown = page.locator("#shown-password strong").inner_text()
    assert re.fullmatch(r"[a-km-z]{5}(-[a-km-z]{5}){3}", shown), shown
    status, allowed = api("POST", "/v1/auth/app-password", {"user_id": user_id, "scope": "mailbox", "password": shown, "protocol": "imap"}, OPERATOR_KEY)
    assert status == 200 and allowed.get("result") == "allow", (status, allowed)
    page.reload()
    assert page.locator("#shown-password").count() == 0, "shown once"
    assert shown not in page.content()
    submit(page, "form:has(button[value='regenerate-mailbox'])")
    again = page.locator("#shown-password strong").inner_text()
    assert again != shown
    status, denied = api("POST", "/v1/auth/app-password", {"user_id": user_id, "scope": "mailbox", "password": shown, "protocol": "imap"}, OPERATOR_KEY)
    assert denied.get("result") != "allow", (status, denied)
    submit(page, "form:has(button[value='postpone-mailbox'])")
    assert page.locator("#form-error").is_visible(), "too early to postpone"
    submit(page, "form:has(button[value='deactivate-mailbox'])")
    assert page.locator("#app-passwords").count() == 0, page.content()
    # Collaborators.
    page.goto(BASE + "/account/collaborators")
    check(page, "collaborators")
    reference = "collab.%s" % user_id.replace("@", ".at.")
    reference = reference[:40] + "@example.org"
    page.fill("#create-name", "Anna Verdi")
    page.fill("#create-reference_email", "nope")
    submit(page, "form:has(#create-name)")
    assert page.locator("#create-reference_email-errors").count() == 1, page.content()
    page.fill("#create-name", "Anna Verdi")
    page.fill("#create-reference_email", reference)
    page.check("#permission-mail_programs")
    submit(page, "form:has(#create-name)")
    created = page.locator("#created-user-id").inner_text()
    assert created, page.content()
    link = mailed_link(reference, "/collaborator-password")
    other = context.new_page()
    other.goto(link)
    check(other, "collaborator-password")
    collaborator_password = "Collabora!Verde-77"
    other.fill("#new_password", collaborator_password)
    other.fill("#new_password_repeat", collaborator_password)
    with other.expect_navigation():
        other.click("button[type=submit]")
    assert "/password-saved" in other.url
    check(other, "password-saved")
    assert api("POST", "/v1/sessions", {"user_id": created, "password": collaborator_password})[0] == 201
    page.goto(BASE + "/account/collaborators")
    submit(page, "#collaborators form:has(input[value='reset'])")
    assert page.locator("#notice").is_visible(), page.content()
    assert api("POST", "/v1/sessions", {"user_id": created, "password": collaborator_password})[0] in (401, 403)
    submit(page, "#collaborators form:has(input[value='deactivate'])")
    assert page.locator("#collaborators form").count() == 0, page.content()
    # The access history: filters and paging.
    for i in range(25):
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60 * (i + 1)))
        status, problem = api("POST", "/v1/admin/access-events", {"user_id": user_id, "service": "sp.example.it", "outcome": "success", "client_ip": "192.0.2.%d" % (i + 1), "at": at}, OPERATOR_KEY)
        assert status in (200, 201, 202, 204), (status, problem)
    page.goto(BASE + "/account/access-history")
    check(page, "access-history")
    assert int(page.locator("#history-total").inner_text()) >= 25
    assert page.locator("#history tbody tr").count() == 20
    with page.expect_navigation():
        page.click("#next-page")
    assert page.locator("#history tbody tr").count() >= 1
    page.goto(BASE + "/account/access-history")
    page.select_option("#outcome", "failure")
    with page.expect_navigation():
        page.click("form.filters button")
    rows = page.locator("#history tbody tr")
    for i in range(rows.count()):
        assert "fallito" in rows.nth(i).inner_text(), rows.nth(i).inner_text()
    assert rows.count() >= 1, "the wrong password and the replayed code are there"
    page.fill("#from", "2030-01-02")
    page.fill("#to", "2030-01-01")
    with page.expect_navigation() as navigation:
        page.click("form.filters button")
    assert navigation.value.status == 422, navigation.value.status
    assert page.locator("#form-error").is_visible()
    context.close()


def recover_journey(browser, javascript, user_id, n):
    """The forgotten password: user id and captcha, the masked methods, the question (with
    script) or an SMS code (without), a new password, the next login."""
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="en-GB")
    page = context.new_page()
    page.goto(BASE + "/recover")
    check(page, "recover")
    page.fill("#user_id", user_id)
    submit(page, "form")
    assert page.locator("#form-error").is_visible(), "the captcha is needed"
    page.fill("#user_id", user_id)
    page.check("#captcha")
    submit(page, "form")
    check(page, "recover methods")
    assert page.locator("#method-email").is_visible()
    if javascript:
        with page.expect_navigation():
            page.click("#method-question")
        check(page, "recover question")
        page.fill("#answer", "Rex")
        submit(page, "form")
        assert page.locator("#form-error").is_visible()
        page.fill("#answer", " fido ")
        submit(page, "form")
    else:
        assert "**" in page.locator("#method-sms").inner_text(), "the mobile is masked"
        with page.expect_navigation():
            page.click("#method-sms")
        check(page, "recover code")
        page.fill("#code", "000000")
        submit(page, "form")
        assert page.locator("#form-error").is_visible()
        page.fill("#code", last_sms_code("55500%02d" % n))
        submit(page, "form")
    assert page.locator("#new_password").count() == 1, page.content()
    assert page.input_value("#user_id") == user_id
    # The reset token came in this answer: the language switch does not put it in an address.
    assert "token=" not in page.get_attribute("header nav a", "href")
    # Fixed, not drawn from the clock: a clock-made password ("…-1119") could break PW-1's
    # three-in-a-row rule and be refused, failing this journey about once in thirty runs.
    new = "Ritrovata!Pass-%d7" % n
    page.fill("#new_password", new)
    page.fill("#new_password_repeat", new)
    with page.expect_navigation():
        page.click("main button[type=submit]")
    error = page.locator("#form-error")
    assert "/password-saved" in page.url, (page.url, error.inner_text() if error.count() else None)
    status, session = api("POST", "/v1/sessions", {"user_id": user_id, "password": new})
    assert status == 201, (status, session)
    assert "confirm_recovery_info" in session["required_actions"]
    context.close()
    return new


def identity_journey(browser, javascript, n):
    """An identity's contacts, document and self-suspension (SC-2, SC-3, SC-6)."""
    user_id = "identita%d" % n
    mobile = "347 111 22%02d" % n
    status, opened = api("POST", "/v1/admin/accounts", {"kind": "identity", "user_id": user_id, "name": "Mario Bianchi", "language": "it", "contact_mobile": mobile, "contact_email": "mario%d@example.it" % n, "fiscal_code": "NRIFNC77A41F205X"}, OPERATOR_KEY)
    assert status == 201, (status, opened)
    temporary = opened["temporary_password"]
    password = "Tr4m-Colle!Verde%d" % n
    status, session = api("POST", "/v1/sessions", {"user_id": user_id, "password": temporary})
    assert status == 201
    assert api("POST", "/v1/account/password", {"current_password": temporary, "new_password": password, "new_password_repeat": password}, session["session_token"])[0] == 204
    status, session = api("POST", "/v1/sessions", {"user_id": user_id, "password": password})
    assert api("PUT", "/v1/account/recovery-info", {"email": "id%d@example.org" % n}, session["session_token"])[0] == 200
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 360, "height": 740}, locale="it-IT")
    page = context.new_page()
    login_page(page, user_id, password)
    page.goto(BASE + "/account")
    check(page, "account identity")
    assert "NRIFNC77A41F205X" in page.content()
    page.goto(BASE + "/account/contacts")
    check(page, "contacts")
    page.fill("#document-number", "CA12345AB")
    page.fill("#document-expires_on", "2035-06-30")
    submit(page, "form:has(#document-number)")
    assert page.locator("#document-on-file").is_visible(), page.content()
    page.goto(BASE + "/account/suspension")
    check(page, "suspension")
    page.fill("#suspend-days", "40")
    page.fill("#suspend-otp", "123456")
    submit(page, "form:has(#suspend-days)")
    assert page.locator("#form-error").is_visible(), page.content()
    submit(page, "form:has(input[value='send_code'])")
    assert page.locator("#notice").is_visible(), page.content()
    code = last_sms_code(mobile.replace(" ", "")[-4:])
    page.fill("#suspend-days", "3")
    page.fill("#suspend-otp", code)
    submit(page, "form:has(#suspend-days)")
    assert "/login" in page.url, page.url
    login_page(page, user_id, password)
    assert page.locator("#form-error").is_visible(), "a suspended identity cannot log in"
    context.close()


def refused_without_token(browser, user_id, password):
    """A section's form posted without its CSRF token, or from another origin, changes
    nothing."""
    context = browser.new_context()
    page = context.new_page()
    login_page(page, user_id, password)
    page.goto(BASE + "/account/password")
    evil = context.new_page()
    evil.set_content(
        '<form method="post" action="%s/account/password">'
        '<input name="action" value="change"><input name="current_password" value="%s">'
        '<input name="new_password" value="Attacker!Pass-123"><input name="new_password_repeat" value="Attacker!Pass-123">'
        '<button>go</button></form>' % (BASE, password)
    )
    with evil.expect_navigation() as navigation:
        evil.click("button")
    assert navigation.value.status == 403, navigation.value.status
    assert api("POST", "/v1/sessions", {"user_id": user_id, "password": "Attacker!Pass-123"})[0] == 401
    context.close()


def main():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        audit_context = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True, java_script_enabled=True)
        AUDIT_CONTEXT["page"] = audit_context.new_page()
        user_id, password = journey(browser, javascript=True, n=1)
        journey(browser, javascript=False, n=2)
        another_origin_is_refused(browser, user_id, password)
        english(browser)
        for n, javascript in ((3, True), (4, False)):
            holder, holder_password = opening_journey(browser, javascript, n)
            if n == 3:
                refused_without_token(browser, holder, holder_password)
            holder_password = recover_journey(browser, javascript, holder, n)
            uri = two_factor_journey(browser, javascript, holder, holder_password)
            app_password_journey(browser, javascript, holder, holder_password, uri)
            identity_journey(browser, javascript, n)
        audit_context.close()
        browser.close()
    print("browser journeys passed; pages audited: %s" % ", ".join(sorted(PAGES_AUDITED)))



if __name__ == "__main__":
    try:
        main()
    except AssertionError as error:
        print("FAILED: %s" % error, file=sys.stderr)
        raise
