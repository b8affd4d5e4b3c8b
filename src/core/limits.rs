//! Size and character limits on what the registry stores. They keep every persisted record
//! small (well under sled's 128 KiB blob threshold, so each record lives in the fsynced log)
//! and every stored string representable in XML.

use std::collections::BTreeMap;

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
