//! Roles and what each allows: `read`, `register:PATTERN`, `operator`, `admin`.

use std::fmt;

/// What a request needs, decided from its method and path alone ([`super::access::need`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Liveness and readiness probes: anyone.
    Open,
    /// Any read of the registry or the node's state.
    Read,
    /// A change to one instance of application `app` (upper case).
    Instance { app: String, act: InstanceAct },
    /// Replication traffic between members: peers only.
    Peer,
    /// Cluster membership changes.
    Admin,
}

/// The kinds of change to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAct {
    Register,
    Renew,
    Cancel,
    Metadata,
    /// Setting or removing a status override.
    Status,
}

impl InstanceAct {
    /// The verb, for refusals and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceAct::Register => "register",
            InstanceAct::Renew => "renew",
            InstanceAct::Cancel => "cancel",
            InstanceAct::Metadata => "change the metadata of",
            InstanceAct::Status => "override the status of",
        }
    }
}

/// An application-name pattern of a `register:` role: an exact name, or a prefix followed by
/// `*`. Compared in upper case, as Eureka stores application names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPattern {
    text: String,
    prefix: bool,
}

impl AppPattern {
    fn parse(s: &str) -> Result<AppPattern, String> {
        let (text, prefix) = match s.strip_suffix('*') {
            Some(p) => (p, true),
            None => (s, false),
        };
        if text.contains('*') {
            return Err(format!("{s:?}: `*` is allowed only at the end of a pattern"));
        }
        if text.is_empty() && !prefix {
            return Err("an empty application pattern (use `*` for every application)".into());
        }
        Ok(AppPattern { text: text.to_ascii_uppercase(), prefix })
    }

    /// Whether `app` (upper case) matches.
    pub fn matches(&self, app: &str) -> bool {
        if self.prefix {
            app.len() >= self.text.len() && app.as_bytes()[..self.text.len()].eq_ignore_ascii_case(self.text.as_bytes())
        } else {
            app.eq_ignore_ascii_case(&self.text)
        }
    }
}

impl fmt::Display for AppPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.text, if self.prefix { "*" } else { "" })
    }
}

/// The roles of one principal, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles {
    pub read: bool,
    pub operator: bool,
    pub admin: bool,
    pub register: Vec<AppPattern>,
}

impl Roles {
    /// Every client role: what requests get on a node without an auth file.
    pub fn all() -> Roles {
        Roles {
            read: true,
            operator: true,
            admin: true,
            register: vec![AppPattern { text: String::new(), prefix: true }],
        }
    }

    /// Parses role names as written in the auth file.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Roles, String> {
        let mut roles = Roles::default();
        for name in names {
            let name = name.as_ref().trim();
            match name {
                "read" => roles.read = true,
                "operator" => roles.operator = true,
                "admin" => roles.admin = true,
                _ => match name.strip_prefix("register:") {
                    Some(p) => roles.register.push(AppPattern::parse(p.trim())?),
                    None => {
                        return Err(format!(
                            "unknown role {name:?} (roles are read, register:PATTERN, operator, admin)"
                        ))
                    }
                },
            }
        }
        Ok(roles)
    }

    /// Whether a registration by these roles may announce the VIP address `vip`: one of its
    /// `register:` patterns must match it (VIPs are names clients look services up by, so an
    /// application must not claim another's). Admins may announce any.
    pub fn may_announce(&self, vip: &str) -> bool {
        self.admin || self.register.iter().any(|p| p.matches(vip))
    }

    /// Whether these roles allow `need`; the refusal's one-line reason otherwise. Peer
    /// traffic is not decided here: it needs peer credentials, not a role.
    pub fn allows(&self, need: &Need) -> Result<(), String> {
        if self.admin {
            return match need {
                Need::Peer => Err("replication routes are for cluster members only".into()),
                _ => Ok(()),
            };
        }
        match need {
            Need::Open => Ok(()),
            // Operators act on what they see.
            Need::Read if self.read || self.operator => Ok(()),
            Need::Read => Err("reading the registry needs the read role".into()),
            Need::Instance { app, act } => {
                if self.operator && matches!(act, InstanceAct::Status | InstanceAct::Cancel) {
                    return Ok(());
                }
                if self.register.iter().any(|p| p.matches(app)) {
                    return Ok(());
                }
                Err(format!("no role allows to {} instances of {app}", act.as_str()))
            }
            Need::Peer => Err("replication routes are for cluster members only".into()),
            Need::Admin => Err("changing cluster membership needs the admin role".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(app: &str, act: InstanceAct) -> Need {
        Need::Instance { app: app.into(), act }
    }

    #[test]
    fn register_roles_stay_within_their_applications() {
        let r = Roles::parse(&["read", "register:ORDERS*"]).unwrap();
        assert!(r.allows(&Need::Read).is_ok());
        for act in [InstanceAct::Register, InstanceAct::Renew, InstanceAct::Cancel, InstanceAct::Metadata] {
            assert!(r.allows(&inst("ORDERS", act)).is_ok());
            assert!(r.allows(&inst("ORDERS-EU", act)).is_ok());
            assert!(r.allows(&inst("BILLING", act)).is_err());
            assert!(r.allows(&inst("ORDER", act)).is_err());
        }
        assert!(r.allows(&Need::Admin).is_err());
        assert!(r.allows(&Need::Peer).is_err());
        let exact = Roles::parse(&["register:billing"]).unwrap();
        assert!(exact.allows(&inst("BILLING", InstanceAct::Register)).is_ok());
        assert!(exact.allows(&inst("BILLING2", InstanceAct::Register)).is_err());
        assert!(exact.allows(&Need::Read).is_err());
    }

    #[test]
    fn operators_override_and_cancel_but_do_not_register() {
        let r = Roles::parse(&["operator"]).unwrap();
        assert!(r.allows(&inst("ANY", InstanceAct::Status)).is_ok());
        assert!(r.allows(&inst("ANY", InstanceAct::Cancel)).is_ok());
        assert!(r.allows(&inst("ANY", InstanceAct::Register)).is_err());
        assert!(r.allows(&Need::Read).is_ok());
        assert!(r.allows(&Need::Admin).is_err());
    }

    #[test]
    fn admin_is_everything_but_a_peer() {
        let r = Roles::parse(&["admin"]).unwrap();
        assert!(r.allows(&Need::Admin).is_ok());
        assert!(r.allows(&inst("X", InstanceAct::Register)).is_ok());
        assert!(r.allows(&Need::Peer).is_err());
    }

    #[test]
    fn bad_roles_are_named() {
        assert!(Roles::parse(&["superuser"]).unwrap_err().contains("superuser"));
        assert!(Roles::parse(&["register:A*B"]).is_err());
        assert!(Roles::parse(&["register:"]).is_err());
        assert!(Roles::parse(&["register:*"]).unwrap().allows(&inst("Z", InstanceAct::Renew)).is_ok());
    }
}
