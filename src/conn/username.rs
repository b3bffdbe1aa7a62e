//! Splitting the startup user name `<role><sep><values>` (behaviour §1 rows
//! 5–8, §3.4 order of checks): no user → bypass → separator → empty parts →
//! value count. Pure; errors carry the SQLSTATE and message sent as FATAL.

/// What a startup user name means.
#[derive(Debug, PartialEq, Eq)]
pub enum UserKind<'a> {
    /// Listed in `superuser_bypass`: relayed untouched.
    Bypass,
    /// A tenant login: upstream `role`, one value per context variable.
    Tenant { role: &'a str, values: Vec<&'a str> },
}

/// A refusal: SQLSTATE and message of the FATAL sent to the client.
#[derive(Debug, PartialEq, Eq)]
pub struct UserError {
    pub code: &'static str,
    pub message: String,
}

fn err(code: &'static str, message: String) -> UserError {
    UserError { code, message }
}

/// Classifies `user` (raw startup bytes) under the given settings.
pub fn classify<'a>(
    user: Option<&'a [u8]>,
    bypass: &[String],
    tenant_separator: &str,
    variable_count: usize,
    value_separator: &str,
) -> Result<UserKind<'a>, UserError> {
    let raw = match user {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err(err("08004", "no username in StartupMessage".to_string()));
        }
    };
    if bypass.iter().any(|b| b.as_bytes() == raw) {
        return Ok(UserKind::Bypass);
    }
    let user = std::str::from_utf8(raw)
        .map_err(|_| err("28000", "username is not valid UTF-8".to_string()))?;
    let Some((role, payload)) = user.split_once(tenant_separator) else {
        return Err(err(
            "28000",
            format!("username must contain context values separated by '{tenant_separator}'"),
        ));
    };
    if role.is_empty() || payload.is_empty() {
        return Err(err(
            "28000",
            "empty role or context in username".to_string(),
        ));
    }
    let values: Vec<&str> = if variable_count > 1 {
        payload.split(value_separator).collect()
    } else {
        vec![payload]
    };
    if values.len() != variable_count {
        return Err(err(
            "28000",
            format!(
                "expected {variable_count} context value(s), got {}",
                values.len()
            ),
        ));
    }
    Ok(UserKind::Tenant { role, values })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(user: &str, vars: usize) -> Result<UserKind<'_>, UserError> {
        classify(
            Some(user.as_bytes()),
            &["postgres".to_string()],
            ".",
            vars,
            ":",
        )
    }

    #[test]
    fn table() {
        assert_eq!(c("postgres", 1), Ok(UserKind::Bypass));
        assert_eq!(
            c("app_user.acme", 1),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["acme"]
            })
        );
        // Only the first separator splits; the payload may contain more.
        assert_eq!(
            c("app_user.acme.eu", 1),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["acme.eu"]
            })
        );
        // One variable: value separator is not special.
        assert_eq!(
            c("app_user.a:b", 1),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["a:b"]
            })
        );
        assert_eq!(
            c("app_user.a:b", 2),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["a", "b"]
            })
        );
        assert_eq!(
            c("app_user.a:", 2),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["a", ""]
            })
        );
        assert_eq!(
            c("app_user.:b", 2),
            Ok(UserKind::Tenant {
                role: "app_user",
                values: vec!["", "b"]
            })
        );
        assert_eq!(
            c("app_user.only", 2).map_err(|e| e.message),
            Err("expected 2 context value(s), got 1".into())
        );
        assert_eq!(c("app_user.a:b:c", 2).map_err(|e| e.code), Err("28000"));
        assert_eq!(c("baduser", 1).map_err(|e| e.code), Err("28000"));
        assert!(
            c("baduser", 1)
                .unwrap_err()
                .message
                .contains("separated by '.'")
        );
        assert_eq!(
            c("app_user.", 1).map_err(|e| e.message),
            Err("empty role or context in username".into())
        );
        assert_eq!(c(".acme", 1).map_err(|e| e.code), Err("28000"));
        assert_eq!(
            c("app-dash.acme", 1),
            Ok(UserKind::Tenant {
                role: "app-dash",
                values: vec!["acme"]
            })
        );
        // Bypass is exact and case-sensitive.
        assert_eq!(c("Postgres", 1).map_err(|e| e.code), Err("28000"));
        assert_eq!(
            classify(None, &[], ".", 1, ":").map_err(|e| e.code),
            Err("08004")
        );
        assert_eq!(
            classify(Some(b""), &[], ".", 1, ":").map_err(|e| e.code),
            Err("08004")
        );
        assert_eq!(
            classify(Some(b"a.\xff"), &[], ".", 1, ":").map_err(|e| e.code),
            Err("28000")
        );
        // Multi-character separator.
        assert_eq!(
            classify(Some(b"app__acme"), &[], "__", 1, ":"),
            Ok(UserKind::Tenant {
                role: "app",
                values: vec!["acme"]
            })
        );
    }
}
