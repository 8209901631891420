//! Numbers, money, dates and times written the way the reader reads them.
//!
//! Every figure the portal shows is an exact integer (grams, đồng, counts, hundredths of a
//! percent), so nothing here goes through floating point: a rounding error in a published
//! national figure is a correction notice, not a cosmetic bug. Vietnamese comes first: it groups
//! thousands with `.` and writes decimals with `,`; English does the opposite.
//!
//! Minus signs are the ASCII hyphen-minus (`-`), the character people type and spreadsheets
//! read back; symbols (`đ`, `%`, `triệu`) are joined to the number with a NO-BREAK SPACE
//! ([`NBSP`]) so a narrow phone screen never wraps a figure away from its unit.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// The NO-BREAK SPACE (U+00A0) put between a number and its unit, so they never wrap apart.
pub const NBSP: char = '\u{a0}';

/// Vietnam's time zone: UTC+7 all year (Vietnam has no daylight saving time), so a fixed
/// offset is exact and no time-zone database is needed.
pub const VIETNAM: UtcOffset = time::macros::offset!(+7);

/// The languages pages are written in. Vietnamese is the portal's first language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lang {
    /// Vietnamese (`vi`), the default.
    Vi,
    /// English (`en`).
    En,
}

/// Headers longer than this are not read past it: no browser sends one this long, and reading
/// a few kilobytes at most keeps the work per request bounded whatever a client sends.
const ACCEPT_LANGUAGE_MAX_BYTES: usize = 4096;
/// At most this many entries of an Accept-Language header are looked at, for the same reason.
const ACCEPT_LANGUAGE_MAX_ITEMS: usize = 64;

impl Lang {
    /// The BCP 47 primary language subtag: `"vi"` or `"en"` (for `lang` attributes, URLs).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// Reads a language tag such as `vi`, `vi-VN`, `en`, `en-GB` or `EN-us`, case-insensitively.
    ///
    /// Only the primary subtag decides; the tag must otherwise be well formed (subtags of 1 to 8
    /// ASCII letters or digits, separated by `-`; `_` is accepted too, as in POSIX locale names
    /// like `vi_VN`). Returns `None` for any other language or a malformed tag.
    pub fn from_code(code: &str) -> Option<Lang> {
        let mut subtags = code.split(['-', '_']);
        let primary = subtags.next()?;
        let well_formed =
            |s: &str| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !well_formed(primary) || !subtags.all(well_formed) {
            return None;
        }
        if primary.eq_ignore_ascii_case("vi") {
            Some(Lang::Vi)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// Picks the language to answer in from an `Accept-Language` header (RFC 9110 §12.5.4).
    ///
    /// The supported language with the highest q-value wins; among equal q-values the one
    /// listed first wins. `q=0` means "not acceptable" and is never chosen; `*` is ignored (it
    /// says nothing about which of our two languages is preferred, so the caller's default
    /// applies); malformed entries (a bad tag, a bad or repeated `q`, any other parameter) are
    /// skipped. Returns `None` when no entry names Vietnamese or English.
    ///
    /// Never panics, and reads at most the first 4 KiB and 64 entries of the header: an entry
    /// cut by that limit is dropped rather than misread.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let header = if header.len() > ACCEPT_LANGUAGE_MAX_BYTES {
            let mut end = ACCEPT_LANGUAGE_MAX_BYTES;
            while !header.is_char_boundary(end) {
                end -= 1;
            }
            // Drop the entry the cut went through: "en-GB" cut to "en" would be misread.
            let cut = &header[..end];
            match cut.rfind(',') {
                Some(comma) => &cut[..comma],
                None => return None,
            }
        } else {
            header
        };
        let mut best: Option<(u16, Lang)> = None;
        for item in header.split(',').take(ACCEPT_LANGUAGE_MAX_ITEMS) {
            let Some((lang, q)) = parse_accept_language_item(item) else {
                continue;
            };
            // Strictly greater: on a tie the entry listed first stays.
            if q > 0 && best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, lang)| lang)
    }
}

