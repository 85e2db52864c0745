//! One pass over a payload's JSON text (valid JSON: serde_json read it): its length without
//! insignificant whitespace, and the first thing in it that Postgres' `jsonb` would refuse, so
//! that no such payload reaches the database (where it would fail its whole batch).
//!
//! What `jsonb` refuses in valid JSON, found by trying (Postgres 15): `\u0000`; a `\u` escape of
//! a lone UTF-16 surrogate; a number its `numeric` cannot hold; and nesting deep enough to
//! exhaust its stack (`54001`, at a few thousand levels), which a limit far below that rules out.

use super::PayloadProblem;

/// The deepest nesting of objects and arrays in a payload; the payload object itself is level 1.
pub const MAX_PAYLOAD_DEPTH: usize = 64;
/// Postgres `numeric` holds at most this many digits before the decimal point (a weight of at
/// most 32,767 base-10,000 digits).
pub const NUMERIC_MAX_INTEGER_DIGITS: i64 = 131_072;
/// Postgres `numeric` holds at most this many digits after the decimal point (its display scale
/// has 14 bits).
pub const NUMERIC_MAX_SCALE: i64 = 16_383;
/// `numeric_in` refuses an exponent this large (`INT_MAX / 2`) whatever the digits, even of zero.
const NUMERIC_EXPONENT_LIMIT: i64 = 1_073_741_823;

/// What the pass found.
pub(super) struct Scan {
    /// Bytes of the text without whitespace outside strings.
    pub(super) compact_len: usize,
    /// The first thing Postgres could not store, if any.
    pub(super) problem: Option<PayloadProblem>,
}

/// Read the text once: strings are searched for their escapes (literal control characters
/// cannot occur in strings of valid JSON, so `\u0000` is the only way to spell NUL), numbers are
/// measured as Postgres reads them when they could be out of range, and the nesting is counted
/// (reported after anything else found). Shaped by measurement (`deploy/local/bench-parse.sh`,
/// BENCHMARKS.md): a chain of `if`s on the byte rather than a `match` (a jump table: measurably
/// slower on structured payloads), brackets counted without a branch, strings searched out of
/// line.
pub(super) fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    // Locals rather than the fields of a `Scan`: a field next to the `problem` the helpers
    // borrow would be kept in memory rather than in a register.
    let mut problem = None;
    let (mut compact_len, mut depth, mut deepest, mut i) = (0, 0isize, 0isize, 0);
    while let Some(&b) = bytes.get(i) {
        if b == b'"' {
            let end = string_end(bytes, i + 1, &mut problem);
            compact_len += end - i;
            i = end;
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        } else if b.is_ascii_digit() || b == b'-' {
            let end = number_end(bytes, i, &mut problem);
            compact_len += end - i;
            i = end;
        } else {
            // Brackets, `,`, `:`, the letters of `true`, `false` and `null`.
            depth += isize::from(b == b'{' || b == b'[') - isize::from(b == b'}' || b == b']');
            deepest = deepest.max(depth);
            compact_len += 1;
            i += 1;
        }
    }
    if deepest > MAX_PAYLOAD_DEPTH as isize {
        note(&mut problem, PayloadProblem::TooDeep);
    }
    Scan { compact_len, problem }
}

/// Keep the first problem found.
fn note(problem: &mut Option<PayloadProblem>, found: PayloadProblem) {
    problem.get_or_insert(found);
}

/// The index just past the closing quote of the string whose content starts at `i`; notes an
/// escaped NUL and lone surrogates. The next quote or backslash is looked for a word at a time
/// in the next 64 bytes (most strings are short, and memchr's vectorised search costs more to
/// start), then with memchr for long runs of text (~10 times faster than a byte at a time).
#[inline(never)]
fn string_end(bytes: &[u8], mut i: usize, problem: &mut Option<PayloadProblem>) -> usize {
    let specials = memchr::arch::all::memchr::Two::new(b'"', b'\\');
    loop {
        let rest = bytes.get(i..).unwrap_or_default();
        let head = &rest[..rest.len().min(64)];
        let found = match specials.find(head) {
            Some(p) => Some(p),
            None if rest.len() > head.len() => {
                memchr::memchr2(b'"', b'\\', &rest[head.len()..]).map(|p| p + head.len())
            }
            None => None,
        };
        let Some(run) = found else {
            return bytes.len();
        };
        i += run;
        if bytes.get(i) == Some(&b'"') {
            return i + 1;
        }
        i = escape_end(bytes, i, problem);
    }
}

