//! The auth file (`--auth-file`, TOML): roles of anonymous requests, users with a password
//! hash (HTTP Basic) or a token hash (bearer), and their roles.
//!
//! ```toml
//! anonymous = ["read"]
//! [[users]]
//! name = "orders"
//! password_hash = "$argon2id$v=19$..."   # synod auth hash-password
//! roles = ["read", "register:ORDERS*"]
//! [[users]]
//! name = "deploy-script"
//! token_sha256 = "9f86d0…"               # synod auth new-token
//! roles = ["operator"]
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::roles::Roles;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    anonymous: Vec<String>,
    #[serde(default)]
    users: Vec<UserForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserForm {
    name: String,
    password_hash: Option<String>,
    token_sha256: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// One user of the auth file.
#[derive(Debug)]
pub struct User {
    pub name: Arc<str>,
    /// PHC string of the password's Argon2 hash, checked when the file is read.
    password_hash: Option<String>,
    pub roles: Arc<Roles>,
}

/// What an auth file says, checked whole: a file with any error replaces nothing.
#[derive(Debug, Default)]
pub struct Policy {
    pub anonymous: Arc<Roles>,
    users: HashMap<String, Arc<User>>,
    /// SHA-256 of each bearer token → user name.
    tokens: HashMap<[u8; 32], String>,
}

impl Policy {
    /// Reads and checks an auth file, and the SHA-256 of its text; the error names the file
    /// and what is wrong in it.
    pub fn load(path: &Path) -> Result<(Policy, [u8; 32]), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let policy = Policy::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((policy, sha256(text.as_bytes())))
    }

    /// Checks the text of an auth file.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let form: FileForm = toml::from_str(text).map_err(|e| e.message().replace('\n', " "))?;
        let mut policy = Policy { anonymous: Arc::new(Roles::parse(&form.anonymous)?), ..Default::default() };
        for u in form.users {
            if u.name.is_empty() || u.name.contains(':') || u.name.chars().any(char::is_control) {
                return Err(format!("user name {:?} must be non-empty, without `:` or control characters", u.name));
            }
            let roles = Roles::parse(&u.roles).map_err(|e| format!("user {:?}: {e}", u.name))?;
            if let Some(h) = &u.password_hash {
                PasswordHash::new(h).map_err(|e| {
                    format!("user {:?}: password_hash is not a PHC hash string ({e}); make one with `synod auth hash-password`", u.name)
                })?;
            }
            if let Some(t) = &u.token_sha256 {
                let digest = parse_hex32(t).ok_or_else(|| {
                    format!(
                        "user {:?}: token_sha256 must be 64 hex digits; make one with `synod auth new-token`",
                        u.name
                    )
                })?;
                if policy.tokens.insert(digest, u.name.clone()).is_some() {
                    return Err(format!("user {:?}: the same token is given twice", u.name));
                }
            }
            if u.password_hash.is_none() && u.token_sha256.is_none() {
                return Err(format!("user {:?} has neither password_hash nor token_sha256", u.name));
            }
            let user =
                Arc::new(User { name: u.name.as_str().into(), password_hash: u.password_hash, roles: Arc::new(roles) });
            if policy.users.insert(u.name.clone(), user).is_some() {
                return Err(format!("user {:?} appears twice", u.name));
            }
        }
        Ok(policy)
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&Arc<User>> {
        self.users.get(name)
    }

    /// The user whose bearer token is `token`.
    pub fn token_user(&self, token: &str) -> Option<&Arc<User>> {
        self.tokens.get(&sha256(token.as_bytes())).and_then(|name| self.users.get(name))
    }

    /// How many users the file names.
    pub fn users(&self) -> usize {
        self.users.len()
    }
}

impl User {
    /// Whether `password` is this user's (an Argon2 verification: milliseconds of CPU).
    pub fn password_matches(&self, password: &str) -> bool {
        let Some(stored) = &self.password_hash else { return false };
        match PasswordHash::new(stored) {
            Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
            Err(_) => false,
        }
    }
}

/// Checks `password` against a hash no user has, taking as long as checking a real user's:
/// a refusal of an unknown user name costs and looks the same as one of a wrong password.
pub fn stand_in_check(password: &str) -> bool {
    static STAND_IN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let Some(stand_in) = STAND_IN.get_or_init(|| hash_password(&hex(&new_token().0.into_bytes())).ok()) else {
        return false;
    };
    let Ok(h) = PasswordHash::new(stand_in) else { return false };
    let _ = Argon2::default().verify_password(password.as_bytes(), &h);
    false
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Argon2id hash of `password` with a fresh random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// A new random bearer token and the SHA-256 the auth file keeps of it.
pub fn new_token() -> (String, String) {
    use rand::RngCore;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("synod_{}", hex(&raw));
    let digest = hex(&sha256(token.as_bytes()));
    (token, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_users_and_tokens_is_read() {
        let hash = hash_password("s3cret").unwrap();
        let (token, digest) = new_token();
        let text = format!(
            "anonymous = [\"read\"]\n[[users]]\nname = \"orders\"\npassword_hash = \"{hash}\"\nroles = [\"register:ORDERS*\"]\n\
             [[users]]\nname = \"ci\"\ntoken_sha256 = \"{digest}\"\nroles = [\"operator\"]\n"
        );
        let p = Policy::parse(&text).unwrap();
        assert!(p.anonymous.read);
        let orders = p.user("orders").unwrap();
        assert!(orders.password_matches("s3cret"));
        assert!(!orders.password_matches("s3cret "));
        assert_eq!(&*p.token_user(&token).unwrap().name, "ci");
        assert!(p.token_user("synod_0000").is_none());
        assert!(!p.user("ci").unwrap().password_matches(""));
    }

    #[test]
    fn the_deploy_example_asks_for_real_hashes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/auth.toml");
        let e = Policy::load(&path).unwrap_err();
        assert!(e.contains("synod auth hash-password") && !e.contains('\n'), "{e}");
        let text = std::fs::read_to_string(&path).unwrap();
        let hash = hash_password("x").unwrap();
        let filled = text.replace("password_hash = \"REPLACE\"", &format!("password_hash = \"{hash}\""));
        let filled = filled.replace("token_sha256 = \"REPLACE\"", &format!("token_sha256 = \"{}\"", new_token().1));
        assert_eq!(Policy::parse(&filled).unwrap().users(), 5);
    }

    #[test]
    fn mistakes_are_named() {
        let bad = |t: &str| Policy::parse(t).unwrap_err();
        assert!(bad("anonymous = [\"root\"]").contains("root"));
        assert!(bad("[[users]]\nname = \"a\"\npassword_hash = \"plain\"\n").contains("PHC"));
        assert!(bad("[[users]]\nname = \"a\"\n").contains("neither"));
        assert!(bad("[[users]]\nname = \"a:b\"\ntoken_sha256 = \"00\"\n").contains("`:`"));
        assert!(bad("[[users]]\nname = \"a\"\ntoken_sha256 = \"00\"\n").contains("64 hex"));
        assert!(bad("[[user]]\nname = \"a\"\n").contains("user"));
        let d = "0".repeat(64);
        assert!(bad(&format!(
            "[[users]]\nname = \"a\"\ntoken_sha256 = \"{d}\"\n[[users]]\nname = \"a\"\ntoken_sha256 = \"{}\"\n",
            "1".repeat(64)
        ))
        .contains("twice"));
        assert_eq!(Policy::parse("").unwrap().anonymous, Arc::new(Roles::default()));
    }
}
