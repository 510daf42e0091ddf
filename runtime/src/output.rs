//! Printing: human tables by default, JSON with `--json`.

use std::io::Write;

use serde::Serialize;

use crate::ops::{OpError, OpResult};

pub fn json<T: Serialize>(value: &T) -> OpResult {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(|e| OpError::Usage(format!("json: {e}")))?;
    writeln!(out).map_err(|e| OpError::local("stdout", e))
}

/// `s` safe to print to a terminal: names and paths come from agents, so
/// control characters (a newline, an escape sequence) and the invisible
/// marks that reorder text (right-to-left overrides) are shown escaped, as
/// Rust escapes them (`\n`, `\u{1b}`, `\u{202e}`), and a backslash as
/// `\\`; everything else is printed as it is. JSON output is escaped by
/// JSON itself.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Nanoseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_an_agent_names_cannot_drive_the_terminal() {
        use super::shown;
        assert_eq!(shown("notes.txt"), "notes.txt");
        assert_eq!(shown("héllo wörld ✓"), "héllo wörld ✓");
        assert_eq!(shown("a\nb"), "a\\nb");
        assert_eq!(shown("\x1b]0;pwned\x07"), "\\u{1b}]0;pwned\\u{7}");
        assert_eq!(shown("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(shown("x\u{2066}y\u{9b}z"), "x\\u{2066}y\\u{9b}z");
        // Escaping cannot be forged: a literal backslash is doubled.
        assert_eq!(shown("a\\nb"), "a\\\\nb");
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00");
        assert_eq!(
            super::time(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20"
        );
    }
}