/// The index just past the escape starting (with its backslash) at `i`. A `\u` escape of a high
/// surrogate (`\uD800`-`\uDBFF`) must be followed at once by one of a low surrogate
/// (`\uDC00`-`\uDFFF`), and both are passed; a low one anywhere else is lone.
#[cold]
#[inline(never)]
fn escape_end(bytes: &[u8], i: usize, problem: &mut Option<PayloadProblem>) -> usize {
    let Some(unit) = unicode_escape(bytes, i) else {
        return i + 2;
    };
    match unit {
        0 => note(problem, PayloadProblem::ContainsNul),
        0xD800..=0xDBFF => match unicode_escape(bytes, i + 6) {
            Some(0xDC00..=0xDFFF) => return i + 12,
            _ => note(problem, PayloadProblem::LoneSurrogate),
        },
        0xDC00..=0xDFFF => note(problem, PayloadProblem::LoneSurrogate),
        _ => {}
    }
    i + 6
}

/// The UTF-16 code unit of the `\uXXXX` escape at `i`, if there is one.
fn unicode_escape(bytes: &[u8], i: usize) -> Option<u16> {
    if bytes.get(i..i + 2)? != b"\\u" {
        return None;
    }
    hex_unit(bytes.get(i + 2..i + 6))
}

/// The UTF-16 code unit of the four hex digits of a `\u` escape.
fn hex_unit(digits: Option<&[u8]>) -> Option<u16> {
    digits?.iter().try_fold(0u16, |unit, &d| {
        Some(unit << 4 | u16::try_from(char::from(d).to_digit(16)?).ok()?)
    })
}

/// The index just past the number starting at `i`; notes it when Postgres `numeric` cannot
/// hold it. Read by the JSON grammar (`-? digits (. digits)? ([eE] [+-]? digits)?`); a number
/// of at most 6,000 characters with an exponent of at most 4 digits always fits, only others
/// are measured.
#[inline(always)]
fn number_end(bytes: &[u8], start: usize, problem: &mut Option<PayloadProblem>) -> usize {
    let mut i = digits_end(bytes, start + usize::from(bytes.get(start) == Some(&b'-')));
    if bytes.get(i) == Some(&b'.') {
        i = digits_end(bytes, i + 1);
    }
    let mut exponent_digits = 0;
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1 + usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
        let digits = i;
        i = digits_end(bytes, i);
        exponent_digits = i - digits;
    }
    if (exponent_digits > 4 || i - start > 6_000) && !numeric_holds(&bytes[start..i]) {
        note(problem, PayloadProblem::NumberOutOfRange);
    }
    i
}

