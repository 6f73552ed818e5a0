//! NT-2: every notice in Italian and English. A template gets the holder's user id, the secret
//! it carries (opened from its seal only here, just before sending) and the public URL for
//! links; SMS texts are short, mail bodies plain text.

use custode_domain::account::Language;
use custode_domain::notice::Channel;
use custode_domain::notify::Template;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub body: String,
}

pub struct Input<'a> {
    pub template: Template,
    pub language: Language,
    pub channel: Channel,
    pub user_id: &'a str,
    pub secret: Option<&'a str>,
    pub public_url: &'a str,
    /// A one-time code's purpose (its text says what the code authorises).
    pub purpose: Option<custode_domain::otp::OtpPurpose>,
}

/// What a one-time code authorises, in the holder's language.
fn purpose_line(purpose: Option<custode_domain::otp::OtpPurpose>, language: Language) -> String {
    use custode_domain::otp::OtpPurpose::*;
    let Some(purpose) = purpose else {
        return String::new();
    };
    let (it, en) = match purpose {
        Recovery => ("recuperare la password", "recover your password"),
        PasswordChange => ("cambiare la password", "change your password"),
        Suspension => ("sospendere l'identità", "suspend your identity"),
        TwoFactorOff => (
            "disattivare la verifica in due passaggi",
            "turn two-step verification off",
        ),
        TwoFactorOn => (
            "attivare la verifica in due passaggi",
            "turn two-step verification on",
        ),
        Login => ("accedere", "log in"),
        ContactChange | NewContactMobile => (
            "cambiare il cellulare di contatto",
            "change your contact mobile",
        ),
        VerifyRecoveryEmail | VerifyRecoveryMobile => (
            "verificare un contatto di recupero",
            "verify a recovery contact",
        ),
        RecoveryEmailChange | NewRecoveryEmail => (
            "cambiare l'e-mail di recupero",
            "change your recovery email",
        ),
        RecoveryMobileChange | NewRecoveryMobile => (
            "cambiare il cellulare di recupero",
            "change your recovery mobile",
        ),
    };
    match language {
        // Italian's euphonic d: "ad accedere", "ad attivare".
        Language::It if it.starts_with('a') => format!(" Serve ad {it}."),
        Language::It => format!(" Serve a {it}."),
        Language::En => format!(" It is to {en}."),
    }
}