/// One `language-range [ weight ]` entry: the language and its q-value in thousandths, or
/// `None` if the entry is malformed, `*`, or a language we do not serve.
fn parse_accept_language_item(item: &str) -> Option<(Lang, u16)> {
    let mut parts = item.split(';');
    let range = parts.next()?.trim_matches([' ', '\t']);
    let mut q = None;
    for param in parts {
        let param = param.trim_matches([' ', '\t']);
        let (name, value) = param.split_once('=')?;
        // A repeated q or any other parameter is not in the grammar: the entry is malformed.
        if !name.eq_ignore_ascii_case("q") || q.is_some() {
            return None;
        }
        q = Some(parse_qvalue(value)?);
    }
    if range == "*" {
        return None;
    }
    Some((Lang::from_code(range)?, q.unwrap_or(1000)))
}

/// An RFC 9110 qvalue (`0`, `0.5`, `0.125`, `1`, `1.000`) in thousandths, exactly.
fn parse_qvalue(value: &str) -> Option<u16> {
    let (whole, fraction) = match value.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (value, ""),
    };
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in fraction.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The thousands separator and the decimal separator of a language.
fn separators(lang: Lang) -> (char, char) {
    match lang {
        Lang::Vi => ('.', ','),
        Lang::En => (',', '.'),
    }
}

/// Appends the decimal digits of `magnitude`, grouped by thousands.
fn push_grouped(out: &mut String, magnitude: u128, lang: Lang) {
    let digits = magnitude.to_string();
    let (group, _) = separators(lang);
    // Groups of three counted from the right; the leftmost may be shorter.
    let groups: Vec<&[u8]> = digits.as_bytes().rchunks(3).rev().collect();
    for (i, chunk) in groups.iter().enumerate() {
        if i > 0 {
            out.push(group);
        }
        out.extend(chunk.iter().map(|&b| char::from(b)));
    }
}

/// Writes `±magnitude / 10^digits` exactly: grouped integer part, then `digits` fraction
/// digits. `negative` is ignored when the magnitude is zero, so there is never a `-0`.
fn fixed(negative: bool, magnitude: u128, digits: u32, lang: Lang) -> String {
    let (_, point) = separators(lang);
    let mut out = String::new();
    if negative && magnitude != 0 {
        out.push('-');
    }
    // Work on the digit string rather than on 10^digits, which would overflow past 38 digits.
    let text = magnitude.to_string();
    let digits = digits as usize;
    let padded = if text.len() <= digits {
        format!("{}{}", "0".repeat(digits + 1 - text.len()), text)
    } else {
        text
    };
    let (whole, fraction) = padded.split_at(padded.len() - digits);
    // `whole` is all ASCII digits without a sign, so it always parses.
    push_grouped(&mut out, whole.parse().unwrap_or(0), lang);
    if digits > 0 {
        out.push(point);
        out.push_str(fraction);
    }
    out
}

/// Rounds `magnitude / divisor` to the nearest integer, halves away from zero.
fn div_round(magnitude: u128, divisor: u128) -> u128 {
    (magnitude + divisor / 2) / divisor
}

/// An integer with thousands grouped: `1.234.567` (vi), `1,234,567` (en), `-1.234`.
/// Works for the whole `i64` range, `i64::MIN` included.
pub fn integer(n: i64, lang: Lang) -> String {
    fixed(n < 0, u128::from(n.unsigned_abs()), 0, lang)
}

/// A fixed-point number given as an integer scaled by 10^`digits`, written exactly:
/// `decimal(12345, 1, Vi)` is `1.234,5`, `decimal(12345, 1, En)` is `1,234.5`,
/// `decimal(-5, 1, Vi)` is `-0,5`. With `digits` 0 it is [`integer`].
///
/// The output has exactly `digits` fraction digits (zero-padded), so its length grows with
/// `digits`; callers pass a small constant.
pub fn decimal(value_times_10_pow_digits: i64, digits: u32, lang: Lang) -> String {
    let n = value_times_10_pow_digits;
    fixed(n < 0, u128::from(n.unsigned_abs()), digits, lang)
}

/// A mass in grams written in tonnes with one decimal, rounded half away from zero; the
/// number only, no unit: `26_000_049_999` g is `26.000,0` (vi) / `26,000.0` (en),
/// `26_000_050_000` g is `26.000,1`. A mass that rounds to zero is `0,0`, never `-0,0`.
pub fn tonnes(grams: i64, lang: Lang) -> String {
    // One decimal of a tonne is 100 kg = 100,000 g.
    let tenths = div_round(u128::from(grams.unsigned_abs()), 100_000);
    fixed(grams < 0, tenths, 1, lang)
}

