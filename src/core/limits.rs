//! Size and character limits on what the registry stores. They keep every persisted record
//! small (well under sled's 128 KiB blob threshold, so each record lives in the fsynced log)
//! and every stored string representable in XML.

use std::collections::BTreeMap;

use super::model::{InstanceInfo, InstanceKey};

/// Most metadata entries per instance.
pub const MAX_METADATA_ENTRIES: usize = 256;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY: usize = 256;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE: usize = 8 * 1024;
/// Most bytes of metadata (keys plus values) per instance.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;
/// Longest identifier (app name, instance id, host name, address, VIP), in bytes.
pub const MAX_NAME: usize = 1024;
/// Longest URL field, in bytes.
pub const MAX_URL: usize = 4 * 1024;
/// Deepest element nesting accepted in XML input.
pub const MAX_XML_DEPTH: usize = 32;
/// Most attributes on one XML element (Eureka's documents carry one or two).
pub const MAX_XML_ATTRIBUTES: usize = 64;
/// Farthest into the future a client's `lastDirtyTimestamp` may lie, in milliseconds. A
/// timestamp years ahead would make every later registration of the instance lose.
pub const MAX_DIRTY_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Whether `s` can be written as XML text: no control characters other than tab, line feed
/// and carriage return, and no non-characters U+FFFE/U+FFFF. One stored string that breaks
/// this would make every XML registry response unparseable.
pub fn is_xml_safe(s: &str) -> bool {
    // Checked on bytes, as every registration runs this over each of its strings: the control
    // characters are single bytes below 0x20, and U+FFFE/U+FFFF are the only characters whose
    // UTF-8 form starts with EF BF BE / EF BF BF.
    let bytes = s.as_bytes();
    !bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0..=0x1F => true,
        0xEF => bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)),
        _ => false,
    })
}

/// Checks a whole metadata map against the limits; the error is a one-line reason.
pub fn check_metadata(m: &BTreeMap<String, String>) -> Result<(), String> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(format!("metadata has more than {MAX_METADATA_ENTRIES} entries"));
    }
    let bytes: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_METADATA_BYTES {
        return Err(format!("metadata is larger than {MAX_METADATA_BYTES} bytes"));
    }
    Ok(())
}

/// Longest lease duration or renewal interval a client may ask for, in seconds.
pub const MAX_LEASE_SECS: u32 = 24 * 3600;
/// Widest `countryId` (a Java `int` in Eureka).
pub const COUNTRY_ID_RANGE: std::ops::RangeInclusive<i64> = i32::MIN as i64..=i32::MAX as i64;

/// Checks one stored text field: at most `max` bytes, XML-safe. The error names the field.
pub fn check_text(field: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{field} is longer than {max} bytes"));
    }
    if !is_xml_safe(s) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

/// Enforces the metadata limits on one entry of the map called `what`.
pub fn check_metadata_entry(key: &str, value: &str, what: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_METADATA_KEY {
        return Err(format!("{what} keys must be 1 to {MAX_METADATA_KEY} bytes"));
    }
    if value.len() > MAX_METADATA_VALUE {
        return Err(format!("{what}.{key} is longer than {MAX_METADATA_VALUE} bytes"));
    }
    if !is_xml_safe(key) || !is_xml_safe(value) {
        return Err(format!("{what} keys and values must not contain control characters"));
    }
    Ok(())
}

/// Checks a metadata map called `what` entry by entry and as a whole.
pub fn check_metadata_map(m: &BTreeMap<String, String>, what: &str) -> Result<(), String> {
    check_metadata(m).map_err(|e| e.replacen("metadata", what, 1))?;
    m.iter().try_for_each(|(k, v)| check_metadata_entry(k, v, what))
}

/// Checks an instance key (from a path or a peer): non-empty names within the limits.
pub fn check_key(key: &InstanceKey) -> Result<(), String> {
    for (field, s) in [("app name", &key.app), ("instance id", &key.id)] {
        if s.trim().is_empty() {
            return Err(format!("missing {field}"));
        }
        check_text(field, s, MAX_NAME)?;
    }
    Ok(())
}