pub fn render(input: &Input<'_>) -> Rendered {
    let user = input.user_id;
    let secret = input.secret.unwrap_or("");
    let base = input.public_url.trim_end_matches('/');
    let (subject, lines): (&str, Vec<String>) = match (input.template, input.language) {
        (Template::TemporaryCredentials, Language::It) => (
            "Le credenziali temporanee del tuo account",
            vec![
                format!("È stato aperto l'account {user}."),
                format!("Password temporanea: {secret}"),
                "Al primo accesso ti chiederemo di sceglierne una tua e di inserire le informazioni di recupero.".into(),
            ],
        ),
        (Template::TemporaryCredentials, Language::En) => (
            "Your account's temporary credentials",
            vec![
                format!("The account {user} has been opened."),
                format!("Temporary password: {secret}"),
                "At your first login we will ask you to choose your own and to add recovery information.".into(),
            ],
        ),
        (Template::PasswordChanged, Language::It) => (
            "La password del tuo account è cambiata",
            vec![
                format!("La password dell'account {user} è stata cambiata e ogni sessione aperta è stata chiusa."),
                "Se non sei stato tu, recupera subito l'accesso con la procedura di password dimenticata e contatta l'assistenza.".into(),
            ],
        ),
        (Template::PasswordChanged, Language::En) => (
            "Your account's password has changed",
            vec![
                format!("The password of the account {user} has been changed and every open session has been closed."),
                "If this was not you, recover access at once with the forgotten-password procedure and contact support.".into(),
            ],
        ),
        (Template::RecoveryInfoChanged, Language::It) => (
            "Le informazioni di recupero sono cambiate",
            vec![
                format!("Le informazioni di recupero dell'account {user} sono state modificate."),
                "Se non sei stato tu, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::RecoveryInfoChanged, Language::En) => (
            "Your recovery information has changed",
            vec![
                format!("The recovery information of the account {user} has been changed."),
                "If this was not you, contact support at once.".into(),
            ],
        ),
        (Template::PasswordRecovered, Language::It) => (
            "La password del tuo account è stata recuperata",
            vec![
                format!("La password dell'account {user} è stata reimpostata con la procedura di recupero e ogni sessione aperta è stata chiusa."),
                "Al prossimo accesso ti chiederemo di confermare le informazioni di recupero.".into(),
                "Se non sei stato tu, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::PasswordRecovered, Language::En) => (
            "Your account's password has been recovered",
            vec![
                format!("The password of the account {user} has been reset through the recovery procedure and every open session has been closed."),
                "At your next login we will ask you to confirm your recovery information.".into(),
                "If this was not you, contact support at once.".into(),
            ],
        ),
        (Template::LockoutStarted, Language::It) => (
            "Domanda di sicurezza bloccata",
            vec![
                format!("Troppe risposte errate alla domanda di sicurezza dell'account {user}: la domanda è bloccata per qualche minuto. L'account e gli altri metodi di recupero restano utilizzabili."),
                "Se non sei stato tu, qualcuno sta tentando di recuperare la tua password: contatta l'assistenza.".into(),
            ],
        ),
        (Template::LockoutStarted, Language::En) => (
            "Security question locked",
            vec![
                format!("Too many wrong answers to the security question of the account {user}: the question is locked for a few minutes. The account and the other recovery methods stay usable."),
                "If this was not you, someone is trying to recover your password: contact support.".into(),
            ],
        ),
        (Template::LoginLocked, Language::It) => (
            "Accesso bloccato per troppi tentativi",
            vec![
                format!("Troppe password errate di seguito per l'account {user}: per qualche minuto gli accessi sono rifiutati."),
                "Se non sei stato tu, qualcuno sta tentando di indovinare la tua password: puoi recuperarla con la procedura di password dimenticata, che sblocca subito l'accesso.".into(),
            ],
        ),
        (Template::LoginLocked, Language::En) => (
            "Logins locked after too many attempts",
            vec![
                format!("Too many wrong passwords in a row for the account {user}: logins are refused for a few minutes."),
                "If this was not you, someone is trying to guess your password: the forgotten-password procedure recovers it and lifts the lock at once.".into(),
            ],
        ),
        (Template::ChecksLocked, Language::It) => (
            "Verifiche bloccate per troppi codici o risposte errati",
            vec![
                format!("Troppi codici o risposte errati di seguito per l'account {user}: per qualche minuto codici e risposte alla domanda di sicurezza sono rifiutati."),
                "Se non sei stato tu, qualcuno sta tentando di recuperare la tua password: contatta l'assistenza.".into(),
            ],
        ),
        (Template::ChecksLocked, Language::En) => (
            "Checks locked after too many wrong codes or answers",
            vec![
                format!("Too many wrong codes or answers in a row for the account {user}: for a few minutes codes and answers to the security question are refused."),
                "If this was not you, someone is trying to recover your password: contact support.".into(),
            ],
        ),
        (Template::RecoveryLink, Language::It) => (
            "Recupero della password",
            vec![
                format!("Per scegliere una nuova password per l'account {user} apri questo link entro 24 ore:"),
                format!("{base}/recovery?token={secret}"),
                "Se non hai chiesto tu il recupero, ignora questo messaggio.".into(),
            ],
        ),
        (Template::RecoveryLink, Language::En) => (
            "Password recovery",
            vec![
                format!("To choose a new password for the account {user}, open this link within 24 hours:"),
                format!("{base}/recovery?token={secret}"),
                "If you did not ask to recover your password, ignore this message.".into(),
            ],
        ),
        (Template::OneTimeCode, Language::It) => (
            "Il tuo codice di verifica",
            vec![format!(
                "Codice di verifica per {user}: {secret}.{} Non comunicarlo a nessuno.",
                purpose_line(input.purpose, Language::It)
            )],
        ),
        (Template::OneTimeCode, Language::En) => (
            "Your verification code",
            vec![format!(
                "Verification code for {user}: {secret}.{} Do not share it with anyone.",
                purpose_line(input.purpose, Language::En)
            )],
        ),
        (Template::CollaboratorLink, Language::It) => (
            "Crea la password del tuo accesso da collaboratore",
            vec![
                format!("Sei stato aggiunto come collaboratore con l'utenza {user}."),
                format!("Crea la tua password da questo link: {base}/collaborator-password?token={secret}"),
            ],
        ),
        (Template::CollaboratorLink, Language::En) => (
            "Create the password of your collaborator access",
            vec![
                format!("You have been added as a collaborator with the user id {user}."),
                format!("Create your password from this link: {base}/collaborator-password?token={secret}"),
            ],
        ),
        (Template::AppPasswordExpiry, Language::It) => (
            "La password per i programmi di posta sta per scadere",
            vec![
                format!("Una password per i programmi di posta dell'account {user} scade a breve o è scaduta."),
                "Accedi alla tua area riservata per prorogarla o rigenerarla.".into(),
            ],
        ),
        (Template::AppPasswordExpiry, Language::En) => (
            "Your mail-program password is about to expire",
            vec![
                format!("A mail-program password of the account {user} expires soon or has expired."),
                "Sign in to your account to postpone or regenerate it.".into(),
            ],
        ),
        (Template::Suspension, Language::It) => (
            "Il tuo account è sospeso",
            vec![
                format!("L'account {user} è stato sospeso."),
                "Se non sei stato tu, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::Suspension, Language::En) => (
            "Your account is suspended",
            vec![
                format!("The account {user} has been suspended."),
                "If this was not you, contact support at once.".into(),
            ],
        ),
        (Template::Revoked, Language::It) => (
            "Il tuo account è stato revocato",
            vec![
                format!("L'account {user} è stato revocato su richiesta firmata. La revoca è definitiva."),
                "Se non hai chiesto la revoca, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::Revoked, Language::En) => (
            "Your account has been revoked",
            vec![
                format!("The account {user} has been revoked on a signed request. This is final."),
                "If you did not ask for it, contact support at once.".into(),
            ],
        ),
        (Template::PasswordExpiry, Language::It) => (
            "La tua password sta per scadere",
            vec![
                format!("La password dell'identità {user} scade a breve (le regole SPID chiedono di cambiarla periodicamente)."),
                "Cambiala dalla tua area riservata: dopo la scadenza potrai solo cambiarla.".into(),
            ],
        ),
        (Template::PasswordExpiry, Language::En) => (
            "Your password is about to expire",
            vec![
                format!("The password of the identity {user} expires soon (SPID's rules ask for a change at regular intervals)."),
                "Change it from your account: once it has expired, changing it is all you can do.".into(),
            ],
        ),
        (Template::InactivityWarning, Language::It) => (
            "La tua identità digitale non è usata da tempo",
            vec![
                format!("L'identità {user} non è stata usata da molti mesi: se resta inutilizzata sarà revocata, come chiedono le regole SPID."),
                "Per mantenerla basta un accesso con le tue credenziali.".into(),
            ],
        ),
        (Template::InactivityWarning, Language::En) => (
            "Your digital identity has not been used for a long time",
            vec![
                format!("The identity {user} has not been used for many months: if it stays unused it will be revoked, as SPID's rules require."),
                "A login with your credentials keeps it.".into(),
            ],
        ),
        (Template::RevokedForInactivity, Language::It) => (
            "La tua identità digitale è stata revocata",
            vec![
                format!("L'identità {user} è stata revocata perché non è stata usata per il periodo previsto dalle regole SPID. La revoca è definitiva."),
                "Per una nuova identità rivolgiti al gestore.".into(),
            ],
        ),
        (Template::RevokedForInactivity, Language::En) => (
            "Your digital identity has been revoked",
            vec![
                format!("The identity {user} has been revoked because it was not used for the period SPID's rules allow. This is final."),
                "Ask the provider for a new identity.".into(),
            ],
        ),
        (Template::ContactChanged, Language::It) => (
            "I tuoi dati di contatto sono cambiati",
            vec![
                format!("L'indirizzo e-mail o il cellulare di contatto dell'account {user} è stato cambiato."),
                "Se non sei stato tu, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::ContactChanged, Language::En) => (
            "Your contact details have changed",
            vec![
                format!("The contact email or mobile of the account {user} has been changed."),
                "If it was not you, contact support at once.".into(),
            ],
        ),
        (Template::DocumentExpiry, Language::It) => (
            "Il tuo documento di identità sta per scadere",
            vec![
                format!("Il documento di identità registrato per {user} scade a breve."),
                "Registra un nuovo documento dalla tua area riservata.".into(),
            ],
        ),
        (Template::DocumentExpiry, Language::En) => (
            "Your identity document is about to expire",
            vec![
                format!("The identity document on file for {user} expires soon."),
                "Record a new document from your account.".into(),
            ],
        ),
        (Template::CollaboratorReset, Language::It) => (
            "Reimposta la password del tuo accesso da collaboratore",
            vec![
                format!("Il titolare della casella ha reimpostato la password dell'utenza {user}: la vecchia password non funziona più e l'utenza è sospesa finché non ne crei una nuova."),
                format!("Crea la nuova password da questo link entro 24 ore (funziona una sola volta): {base}/collaborator-password?token={secret}"),
            ],
        ),
        (Template::CollaboratorReset, Language::En) => (
            "Reset the password of your collaborator access",
            vec![
                format!("The mailbox holder reset the password of the user id {user}: the old password no longer works and the access is suspended until you create a new one."),
                format!("Create the new password from this link within 24 hours (it works once): {base}/collaborator-password?token={secret}"),
            ],
        ),
        (Template::CollaboratorUpdateDevices, Language::It) => (
            "Aggiorna la password sui programmi di posta",
            vec![
                format!("La password dell'utenza {user} è cambiata."),
                "Aggiorna la password su tutti i dispositivi e i programmi di posta che usano la casella (per esempio Outlook o Thunderbird).".into(),
            ],
        ),
        (Template::CollaboratorUpdateDevices, Language::En) => (
            "Update the password in your mail programs",
            vec![
                format!("The password of the user id {user} has changed."),
                "Update it on every device and mail program that uses the mailbox (Outlook or Thunderbird, for instance).".into(),
            ],
        ),
        (Template::TwoFactorOn, Language::It) => (
            "Verifica in due passaggi attivata",
            vec![
                format!("La verifica in due passaggi dell'account {user} è ora attiva: a ogni accesso ti chiederemo anche un codice."),
                "Se non sei stato tu, contatta subito l'assistenza.".into(),
            ],
        ),
        (Template::TwoFactorOn, Language::En) => (
            "Two-step verification turned on",
            vec![
                format!("Two-step verification is now on for the account {user}: every login will ask for a code too."),
                "If this was not you, contact support at once.".into(),
            ],
        ),
        (Template::TwoFactorOff, Language::It) => (
            "Verifica in due passaggi disattivata",
            vec![
                format!("La verifica in due passaggi dell'account {user} è stata disattivata."),
                "Se non sei stato tu, cambia subito la password e contatta l'assistenza.".into(),
            ],
        ),
        (Template::TwoFactorOff, Language::En) => (
            "Two-step verification turned off",
            vec![
                format!("Two-step verification has been turned off for the account {user}."),
                "If this was not you, change your password at once and contact support.".into(),
            ],
        ),
        (Template::AppPasswordIssued, Language::It) => (
            "Nuova password per i programmi di posta",
            vec![
                format!("È stata generata una password per i programmi di posta dell'account {user}. Vale 3 mesi."),
                "Se non sei stato tu, disattivala dalla tua area riservata e contatta l'assistenza.".into(),
            ],
        ),
        (Template::AppPasswordIssued, Language::En) => (
            "New password for mail programs",
            vec![
                format!("A password for mail programs was generated for the account {user}. It is valid for 3 months."),
                "If this was not you, deactivate it from your account and contact support.".into(),
            ],
        ),
    };
    let body = match input.channel {
        Channel::Email => {
            let wrapped: Vec<String> = lines.iter().map(|l| wrap(l, 76)).collect();
            let mut body = wrapped.join("\n\n");
            body.push('\n');
            body
        }
        Channel::Sms => lines.join(" "),
    };
    Rendered {
        subject: subject.to_string(),
        body,
    }
}

/// Breaks `text` between words so that lines stay under `width` characters where they can;
/// a longer word (a link, a token) keeps a line of its own, whole.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut line_len = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            out.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use custode_domain::notify::TEMPLATES;

    #[test]
    fn every_template_renders_in_both_languages() {
        let mut all = String::new();
        for template in TEMPLATES {
            for language in [Language::It, Language::En] {
                let rendered = render(&Input {
                    template: *template,
                    language,
                    channel: Channel::Email,
                    user_id: "mario.rossi@pec.example.it",
                    secret: Some("SECRET-123"),
                    public_url: "https://account.example.it",
                    purpose: None,
                });
                assert!(!rendered.subject.is_empty());
                all.push_str(&format!(
                    "== {} ({language:?})\nSubject: {}\n\n{}\n",
                    template.as_str(),
                    rendered.subject,
                    rendered.body
                ));
            }
        }
        insta::assert_snapshot!(all);
    }

    #[test]
    fn mail_lines_wrap_between_words_and_never_split_a_link() {
        let link = format!(
            "https://account.example.it/recovery?token={}",
            "A".repeat(43)
        );
        let text = format!(
            "Per scegliere una nuova password apri questo link entro 24 ore: {link} grazie"
        );
        let wrapped = wrap(&text, 76);
        assert!(wrapped.lines().any(|l| l == link), "{wrapped}");
        assert!(wrapped
            .lines()
            .filter(|l| !l.contains("token"))
            .all(|l| l.chars().count() <= 76));
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_notice_that_carries_a_secret_shows_it() {
        for template in [
            Template::TemporaryCredentials,
            Template::RecoveryLink,
            Template::OneTimeCode,
            Template::CollaboratorLink,
        ] {
            for channel in [Channel::Email, Channel::Sms] {
                let rendered = render(&Input {
                    template,
                    language: Language::En,
                    channel,
                    user_id: "u",
                    secret: Some("S3cr3t"),
                    public_url: "http://x",
                    purpose: None,
                });
                assert!(rendered.body.contains("S3cr3t"), "{template:?} {channel:?}");
            }
        }
    }

    #[test]
    fn a_code_says_what_it_authorises_in_the_holders_language() {
        use custode_domain::otp::OtpPurpose;
        let text = |purpose, language| {
            render(&Input {
                template: Template::OneTimeCode,
                language,
                channel: Channel::Sms,
                user_id: "franca.neri",
                secret: Some("424242"),
                public_url: "http://x",
                purpose: Some(purpose),
            })
            .body
        };
        assert_eq!(
            text(OtpPurpose::ContactChange, Language::It).trim(),
            "Codice di verifica per franca.neri: 424242. Serve a cambiare il cellulare di contatto. Non comunicarlo a nessuno."
        );
        assert!(text(OtpPurpose::RecoveryEmailChange, Language::En)
            .contains("It is to change your recovery email."));
        assert!(text(OtpPurpose::Suspension, Language::En).contains("suspend your identity"));
        assert!(text(OtpPurpose::TwoFactorOn, Language::It)
            .contains("Serve ad attivare la verifica in due passaggi."));
        assert!(text(OtpPurpose::Login, Language::It).contains("Serve ad accedere."));
    }
}
