//! The account policy: what a username, an email address and a password
//! must be, and which characters no name may hold. Checked before anything
//! is hashed or stored; the HTTP layer reports each violation per field.

use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};

static COMMON_PASSWORDS: LazyLock<std::collections::HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Longest accepted password, in bytes: hashing cost must stay bounded.
pub const PASSWORD_MAX_BYTES: usize = 128;
const PASSWORD_MIN_CHARS: usize = 12;

/// One field that breaks the policy, and why (safe to show: never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub field: &'static str,
    pub message: &'static str,
}

/// Every violation of a registration, in field order (empty: acceptable).
pub fn registration(username: &str, email: &str, password: &SecretString) -> Vec<Violation> {
    let mut errors = Vec::new();
    let mut bad =
        |field: &'static str, message: &'static str| errors.push(Violation { field, message });
    let u = username;
    if !(3..=32).contains(&u.len())
        || !u
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        bad(
            "username",
            "must be 3 to 32 characters of a-z, A-Z, 0-9, _ . -",
        );
    }
    if !valid_email(email) {
        bad("email", "is not a valid email address");
    }
    let p = password.expose_secret();
    if p.chars().count() < PASSWORD_MIN_CHARS {
        bad("password", "must be at least 12 characters");
    } else if p.len() > PASSWORD_MAX_BYTES {
        bad("password", "must be at most 128 bytes");
    } else if COMMON_PASSWORDS.contains(p.to_lowercase().as_str()) {
        bad("password", "is too common; choose another");
    } else if p.to_lowercase().contains(&u.to_lowercase()) && u.len() >= 3 {
        bad("password", "must not contain the username");
    }
    errors
}

/// Characters no name or address may hold: control characters (NUL among
/// them, which PostgreSQL refuses in text) and Unicode format characters
/// (U+202E right-to-left override, U+200D zero-width joiner, …: invisible,
/// they let one name display as another).
pub fn hostile(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_control() || c.general_category() == GeneralCategory::Format
}

/// A pragmatic check (RFC 5321 lengths, one @, dotted domain, no spaces,
/// nothing [`hostile`]); the real proof of an address is mail delivery.
fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.rsplit_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !e.chars().any(|c| c.is_whitespace() || hostile(c))
        && !local.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_hostile() {
        for c in [
            '\0', '\u{7}', '\u{1b}', '\u{7f}', '\u{202e}', '\u{200d}', '\u{200b}', '\u{feff}',
            '\u{2066}',
        ] {
            assert!(hostile(c), "{c:?}");
        }
        for c in ['a', 'é', 'ß', '字', '-', '@', '😀'] {
            assert!(!hostile(c), "{c:?}");
        }
        assert!(!valid_email("rosa\u{202e}moc@nine-nine.example"));
        assert!(!valid_email("rosa@nine\u{200d}nine.example"));
        assert!(valid_email("rosa@nine-nine.example"));
    }

    #[test]
    fn email_check_accepts_ordinary_addresses_only() {
        for ok in ["a@b.co", "rosa.diaz+99@nine-nine.example"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@.co", "a@b.", "a b@c.de", "a@b@c.de",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
