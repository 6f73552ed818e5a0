//! RC-1's captcha check. With a verifier configured (`[captcha] verify_url` and `secret`), the
//! token is sent as hCaptcha, reCAPTCHA and Friendly Captcha expect: a form POST of `secret`,
//! `response` and `remoteip`, answered by JSON whose `success` says whether it was solved.
//! Without one, any non-empty token passes, and startup says so.

use crate::config::CaptchaConfig;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Clone)]
pub enum Captcha {
    /// No verifier: a non-empty token passes.
    AnyToken,
    Verify {
        client: reqwest::Client,
        url: String,
        secret: String,
    },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Solved,
    Refused,
    /// The verifier could not be asked or answered nonsense: the start is refused with 503.
    Unavailable,
}

impl Captcha {
    pub fn from_config(config: &CaptchaConfig) -> Result<Self, String> {
        match (&config.verify_url, &config.secret) {
            (Some(url), Some(secret)) => {
                // Never follow a redirect: it would carry the secret to wherever it points.
                let client = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_millis(config.timeout_ms.unwrap_or(5_000)))
                    .build()
                    .map_err(|e| format!("captcha client: {e}"))?;
                Ok(Captcha::Verify {
                    client,
                    url: url.clone(),
                    secret: secret.clone(),
                })
            }
            _ => Ok(Captcha::AnyToken),
        }
    }

    pub async fn check(&self, token: &str, remote_ip: Option<IpAddr>) -> Verdict {
        if token.trim().is_empty() {
            return Verdict::Refused;
        }
        let Captcha::Verify {
            client,
            url,
            secret,
        } = self
        else {
            return Verdict::Solved;
        };
        let mut form = vec![("secret", secret.clone()), ("response", token.to_string())];
        if let Some(ip) = remote_ip {
            form.push(("remoteip", ip.to_string()));
        }
        let answer = match client.post(url).form(&form).send().await {
            Ok(answer) => answer,
            Err(e) => {
                // The error names the verifier, never the token or the secret.
                tracing::warn!(error = %e.without_url(), "the captcha verifier cannot be reached");
                return Verdict::Unavailable;
            }
        };
        if !answer.status().is_success() {
            tracing::warn!(
                status = answer.status().as_u16(),
                "the captcha verifier refused the check"
            );
            return Verdict::Unavailable;
        }
        match answer.json::<serde_json::Value>().await {
            Ok(body) => match body.get("success").and_then(serde_json::Value::as_bool) {
                Some(true) => Verdict::Solved,
                Some(false) => Verdict::Refused,
                None => Verdict::Unavailable,
            },
            Err(_) => Verdict::Unavailable,
        }
    }
}