/// Whether Postgres `numeric` holds this JSON number, counting as `numeric_in` does: the
/// exponent moves the decimal point, so `1e131072` has 131,073 digits before the point and
/// `1e-16384` 16,384 after it; the digits after the point (the scale) count even when they are
/// zeros, the digits before the point start at the first non-zero digit, and zero has none.
#[cold]
#[inline(never)]
fn numeric_holds(number: &[u8]) -> bool {
    let mut i = usize::from(number.first() == Some(&b'-'));
    // Where the first non-zero digit sits, as a power of ten before the exponent is applied.
    // JSON writes the integer part as `0` or without leading zeros.
    let mut leading: Option<i64> = None;
    let int_end = digits_end(number, i);
    if number.get(i).is_some_and(|&d| d != b'0') {
        leading = Some(to_i64(int_end - i) - 1);
    }
    i = int_end;
    let mut scale = 0;
    if number.get(i) == Some(&b'.') {
        let frac_end = digits_end(number, i + 1);
        scale = to_i64(frac_end - i - 1);
        if leading.is_none()
            && let Some(p) = number[i + 1..frac_end].iter().position(|&d| d != b'0')
        {
            leading = Some(-to_i64(p) - 1);
        }
        i = frac_end;
    }
    let mut exponent = 0;
    if matches!(number.get(i), Some(b'e' | b'E')) {
        i += 1;
        let negative = number.get(i) == Some(&b'-');
        if matches!(number.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        // Saturates at the limit: any exponent that large is refused anyway.
        let magnitude = number[i..digits_end(number, i)].iter().fold(0, |e: i64, &d| {
            (e * 10 + i64::from(d - b'0')).min(NUMERIC_EXPONENT_LIMIT)
        });
        exponent = if negative { -magnitude } else { magnitude };
    }
    exponent.abs() < NUMERIC_EXPONENT_LIMIT
        && scale - exponent <= NUMERIC_MAX_SCALE
        && leading.is_none_or(|power| power + exponent < NUMERIC_MAX_INTEGER_DIGITS)
}

/// The index of the first byte at or after `i` that is not an ASCII digit.
fn digits_end(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// A length as a signed count (a payload's text is far below `i64::MAX` bytes).
fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Option<PayloadProblem> {
        scan(text).problem
    }

    fn nested(depth: usize, open: &str, close: &str) -> String {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn nesting_is_allowed_to_sixty_four_levels_counting_the_payload_object() {
        let objects = |depth: usize| nested(depth, r#"{"a":"#, "}");
        assert_eq!(problem(&objects(64)), None);
        assert_eq!(problem(&objects(65)), Some(PayloadProblem::TooDeep));
        let arrays = |depth: usize| format!("{{\"a\":{}}}", nested(depth - 1, "[", "]"));
        assert_eq!(problem(&arrays(64)), None);
        assert_eq!(problem(&arrays(65)), Some(PayloadProblem::TooDeep));
        // Siblings do not add up, and brackets inside strings are text.
        let wide = format!(
            "{{\"a\":[{}], \"b\": \"[[[[{{{{\"}}",
            vec![nested(62, "[", "]"); 3].join(",")
        );
        assert_eq!(problem(&wide), None);
        assert_eq!(problem(&objects(20_000)), Some(PayloadProblem::TooDeep));
    }

    #[test]
    fn a_surrogate_escape_needs_its_other_half_right_next_to_it() {
        for ok in [
            r#"{"s": "\ud83d\ude00"}"#,
            r#"{"s": "a\uD83D\uDE00b\ud800\udc00"}"#,
            r#"{"\ud83d\ude00": "\u00e9\uffff\ue000"}"#,
            r#"{"s": "\\ud800"}"#,
            r#"{"s": "😀"}"#,
        ] {
            assert_eq!(problem(ok), None, "{ok}");
        }
        for lone in [
            r#"{"s": "\ud800"}"#,
            r#"{"s": "\udc00"}"#,
            r#"{"s": "\ude00\ud83d"}"#,
            r#"{"s": "\ud83dx\ude00"}"#,
            r#"{"s": "\ud83d\n"}"#,
            r#"{"s": "\ud83d\u0041"}"#,
            r#"{"s": "\ud83d\ud83d\ude00"}"#,
            r#"{"\udbff": 1}"#,
        ] {
            assert_eq!(problem(lone), Some(PayloadProblem::LoneSurrogate), "{lone}");
        }
    }

    /// Each boundary was tried on Postgres 15 (`SELECT '<n>'::jsonb`); `ingest/tests/it/payloads.rs`
    /// asks a real Postgres about many more.
    #[test]
    fn numbers_are_refused_exactly_where_postgres_numeric_overflows() {
        let digits = |n| "9".repeat(n);
        let fits = [
            digits(131_072),
            format!("1{}", "0".repeat(131_071)),
            "1e131071".into(),
            "-9.99e131071".into(),
            "0.001e131074".into(),
            format!("0.{}", "0".repeat(16_383)),
            "1e-16383".into(),
            "1.5e-16382".into(),
            "0e1000000".into(),
            "0e1073741822".into(),
            "-0".into(),
            "1e-400".into(),
            "1E+2".into(),
            "0.5e00000000000000000001".into(),
        ];
        for n in &fits {
            assert_eq!(
                problem(&format!("{{\"n\":{n}}}")),
                None,
                "{}",
                &n[..n.len().min(20)]
            );
        }
        let overflow = [
            digits(131_073),
            digits(200_000),
            "1e131072".into(),
            "0.001e131075".into(),
            format!("0.{}", "0".repeat(16_384)),
            "1e-16384".into(),
            "1.5e-16383".into(),
            "15e-16384".into(),
            "0e-20000".into(),
            "0e1073741823".into(),
            "1e1000000".into(),
            "1e99999999999999999999".into(),
        ];
        for n in &overflow {
            assert_eq!(
                problem(&format!("{{\"n\": [{n}]}}")),
                Some(PayloadProblem::NumberOutOfRange),
                "{}",
                &n[..n.len().min(20)]
            );
        }
    }

    #[test]
    fn the_compact_length_counts_everything_but_whitespace_outside_strings() {
        let text = "{ \"a b\" : [ 1.5e3 , true , null ] ,\n\t\"c\\\"\" : \"\\ud83d\\ude00 \" }";
        let compact = "{\"a b\":[1.5e3,true,null],\"c\\\"\":\"\\ud83d\\ude00 \"}";
        assert_eq!(scan(text).compact_len, compact.len());
    }

    #[test]
    fn the_first_problem_is_reported() {
        assert_eq!(
            problem(r#"{"s": "\u0000\ud800", "n": 1e1000000}"#),
            Some(PayloadProblem::ContainsNul)
        );
        assert_eq!(
            problem(r#"{"n": 1e1000000, "s": "\u0000"}"#),
            Some(PayloadProblem::NumberOutOfRange)
        );
        let deep_then_nul = format!(r#"{{"a": {}, "s": "\u0000"}}"#, nested(70, "[", "]"));
        assert_eq!(problem(&deep_then_nul), Some(PayloadProblem::ContainsNul));
    }
}
