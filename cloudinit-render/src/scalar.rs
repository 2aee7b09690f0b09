//! YAML scalar helpers: the safe spelling of one string value where it stands.

use std::fmt::Write as _;

/// The characters that end a plain scalar inside a flow collection (`[a, b]`, `{k: v}`). `?` is
/// one for PyYAML (cloud-init's reader), which ends a flow plain scalar at any `?`.
pub(crate) const FLOW_INDICATORS: [char; 6] = [',', '?', '[', ']', '{', '}'];

/// `s` as one YAML scalar that every YAML 1.1 or 1.2 reader reads back as exactly the string `s`:
/// plain when that is unambiguous, quoted otherwise. `in_flow` also quotes flow indicators.
pub(crate) fn safe_scalar(s: &str, in_flow: bool) -> String {
    let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
    let emitted = match serde_saphyr::to_string_with_options(&s, options) {
        Ok(text) => text.trim_end_matches('\n').to_owned(),
        // Cannot happen for a plain string; double quotes are always correct.
        Err(_) => return double_quoted(s),
    };
    let plain = !emitted.starts_with(['"', '\'']);
    if plain && (emitted != s || (in_flow && s.contains(FLOW_INDICATORS))) {
        return double_quoted(s);
    }
    if emitted.contains('\n') {
        return double_quoted(s);
    }
    emitted
}

/// Whether `s` can stand as a plain (unquoted) scalar in this context and be read back unchanged.
pub(crate) fn is_plain_safe(s: &str, in_flow: bool) -> bool {
    safe_scalar(s, in_flow) == s
}

/// `s` as a YAML double-quoted scalar (with the quotes).
pub(crate) fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    out.push_str(&escape_double_quoted(s));
    out.push('"');
    out
}

/// The body of a double-quoted scalar for `s` (without the quotes). Every character outside
/// printable Unicode, plus `\` and `"`, is escaped; YAML 1.1 readers (PyYAML) and 1.2 readers
/// understand every escape used here.
pub(crate) fn escape_double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if needs_escape(c) => {
                let code = u32::from(c);
                // Writing to a String cannot fail.
                let _ = if code <= 0xFF {
                    write!(out, "\\x{code:02X}")
                } else if code <= 0xFFFF {
                    write!(out, "\\u{code:04X}")
                } else {
                    write!(out, "\\U{code:08X}")
                };
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters YAML does not allow literally in a scalar (outside the printable set), plus the
/// line separators some readers treat as line breaks.
pub(crate) fn needs_escape(c: char) -> bool {
    let code = u32::from(c);
    !(matches!(code, 0x20..=0x7E | 0xA0..=0xD7FF | 0xE000..=0xFFFD | 0x1_0000..=0x10_FFFF)
        && c != '\u{FEFF}'
        && c != '\u{2028}'
        && c != '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_values_are_quoted() {
        for s in [
            "yes", "no", "on", "off", "~", "null", "0755", "12:30", "1e3", ": ", "#", "", "-",
        ] {
            let out = safe_scalar(s, false);
            assert!(out.starts_with(['"', '\'']), "{s:?} -> {out}");
        }
        assert_eq!(safe_scalar("runner-1", false), "runner-1");
        assert_eq!(safe_scalar("a,b", false), "a,b");
        assert_eq!(safe_scalar("a,b", true), "\"a,b\"");
        assert_eq!(safe_scalar("a?b", true), "\"a?b\"");
        assert_eq!(safe_scalar("a?b", false), "a?b");
        assert_eq!(safe_scalar("x\ny", false), "\"x\\ny\"");
        assert_eq!(safe_scalar(&"A".repeat(300), false), "A".repeat(300));
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape_double_quoted("a\"b\\c\u{1}\u{feff}\u{1F600}"),
            "a\\\"b\\\\c\\x01\\uFEFF\u{1F600}"
        );
    }
}
