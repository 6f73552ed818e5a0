//! WEB-1/WEB-2 through HTTP, as a browser without script posts forms: the pages behind the
//! mailed links (`/recovery?token=`, `/collaborator-password?token=`) lead to a new password
//! and the next login; refusals are named next to their field in the page's language; a form
//! without its CSRF token, or from another origin, changes nothing.

use crate::helpers::{link_tokens, mails, TestApp};
use crate::processes::eventually;
use reqwest::header::{HeaderMap, ACCEPT_LANGUAGE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

const USER: &str = "pagine@pec.example.it";
const NEW_PASSWORD: &str = "Girasole!Tramonto-77";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_string()
}

fn csrf_cookie(headers: &HeaderMap) -> String {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("custode_csrf="))
        .map(|v| v.split(';').next().unwrap().to_string())
        .expect("a CSRF cookie")
}

fn assert_page_headers(headers: &HeaderMap) {
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "same-origin");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

async fn recovery_link(app: &TestApp) -> String {
    let started: serde_json::Value = app
        .post(
            "/v1/recovery",
            None,
            json!({ "user_id": USER, "captcha_token": "solved" }),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = started["recovery_id"].as_str().unwrap();
    let res = app
        .post(&format!("/v1/recovery/{id}/email"), None, json!({}))
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    eventually(Duration::from_secs(10), "the recovery mail", || {
        !mails(
            app,
            "pagine.recupero@example.org",
            "Recupero della password",
        )
        .is_empty()
    })
    .await;
    let mail = mails(
        app,
        "pagine.recupero@example.org",
        "Recupero della password",
    );
    // The mail's link leads to this page.
    assert!(mail[0].contains("/recovery?token="), "{}", mail[0]);
    let token = link_tokens(&mail, "/recovery?token=").pop().unwrap();
    app.remember_secret(&token);
    token
}

async fn login_status(app: &TestApp, password: &str) -> StatusCode {
    app.try_login(&USER, &password).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mailed_recovery_link_leads_to_a_page_that_sets_the_new_password() {
    let app = TestApp::spawn().await;
    let (token, old) = app.ready_mailbox(USER).await;
    let res = app
        .request(
            reqwest::Method::PUT,
            "/v1/account/recovery-info",
            Some(&token),
            Some(json!({ "email": "pagine.recupero@example.org" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let link = recovery_link(&app).await;
    app.remember_secret(NEW_PASSWORD);
    let http = client();

    // The page, in Italian by default.
    let page = http
        .get(format!("{}/recovery?token={link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_page_headers(page.headers());
    let cookie = csrf_cookie(page.headers());
    assert!(page.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("HttpOnly; SameSite=Strict"));
    let html = page.text().await.unwrap();
    assert!(html.contains("<html lang=\"it\">"), "{html}");
    for id in ["user_id", "new_password", "new_password_repeat"] {
        assert!(
            html.contains(&format!("<label for=\"{id}\">")),
            "no label for {id}"
        );
    }
    // No inline script: the only one is the meter's, from this origin (WEB-2: it only
    // enhances).
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=\"/assets/meter.js\" defer></script>")
            .count(),
        "{html}"
    );
    let csrf = hidden(&html, "csrf");
    assert_eq!(format!("custode_csrf={csrf}"), cookie);

    // Two different passwords: named next to the field, in Italian; nothing changes.
    let res = http
        .post(format!("{}/recovery", app.base))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", link.as_str()),
            ("lang", "it"),
            ("user_id", USER),
            ("new_password", NEW_PASSWORD),
            ("new_password_repeat", "Girasole!Tramonto-78"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_page_headers(res.headers());
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"new_password_repeat-errors\""), "{html}");
    assert!(html.contains("Le due password non coincidono."), "{html}");
    assert!(
        html.contains(&format!("value=\"{USER}\"")),
        "the user id is kept"
    );
    assert!(!html.contains(NEW_PASSWORD), "a password is never echoed");
    assert_eq!(login_status(&app, &old).await, StatusCode::CREATED);

    // Without the CSRF cookie, or from another origin: refused, nothing changes.
    let form = [
        ("csrf", csrf.as_str()),
        ("token", link.as_str()),
        ("lang", "en"),
        ("user_id", USER),
        ("new_password", NEW_PASSWORD),
        ("new_password_repeat", NEW_PASSWORD),
    ];
    let res = http
        .post(format!("{}/recovery", app.base))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("Request refused"));
    let res = http
        .post(format!("{}/recovery", app.base))
        .header(COOKIE, &cookie)
        .header(ORIGIN, "https://evil.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = http
        .post(format!("{}/recovery", app.base))
        .header(COOKIE, &cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(login_status(&app, &old).await, StatusCode::CREATED);
    assert_eq!(
        login_status(&app, NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );

    // The right form: redirected to the confirmation, and the next login takes the new password.
    let res = http
        .post(format!("{}/recovery", app.base))
        .header(COOKIE, &cookie)
        .header(ORIGIN, &app.base)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = res.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(to, "/password-saved?lang=en");
    let saved = http.get(format!("{}{to}", app.base)).send().await.unwrap();
    assert_eq!(saved.status(), StatusCode::OK);
    assert!(saved
        .text()
        .await
        .unwrap()
        .contains("The new password is active"));
    assert_eq!(login_status(&app, NEW_PASSWORD).await, StatusCode::CREATED);
    assert_eq!(login_status(&app, &old).await, StatusCode::UNAUTHORIZED);

    // The link works once.
    let res = http
        .post(format!("{}/recovery", app.base))
        .header(COOKIE, &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GONE);
    assert!(res.text().await.unwrap().contains("role=\"alert\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_speak_the_browsers_language_and_say_when_a_link_is_cut() {
    let app = TestApp::spawn().await;
    let http = client();
    let res = http
        .get(format!("{}/recovery", app.base))
        .header(ACCEPT_LANGUAGE, "en-GB,en;q=0.9,it;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_page_headers(res.headers());
    let html = res.text().await.unwrap();
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("Incomplete link"),
        "{html}"
    );
    // The switch to the other language is on the page.
    assert!(html.contains("hreflang=\"it\""), "{html}");
    let res = http
        .get(format!(
            "{}/collaborator-password?token=abc&lang=it",
            app.base
        ))
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let html = res.text().await.unwrap();
    assert!(html.contains("<html lang=\"it\">") && html.contains("Crea la tua password"));
    // A markup-looking token is escaped, never run.
    let res = http
        .get(format!(
            "{}/recovery?token=%22%3E%3Cscript%3Ealert(1)%3C/script%3E",
            app.base
        ))
        .send()
        .await
        .unwrap();
    let html = res.text().await.unwrap();
    assert!(!html.contains("<script>alert"), "{html}");
    let css = http
        .get(format!("{}/assets/custode.css", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collaborator_sets_its_first_password_from_the_mailed_link() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.ready_mailbox("titolare.pagine@pec.example.it").await;
    let reference = "collab.pagine@example.org";
    let res = app
        .post(
            "/v1/account/collaborators",
            Some(&owner),
            json!({ "name": "Anna Bianchi", "reference_email": reference, "permissions": ["read_mail"] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created: serde_json::Value = res.json().await.unwrap();
    let user_id = created["user_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the collaborator's mail", || {
        !mails(&app, reference, "Crea la password").is_empty()
    })
    .await;
    let link = link_tokens(
        &mails(&app, reference, "Crea la password"),
        "/collaborator-password?token=",
    )
    .pop()
    .unwrap();
    app.remember_secret(&link);
    app.remember_secret(NEW_PASSWORD);
    let http = client();
    let page = http
        .get(format!("{}/collaborator-password?token={link}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let cookie = csrf_cookie(page.headers());
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("name=\"user_id\""),
        "a collaborator's link knows whose it is"
    );
    let csrf = hidden(&html, "csrf");
    // A weak password: each failed rule next to the field.
    let res = http
        .post(format!("{}/collaborator-password", app.base))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", link.as_str()),
            ("lang", "it"),
            ("new_password", "abc"),
            ("new_password_repeat", "abc"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("id=\"new_password-errors\""), "{html}");
    assert!(html.contains("Serve almeno una cifra."), "{html}");
    let res = http
        .post(format!("{}/collaborator-password", app.base))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("token", link.as_str()),
            ("lang", "it"),
            ("new_password", NEW_PASSWORD),
            ("new_password_repeat", NEW_PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = app.try_login(&user_id, &NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

/// The cookie `name=value` a response sets, with its attributes.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// A browser without script: keeps the page's cookies and sends them back.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        Self {
            http: client(),
            base: app.base.clone(),
            cookies: Default::default(),
        }
    }

    fn keep(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(SET_COOKIE).iter() {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (StatusCode, HeaderMap, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        self.keep(&headers);
        (status, headers, res.text().await.unwrap())
    }

    async fn post(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .form(fields);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let res = request.send().await.unwrap();
        let (status, headers) = (res.status(), res.headers().clone());
        self.keep(&headers);
        (status, headers, res.text().await.unwrap())
    }

    async fn login(&mut self, user_id: &str, password: &str) -> HeaderMap {
        self.login_with(user_id, password, "").await
    }

    async fn login_with(&mut self, user_id: &str, password: &str, otp: &str) -> HeaderMap {
        let (_, _, html) = self.get("/login?lang=en").await;
        let csrf = hidden(&html, "csrf");
        let (status, headers, html) = self
            .post(
                "/login",
                &[
                    ("csrf", &csrf),
                    ("lang", "en"),
                    ("user_id", user_id),
                    ("password", password),
                    ("otp", otp),
                ],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
        headers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_session_is_a_strict_cookie_and_its_forms_need_their_token() {
    let app = TestApp::spawn().await;
    let user = "sessione@pec.example.it";
    let (_, password) = app.ready_mailbox(user).await;
    let mut browser = Browser::new(&app);

    // Not logged in: the account page sends to the login.
    let (status, headers, _) = browser.get("/account").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[LOCATION].to_str().unwrap().starts_with("/login"));

    // A wrong password is refused on the page, the user id kept, no session cookie.
    let (_, _, html) = browser.get("/login?lang=en").await;
    let csrf = hidden(&html, "csrf");
    let (status, headers, html) = browser
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("lang", "en"),
                ("user_id", user),
                ("password", "nope"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_page_headers(&headers);
    assert!(set_cookie(&headers, "custode_session").is_none());
    assert!(
        html.contains("id=\"form-error\"") && html.contains(user),
        "{html}"
    );

    // A password change as a form posts it (the forgery attempts below send it).
    let change = |csrf: &'static str| {
        vec![
            ("csrf", csrf),
            ("action", "change"),
            ("current_password", "Tr4m-Colle!Verde"),
            ("new_password", "Attacker!Pass-12345"),
            ("new_password_repeat", "Attacker!Pass-12345"),
        ]
    };

    // The right one: a session cookie, HttpOnly and SameSite=Strict (no Secure over http).
    let before_login = browser.cookies["custode_csrf"].clone();
    let headers = browser.login(user, &password).await;
    let session = set_cookie(&headers, "custode_session").expect("a session cookie");
    // The form token is new with the session: the one from before the login posts nothing.
    let rotated = browser.cookies["custode_csrf"].clone();
    assert_ne!(rotated, before_login);
    let before_login: &'static str = Box::leak(before_login.into_boxed_str());
    let (status, _, _) = browser
        .post("/account/password", &change(before_login), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        login_status_of(&app, user, "Attacker!Pass-12345").await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    assert!(!session.contains("Secure"), "{session}");
    assert_eq!(headers[LOCATION], "/account?lang=en");
    let (status, headers, html) = browser.get("/account").await;
    assert_eq!(status, StatusCode::OK);
    assert_page_headers(&headers);
    assert!(html.contains(user), "{html}");
    // AH-1: a login through the pages is on the web channel.
    let token = app.login(user, &password).await;
    let history: serde_json::Value = app
        .get("/v1/account/access-history?outcome=success", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    let services: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["service"].as_str())
        .collect();
    assert!(
        services.contains(&"web") && services.contains(&"api"),
        "{services:?}"
    );

    // A form without its token, or from another origin, changes nothing.
    let (status, _, _) = browser.post("/account/password", &change(""), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, _, html) = browser.get("/account/password").await;
    let csrf: &'static str = Box::leak(hidden(&html, "csrf").into_boxed_str());
    let (status, _, _) = browser
        .post(
            "/account/password",
            &change(csrf),
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A form token and cookie planted together (a sibling site can set a cookie) do not
    // pass either: with a session, the token is bound to it.
    let planted: &'static str = "PlantedPlantedPlantedPlantedPlantedPlanted0";
    browser
        .cookies
        .insert("custode_csrf".into(), planted.to_string());
    let (status, _, _) = browser
        .post("/account/password", &change(planted), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        login_status_of(&app, user, "Attacker!Pass-12345").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login_status_of(&app, user, &password).await,
        StatusCode::CREATED
    );

    // A refusal names the rule next to its field, and changes nothing.
    let (status, _, html) = browser
        .post(
            "/account/password",
            &[
                ("csrf", csrf),
                ("lang", "en"),
                ("action", "change"),
                ("current_password", &password),
                ("new_password", "short"),
                ("new_password_repeat", "short"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("id=\"new_password-errors\""), "{html}");

    // Logout ends the session: its cookie no longer opens the account.
    let session_cookie = browser.cookies["custode_session"].clone();
    let (status, headers, _) = browser
        .post("/logout", &[("csrf", csrf), ("lang", "en")], None)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(set_cookie(&headers, "custode_session")
        .unwrap()
        .contains("Max-Age=0"));
    browser
        .cookies
        .insert("custode_session".into(), session_cookie);
    let (status, headers, _) = browser.get("/account").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[LOCATION].to_str().unwrap().starts_with("/login"));
}

async fn login_status_of(app: &TestApp, user: &str, password: &str) -> StatusCode {
    app.try_login(&user, &password).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_password_is_shown_once_and_never_cached() {
    let app = TestApp::spawn().await;
    let user = "programmi@pec.example.it";
    let (token, password) = app.ready_mailbox(user).await;
    // AP-1: passwords for mail programs need two-step verification on.
    let uri = crate::delegation::two_factor_on(&app, &token).await;
    let mut browser = Browser::new(&app);
    browser
        .login_with(user, &password, &crate::delegation::code_at(&uri, &app))
        .await;
    app.advance(chrono::Duration::seconds(30));
    let (_, _, html) = browser.get("/account/app-passwords").await;
    let csrf = hidden(&html, "csrf");
    let (status, headers, html) = browser
        .post(
            "/account/app-passwords",
            &[("csrf", &csrf), ("action", "create"), ("scope", "mailbox")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let location = headers[LOCATION].to_str().unwrap().to_string();
    assert!(location.contains("&f="), "{location}");
    let (status, headers, html) = browser.get(&location).await;
    assert_eq!(status, StatusCode::OK);
    assert_page_headers(&headers);
    let at = html
        .find("id=\"shown-password\"")
        .expect("the password, once");
    let shown: String = html[at..]
        .split("<strong>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string();
    app.remember_secret(&shown);
    let allowed: serde_json::Value = app
        .post(
            "/v1/auth/app-password",
            Some(crate::helpers::OPERATOR_KEY),
            json!({ "user_id": user, "scope": "mailbox", "password": shown, "protocol": "imap" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(allowed["result"], "allow", "{allowed}");
    // The same address again shows it no more; another session never could.
    let (_, _, html) = browser.get(&location).await;
    assert!(!html.contains(&shown));
    let mut other = Browser::new(&app);
    other
        .login_with(user, &password, &crate::delegation::code_at(&uri, &app))
        .await;
    let (_, _, html) = other.get(&location).await;
    assert!(!html.contains(&shown));
    // SEC-3: ten minutes on, a deactivation needs the password again; the page asks for it in
    // place, then the action goes through.
    app.advance(chrono::Duration::minutes(11));
    let deactivate = [
        ("csrf", csrf.as_str()),
        ("lang", "en"),
        ("action", "deactivate"),
        ("scope", "mailbox"),
    ];
    let (status, _, html) = browser
        .post("/account/app-passwords", &deactivate, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(
        html.contains("id=\"reauth-password\"") && html.contains("id=\"reauth-otp\""),
        "{html}"
    );
    let code = crate::delegation::code_at(&uri, &app);
    let (status, headers, html) = browser
        .post(
            "/account/app-passwords",
            &[
                ("csrf", &csrf),
                ("lang", "en"),
                ("action", "reauth"),
                ("password", &password),
                ("otp", &code),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert!(headers[LOCATION].to_str().unwrap().ends_with("m=reauthed"));
    let (status, _, html) = browser
        .post("/account/app-passwords", &deactivate, None)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");

    // A scope that is not one is refused before any call.
    let (status, _, _) = browser
        .post(
            "/account/app-passwords",
            &[
                ("csrf", &csrf),
                ("action", "deactivate"),
                ("scope", "../../admin"),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_can_be_turned_off_for_a_provider_with_its_own() {
    let mut file = crate::helpers::file_config();
    file.web.enabled = false;
    let app = TestApp::spawn_with(file).await;
    for path in [
        "/login",
        "/account",
        "/recover",
        "/recovery?token=x",
        "/assets/meter.js",
    ] {
        let res = client()
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = app.get("/healthz", None).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_is_not_the_pages_form_gets_the_page_refusal() {
    let app = TestApp::spawn().await;
    for path in [
        "/recovery",
        "/collaborator-password",
        "/login",
        "/account/password",
        "/recover",
    ] {
        let res = client()
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path}");
        assert_page_headers(res.headers());
    }
    let res = client()
        .post(format!("{}/recovery", app.base))
        .form(&[("token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_page_headers(res.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_https_the_cookies_are_secure() {
    let mut file = crate::helpers::file_config();
    file.public_url = Some("https://custode.example.it".into());
    let app = TestApp::spawn_with(file).await;
    let user = "sicuro@pec.example.it";
    let (_, password) = app.ready_mailbox(user).await;
    let mut browser = Browser::new(&app);
    let (_, headers, _) = browser.get("/login").await;
    // Under https both cookies carry the `__Host-` prefix, which a browser accepts only from
    // this host, Secure, on Path=/ and without Domain: a sibling subdomain cannot plant them.
    let csrf_cookie = set_cookie(&headers, "__Host-custode_csrf").unwrap();
    assert!(
        csrf_cookie.contains("; Secure")
            && csrf_cookie.contains("Path=/")
            && !csrf_cookie.contains("Domain"),
        "{csrf_cookie}"
    );
    assert!(set_cookie(&headers, "custode_csrf").is_none());
    // A browser posting from the public origin.
    let csrf = browser.cookies["__Host-custode_csrf"].clone();
    let (status, headers, html) = browser
        .post(
            "/login",
            &[("csrf", &csrf), ("user_id", user), ("password", &password)],
            Some("https://custode.example.it"),
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let session = set_cookie(&headers, "__Host-custode_session").unwrap();
    assert!(
        session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
            && session.contains("; Secure")
            && session.contains("Path=/")
            && !session.contains("Domain"),
        "{session}"
    );
    assert!(set_cookie(&headers, "custode_session").is_none());
    // The prefixed session opens the account's page.
    let (status, _, html) = browser.get("/account").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(user), "{html}");
    // The same token under the bare name, as a sibling subdomain could set it with
    // `Domain=.example.it`, opens nothing.
    let token = browser.cookies.remove("__Host-custode_session").unwrap();
    browser.cookies.insert("custode_session".into(), token);
    let (status, headers, _) = browser.get("/account").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[LOCATION].to_str().unwrap().starts_with("/login"));
}