/// An amount of Vietnamese đồng: `1.234.567 đ` (vi), `1,234,567 ₫` (en), the symbol joined by a
/// NO-BREAK SPACE. Vietnamese readers write `đ`; `₫` (U+20AB) is the international sign.
pub fn money_vnd(dong: i64, lang: Lang) -> String {
    let symbol = match lang {
        Lang::Vi => 'đ',
        Lang::En => '₫',
    };
    format!("{}{NBSP}{symbol}", integer(dong, lang))
}

/// A percentage given in hundredths of a percent: `245` is `2,45 %` (vi, NO-BREAK SPACE before
/// `%` as Vietnamese typography has it) and `2.45%` (en).
pub fn percent(hundredths: i64, lang: Lang) -> String {
    let number = decimal(hundredths, 2, lang);
    match lang {
        Lang::Vi => format!("{number}{NBSP}%"),
        Lang::En => format!("{number}%"),
    }
}

/// A short label for chart axes and small tiles.
///
/// Below 1,000 (in absolute value) the exact integer; above, one decimal of the largest unit
/// that fits, rounded half away from zero, with a trailing `,0`/`.0` dropped:
/// `12 nghìn`, `1,2 triệu`, `3,4 tỷ`, `5 nghìn tỷ` (vi) and `12K`, `1.2M`, `3.4B`, `5T` (en).
/// Vietnamese units follow the number after a NO-BREAK SPACE. A value that rounds up to 1,000
/// of a unit moves to the next unit (`999_999` is `1 triệu`, not `1.000 nghìn`). Beyond the
/// largest unit (10^12) the number of that unit is grouped (`9.223.372 nghìn tỷ` for
/// `i64::MAX`).
pub fn compact(n: i64, lang: Lang) -> String {
    const UNITS: [(u128, &str, &str); 4] = [
        (1_000, "nghìn", "K"),
        (1_000_000, "triệu", "M"),
        (1_000_000_000, "tỷ", "B"),
        (1_000_000_000_000, "nghìn tỷ", "T"),
    ];
    let magnitude = u128::from(n.unsigned_abs());
    if magnitude < 1_000 {
        return integer(n, lang);
    }
    // The largest unit not above the value, then one up if rounding reached 1,000 of it.
    let mut index = UNITS
        .iter()
        .rposition(|&(unit, _, _)| magnitude >= unit)
        .unwrap_or(0);
    let mut tenths = div_round(magnitude * 10, UNITS[index].0);
    if tenths >= 10_000 && index + 1 < UNITS.len() {
        index += 1;
        tenths = div_round(magnitude * 10, UNITS[index].0);
    }
    let (_, vi, en) = UNITS[index];
    let (whole, tenth) = (tenths / 10, tenths % 10);
    let number = if tenth == 0 {
        fixed(n < 0, whole, 0, lang)
    } else {
        fixed(n < 0, tenths, 1, lang)
    };
    match lang {
        Lang::Vi => format!("{number}{NBSP}{vi}"),
        Lang::En => format!("{number}{en}"),
    }
}

/// English month abbreviations, January first.
const MONTHS_EN: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The English abbreviation of a month.
fn month_en(month: Month) -> &'static str {
    // `Month` is 1-based; every value indexes the table.
    MONTHS_EN
        .get(usize::from(u8::from(month)) - 1)
        .copied()
        .unwrap_or("")
}

/// A calendar date: `01/12/2026` (vi, dd/mm/yyyy as Vietnamese forms write it) and
/// `1 Dec 2026` (en, day-month-year with the month spelled so it cannot be read as US m/d).
pub fn date(d: Date, lang: Lang) -> String {
    match lang {
        Lang::Vi => format!("{:02}/{:02}/{:04}", d.day(), u8::from(d.month()), d.year()),
        Lang::En => format!("{} {} {:04}", d.day(), month_en(d.month()), d.year()),
    }
}

/// A month of a year: `tháng 12/2026` (vi) and `Dec 2026` (en), for monthly chart periods and
/// report headings.
pub fn month(year: i32, month: Month, lang: Lang) -> String {
    match lang {
        Lang::Vi => format!("tháng {}/{:04}", u8::from(month), year),
        Lang::En => format!("{} {:04}", month_en(month), year),
    }
}

