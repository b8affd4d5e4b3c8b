//! Eureka's status override rule chain (`FirstMatchWinsCompositeRule`): decides the status
//! an instance gets on registration from what it reports, any override an operator set, and
//! what the server already believed.

use super::model::Status;

/// Inputs of the rule chain.
pub struct RuleInput {
    /// The status the instance reports.
    pub reported: Status,
    /// An operator-set override, if any.
    pub override_status: Option<Status>,
    /// The status currently stored for an existing registration, if any.
    pub existing: Option<Status>,
    /// Replicated from a peer (skips the lease-exists rule).
    pub from_peer: bool,
}

/// Applies the rules in order; the first that matches decides.
///
/// 1. A client saying DOWN, STARTING or UNKNOWN is trusted: it knows it is not ready.
/// 2. An override wins over an UP or OUT_OF_SERVICE report.
/// 3. For a client (not a peer), an existing UP/OUT_OF_SERVICE view is kept.
/// 4. Otherwise the reported status.
pub fn resolve_status(input: &RuleInput) -> Status {
    if !matches!(input.reported, Status::Up | Status::OutOfService) {
        return input.reported;
    }
    if let Some(o) = input.override_status {
        return o;
    }
    if !input.from_peer {
        if let Some(existing @ (Status::Up | Status::OutOfService)) = input.existing {
            return existing;
        }
    }
    input.reported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(reported: Status, ov: Option<Status>, existing: Option<Status>, peer: bool) -> RuleInput {
        RuleInput { reported, override_status: ov, existing, from_peer: peer }
    }

    #[test]
    fn not_ready_report_is_trusted_over_an_override() {
        let r = input(Status::Down, Some(Status::OutOfService), Some(Status::Up), false);
        assert_eq!(resolve_status(&r), Status::Down);
        let r = input(Status::Starting, Some(Status::Up), None, false);
        assert_eq!(resolve_status(&r), Status::Starting);
    }

    #[test]
    fn override_wins_over_up() {
        let r = input(Status::Up, Some(Status::OutOfService), Some(Status::Up), false);
        assert_eq!(resolve_status(&r), Status::OutOfService);
    }

    #[test]
    fn existing_out_of_service_sticks_for_clients_but_not_peers() {
        let r = input(Status::Up, None, Some(Status::OutOfService), false);
        assert_eq!(resolve_status(&r), Status::OutOfService);
        let r = input(Status::Up, None, Some(Status::OutOfService), true);
        assert_eq!(resolve_status(&r), Status::Up);
    }

    #[test]
    fn existing_down_does_not_stick() {
        let r = input(Status::Up, None, Some(Status::Down), false);
        assert_eq!(resolve_status(&r), Status::Up);
        let r = input(Status::Up, None, Some(Status::Unknown), false);
        assert_eq!(resolve_status(&r), Status::Up);
    }
}