/// Checks a decoded instance against every rule a registration must meet. The HTTP decoders
/// end with it, and the raft leader runs it again on commands forwarded by other nodes, so an
/// instance that reaches the registry by any route meets the same rules.
pub fn check_instance(i: &InstanceInfo) -> Result<(), String> {
    let required =
        [("instanceId", &i.instance_id), ("hostName", &i.host_name), ("ipAddr", &i.ip_addr), ("app", &i.app)];
    for (field, s) in required {
        if s.trim().is_empty() {
            return Err(format!("missing {field}"));
        }
        check_text(field, s, MAX_NAME)?;
    }
    if i.app.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("app must be upper case".into());
    }
    let names = [
        ("sid", &i.sid),
        ("appGroupName", &i.app_group_name),
        ("vipAddress", &i.vip_address),
        ("secureVipAddress", &i.secure_vip_address),
        ("asgName", &i.asg_name),
    ];
    for (field, s) in names {
        s.as_deref().map_or(Ok(()), |s| check_text(field, s, MAX_NAME))?;
    }
    let urls = [
        ("homePageUrl", &i.home_page_url),
        ("statusPageUrl", &i.status_page_url),
        ("healthCheckUrl", &i.health_check_url),
        ("secureHealthCheckUrl", &i.secure_health_check_url),
    ];
    for (field, s) in urls {
        s.as_deref().map_or(Ok(()), |s| check_text(field, s, MAX_URL))?;
    }
    if i.data_center_info.name.trim().is_empty() {
        return Err("Missing dataCenterInfo Name".into());
    }
    check_text("dataCenterInfo.name", &i.data_center_info.name, MAX_NAME)?;
    check_metadata_map(&i.data_center_info.metadata, "dataCenterInfo.metadata")?;
    check_metadata_map(&i.metadata, "metadata")?;
    for (field, p) in [("port", i.port), ("securePort", i.secure_port)] {
        if p.port > 65535 {
            return Err(format!("{field} must be between 0 and 65535"));
        }
    }
    if !COUNTRY_ID_RANGE.contains(&i.country_id) {
        return Err(format!("countryId must be between {} and {}", COUNTRY_ID_RANGE.start(), COUNTRY_ID_RANGE.end()));
    }
    for (field, secs) in
        [("renewalIntervalInSecs", i.lease.renewal_interval_secs), ("durationInSecs", i.lease.duration_secs)]
    {
        if secs == 0 || secs > MAX_LEASE_SECS {
            return Err(format!("leaseInfo.{field} must be between 1 and {MAX_LEASE_SECS}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_safety() {
        assert!(is_xml_safe("plain text\twith\ttabs\r\n"));
        assert!(!is_xml_safe("a\u{1}b"));
        assert!(!is_xml_safe("\0"));
        assert!(!is_xml_safe("x\u{FFFF}"));
        assert!(is_xml_safe("ünïcödé ✓"));
        assert!(!is_xml_safe("x\u{FFFE}"));
        // Neighbours of the non-characters in UTF-8 (EF BF BD, EF BE BF) are fine.
        assert!(is_xml_safe("\u{FFFD}\u{FFBF}\u{EFFF}"));
        assert!(is_xml_safe("\u{7F}\u{80}"));
    }

    #[test]
    fn xml_safety_matches_the_character_rule() {
        let unsafe_char =
            |c: char| matches!(c, '\u{0}'..='\u{8}' | '\u{B}' | '\u{C}' | '\u{E}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}');
        let samples: Vec<char> =
            "\0\t\n\u{B}\r\u{1F} \u{7F}é\u{EFBF}\u{FFBE}\u{FFFD}\u{FFFE}\u{FFFF}\u{10000}\u{10FFFF}".chars().collect();
        for &a in &samples {
            for &b in &samples {
                let s: String = [a, b].iter().collect();
                assert_eq!(is_xml_safe(&s), !s.chars().any(unsafe_char), "{s:?}");
            }
        }
    }

    #[test]
    fn metadata_totals() {
        let big: BTreeMap<_, _> = (0..5).map(|n| (format!("k{n}"), "v".repeat(8000))).collect();
        assert!(check_metadata(&big).is_err());
        let many: BTreeMap<_, _> = (0..300).map(|n| (format!("k{n}"), String::new())).collect();
        assert!(check_metadata(&many).is_err());
        let fine: BTreeMap<_, _> = (0..3).map(|n| (format!("k{n}"), "v".into())).collect();
        assert!(check_metadata(&fine).is_ok());
    }
}