/// A moment in Vietnam's time, whatever offset it carries: `14:05 01/12/2026` (vi) and
/// `14:05, 1 Dec 2026` (en), 24-hour clock. Never RFC 3339: that is for machines.
///
/// A moment so close to the end of the supported calendar (year 9999) that it has no UTC+7
/// form is written at its own offset rather than failing.
pub fn date_time(t: OffsetDateTime, lang: Lang) -> String {
    let local = t.checked_to_offset(VIETNAM).unwrap_or(t);
    let clock = format!("{:02}:{:02}", local.hour(), local.minute());
    match lang {
        Lang::Vi => format!("{clock} {}", date(local.date(), lang)),
        Lang::En => format!("{clock}, {}", date(local.date(), lang)),
    }
}

/// Parses an RFC 3339 timestamp (`2026-12-01T07:05:00Z`, `2026-12-01T14:05:00+07:00`), as the
/// other services send them; `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};
    use Lang::{En, Vi};

    #[test]
    fn lang_codes() {
        assert_eq!(Vi.code(), "vi");
        assert_eq!(En.code(), "en");
        for (code, lang) in [
            ("vi", Some(Vi)),
            ("vi-VN", Some(Vi)),
            ("VI-vn", Some(Vi)),
            ("vi_VN", Some(Vi)),
            ("en", Some(En)),
            ("en-GB", Some(En)),
            ("en-US", Some(En)),
            ("EN", Some(En)),
            ("fr", None),
            ("", None),
            ("vi-", None),
            ("-vi", None),
            ("vie", None),
            ("vietnamese", None),
            ("en GB", None),
            ("en-toolongsubtag", None),
            ("*", None),
        ] {
            assert_eq!(Lang::from_code(code), lang, "{code:?}");
        }
    }

    #[test]
    fn accept_language_honours_q_values() {
        assert_eq!(Lang::from_accept_language("en;q=0.5, vi;q=0.9"), Some(Vi));
        assert_eq!(Lang::from_accept_language("fr, en-GB;q=0.8"), Some(En));
        assert_eq!(
            Lang::from_accept_language("vi-VN,vi;q=0.9,en-US;q=0.8,en;q=0.7"),
            Some(Vi)
        );
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9"), Some(En));
        // Equal q: the first listed wins.
        assert_eq!(Lang::from_accept_language("en;q=0.8, vi;q=0.8"), Some(En));
        assert_eq!(Lang::from_accept_language("en;q=0.800, vi;q=0.8"), Some(En));
        // q=0 is "not acceptable".
        assert_eq!(Lang::from_accept_language("vi;q=0, en;q=0.1"), Some(En));
        assert_eq!(Lang::from_accept_language("vi;q=0.000"), None);
        assert_eq!(
            Lang::from_accept_language("en;Q=1.000 , vi;q=0.999"),
            Some(En)
        );
        assert_eq!(
            Lang::from_accept_language("en;q=0.5 \t,\tvi ; q=0.6"),
            Some(Vi)
        );
    }

    #[test]
    fn accept_language_skips_star_and_malformed_entries() {
        assert_eq!(Lang::from_accept_language("*"), None);
        assert_eq!(Lang::from_accept_language("*, en;q=0.1"), Some(En));
        assert_eq!(Lang::from_accept_language("vi;q=2, en;q=0.5"), Some(En));
        assert_eq!(
            Lang::from_accept_language("vi;q=1.5, vi;q=0.1234, vi;q=, vi;q=.5"),
            None
        );
        assert_eq!(
            Lang::from_accept_language("vi;q=0.9;q=0.1, en;q=0.2"),
            Some(En)
        );
        assert_eq!(Lang::from_accept_language("vi;level=1, en;q=0.2"), Some(En));
        assert_eq!(Lang::from_accept_language("vi;q=-0.5, en;q=0.2"), Some(En));
    }

    #[test]
    fn accept_language_garbage_is_none() {
        for garbage in [
            "",
            ",,,",
            ";;;",
            "q=1",
            ";q=1",
            "xx-!!",
            "\u{0}",
            "đ;q=ö",
            "vi;q=0.ㅤ",
            "日本語",
        ] {
            assert_eq!(Lang::from_accept_language(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn accept_language_long_header_is_bounded() {
        // Far past the limits: still answers, from the entries read.
        let long = format!("en;q=0.1,{}", "fr;q=0.5,".repeat(100_000));
        assert_eq!(Lang::from_accept_language(&long), Some(En));
        let late = format!("{}vi", "fr,".repeat(100));
        assert_eq!(Lang::from_accept_language(&late), None);
        // A header cut through a multi-byte character or an entry: no panic, cut entry dropped.
        let multibyte = format!("vi;q=0.2,{}", "đ".repeat(5000));
        assert_eq!(Lang::from_accept_language(&multibyte), Some(Vi));
        let one_huge = "x".repeat(10_000);
        assert_eq!(Lang::from_accept_language(&one_huge), None);
        let cut_entry = format!("{}en", " ".repeat(ACCEPT_LANGUAGE_MAX_BYTES - 2));
        assert_eq!(Lang::from_accept_language(&format!("{cut_entry}-GB")), None);
    }

    #[test]
    fn integers_group_thousands() {
        assert_eq!(integer(0, Vi), "0");
        assert_eq!(integer(0, En), "0");
        assert_eq!(integer(999, Vi), "999");
        assert_eq!(integer(1000, Vi), "1.000");
        assert_eq!(integer(1_234_567, Vi), "1.234.567");
        assert_eq!(integer(1_234_567, En), "1,234,567");
        assert_eq!(integer(-1234, Vi), "-1.234");
        assert_eq!(integer(-1234, En), "-1,234");
        assert_eq!(integer(-999, En), "-999");
        assert_eq!(integer(i64::MAX, Vi), "9.223.372.036.854.775.807");
        assert_eq!(integer(i64::MIN, Vi), "-9.223.372.036.854.775.808");
        assert_eq!(integer(i64::MIN, En), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(12345, 1, Vi), "1.234,5");
        assert_eq!(decimal(12345, 1, En), "1,234.5");
        assert_eq!(decimal(-5, 1, Vi), "-0,5");
        assert_eq!(decimal(-5, 1, En), "-0.5");
        assert_eq!(decimal(-5, 3, En), "-0.005");
        assert_eq!(decimal(0, 2, Vi), "0,00");
        assert_eq!(decimal(7, 0, Vi), "7");
        assert_eq!(decimal(-1_234_500, 2, Vi), "-12.345,00");
        assert_eq!(decimal(i64::MIN, 2, En), "-92,233,720,368,547,758.08");
        assert_eq!(decimal(i64::MAX, 19, Vi), "0,9223372036854775807");
        assert_eq!(decimal(1, 25, En), "0.0000000000000000000000001");
    }

    #[test]
    fn tonnes_round_half_away_from_zero() {
        assert_eq!(tonnes(26_000_049_999, Vi), "26.000,0");
        assert_eq!(tonnes(26_000_049_999, En), "26,000.0");
        assert_eq!(tonnes(26_000_050_000, Vi), "26.000,1");
        assert_eq!(tonnes(0, Vi), "0,0");
        assert_eq!(tonnes(49_999, En), "0.0");
        assert_eq!(tonnes(50_000, En), "0.1");
        assert_eq!(tonnes(-49_999, Vi), "0,0");
        assert_eq!(tonnes(-50_000, Vi), "-0,1");
        assert_eq!(tonnes(-1_250_000, En), "-1.3");
        assert_eq!(tonnes(i64::MAX, En), "9,223,372,036,854.8");
        assert_eq!(tonnes(i64::MIN, Vi), "-9.223.372.036.854,8");
    }

    #[test]
    fn money_in_dong() {
        assert_eq!(money_vnd(1_234_567, Vi), "1.234.567\u{a0}đ");
        assert_eq!(money_vnd(1_234_567, En), "1,234,567\u{a0}₫");
        assert_eq!(money_vnd(0, Vi), "0\u{a0}đ");
        assert_eq!(money_vnd(-50_000, Vi), "-50.000\u{a0}đ");
        assert_eq!(money_vnd(i64::MIN, En), "-9,223,372,036,854,775,808\u{a0}₫");
    }

    #[test]
    fn percentages_in_hundredths() {
        assert_eq!(percent(245, Vi), "2,45\u{a0}%");
        assert_eq!(percent(245, En), "2.45%");
        assert_eq!(percent(0, Vi), "0,00\u{a0}%");
        assert_eq!(percent(10_000, En), "100.00%");
        assert_eq!(percent(-5, En), "-0.05%");
        assert_eq!(percent(123_456, Vi), "1.234,56\u{a0}%");
    }

    #[test]
    fn compact_labels() {
        let nb = '\u{a0}';
        assert_eq!(compact(0, Vi), "0");
        assert_eq!(compact(999, En), "999");
        assert_eq!(compact(-999, Vi), "-999");
        assert_eq!(compact(1_000, Vi), format!("1{nb}nghìn"));
        assert_eq!(compact(12_000, Vi), format!("12{nb}nghìn"));
        assert_eq!(compact(12_000, En), "12K");
        assert_eq!(compact(12_345, En), "12.3K");
        assert_eq!(compact(1_200_000, Vi), format!("1,2{nb}triệu"));
        assert_eq!(compact(1_200_000, En), "1.2M");
        assert_eq!(compact(1_250_000, En), "1.3M");
        assert_eq!(compact(1_249_999, En), "1.2M");
        assert_eq!(compact(3_400_000_000, Vi), format!("3,4{nb}tỷ"));
        assert_eq!(compact(3_400_000_000, En), "3.4B");
        assert_eq!(compact(-3_450_000_000, En), "-3.5B");
        assert_eq!(compact(-1_200_000, Vi), format!("-1,2{nb}triệu"));
        // Rounding up to 1,000 of a unit moves to the next unit.
        assert_eq!(compact(999_949, En), "999.9K");
        assert_eq!(compact(999_950, En), "1M");
        assert_eq!(compact(999_999_999, Vi), format!("1{nb}tỷ"));
        assert_eq!(compact(5_000_000_000_000, Vi), format!("5{nb}nghìn tỷ"));
        assert_eq!(compact(i64::MAX, Vi), format!("9.223.372{nb}nghìn tỷ"));
        assert_eq!(compact(i64::MAX, En), "9,223,372T");
        assert_eq!(compact(i64::MIN, En), "-9,223,372T");
        assert_eq!(compact(1_234_567_890_123_456, En), "1,234.6T");
    }

    #[test]
    fn dates_and_months() {
        assert_eq!(date(date!(2026 - 12 - 01), Vi), "01/12/2026");
        assert_eq!(date(date!(2026 - 12 - 01), En), "1 Dec 2026");
        assert_eq!(date(date!(2026 - 01 - 31), En), "31 Jan 2026");
        assert_eq!(date(date!(0987 - 05 - 09), Vi), "09/05/0987");
        assert_eq!(month(2026, Month::December, Vi), "tháng 12/2026");
        assert_eq!(month(2026, Month::December, En), "Dec 2026");
        assert_eq!(month(2026, Month::March, Vi), "tháng 3/2026");
        assert_eq!(month(2026, Month::January, En), "Jan 2026");
    }

    #[test]
    fn date_times_are_in_vietnam_time() {
        let t = datetime!(2026-12-01 07:05 UTC);
        assert_eq!(date_time(t, Vi), "14:05 01/12/2026");
        assert_eq!(date_time(t, En), "14:05, 1 Dec 2026");
        // Near midnight UTC: already the next day (and here the next year) in Vietnam.
        let late = datetime!(2026-12-31 17:30 UTC);
        assert_eq!(date_time(late, Vi), "00:30 01/01/2027");
        assert_eq!(date_time(late, En), "00:30, 1 Jan 2027");
        // Whatever offset the moment carries.
        let paris = datetime!(2026-06-15 23:59 +02:00);
        assert_eq!(date_time(paris, Vi), "04:59 16/06/2026");
        let hanoi = datetime!(2026-06-15 23:59 +07:00);
        assert_eq!(date_time(hanoi, En), "23:59, 15 Jun 2026");
        // At the end of the calendar there is no UTC+7 form: no panic.
        let end = datetime!(9999-12-31 23:59 UTC);
        assert_eq!(date_time(end, Vi), "23:59 31/12/9999");
    }

    #[test]
    fn rfc3339_parsing() {
        let t = parse_rfc3339("2026-12-01T07:05:00Z").unwrap();
        assert_eq!(t, datetime!(2026-12-01 07:05 UTC));
        assert_eq!(date_time(t, Vi), "14:05 01/12/2026");
        let offset = parse_rfc3339("2026-12-01T14:05:00.123+07:00").unwrap();
        assert_eq!(offset.to_offset(UtcOffset::UTC).hour(), 7);
        assert_eq!(parse_rfc3339("01/12/2026"), None);
        assert_eq!(parse_rfc3339(""), None);
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
    }
}
