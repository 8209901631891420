//! CSV files that open cleanly in a spreadsheet, Vietnamese text included: one writer for
//! every service that offers a download (the web's tables, the gateway's `?format=csv`, the
//! indicators service's report export), so every file follows the same rules.
//!
//! The files are written for Excel and LibreOffice as much as for programs: UTF-8 with a byte
//! order mark (without it Excel reads UTF-8 as the local code page and Vietnamese comes out as
//! mojibake), CRLF line endings (RFC 4180), and quoting by the `csv` crate wherever a cell needs
//! it (commas, quotes, line breaks).
//!
//! # Formula injection
//!
//! A spreadsheet runs a cell that starts with `=`, `+`, `-` or `@` as a formula, and some also
//! after a leading TAB or CR; a farm or shop name is typed by the public, so a name such as
//! `=HYPERLINK(…)` must not become a live formula on an official's computer. The rule, applied
//! to every cell, header cells included:
//!
//! * a cell starting with `=`, `+`, `-`, `@`, TAB or CR gets a single quote `'` put before it,
//!   which spreadsheets read as "this is text" (OWASP's advice);
//! * except a cell that is entirely a plain number — an optional leading `-`, digits, and at
//!   most one decimal separator (`.` or `,`) followed by digits, e.g. `-1234`, `-12,5`,
//!   `-0.25` — because negative figures (corrections) are legitimate data and a spreadsheet
//!   cannot run them. Such a cell is written as is.
//!
//! So figures should be written plain, without thousands separators (`-1234567`, not
//! `-1.234.567`): a spreadsheet then reads them as numbers, and a grouped negative figure would
//! be neutralised into text.

use std::borrow::Cow;
use std::fmt::Write as _;

/// The UTF-8 byte order mark, written first so Excel knows the file is UTF-8.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes a CSV file: the BOM, the header row (left out when `headers` is empty), then `rows`,
/// every line ending in CRLF, every cell neutralised against formula injection (see the module
/// documentation for the rule).
///
/// Fails, with a message for the log, when a row does not have as many cells as the first row
/// written (the header row, if any): a column shifted in a statistics download would be read
/// as the wrong figure, which is worse than no download. It does not fail otherwise.
pub fn to_csv(headers: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, String> {
    let mut writer = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::CRLF)
        .from_writer(BOM.to_vec());
    if !headers.is_empty() {
        writer
            .write_record(headers.iter().map(|cell| neutralise(cell)))
            .map_err(|e| format!("CSV header row: {e}"))?;
    }
    for (i, row) in rows.iter().enumerate() {
        writer
            .write_record(row.iter().map(|cell| neutralise(cell)))
            .map_err(|e| format!("CSV row {}: {e}", i + 1))?;
    }
    writer
        .into_inner()
        .map_err(|e| format!("CSV flush: {}", e.error()))
}

/// The cell as it must be written: with a `'` in front when a spreadsheet would otherwise read
/// it as a formula (see the module documentation).
/// Bytes, as the `csv` writer takes them; borrowed in the usual case where nothing changes.
fn neutralise(cell: &str) -> Cow<'_, [u8]> {
    let risky = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(cell) {
        Cow::Owned(format!("'{cell}").into_bytes())
    } else {
        Cow::Borrowed(cell.as_bytes())
    }
}

/// `-?[0-9]+([.,][0-9]+)?`: a number a spreadsheet reads as a number, never as a formula.
fn is_plain_number(cell: &str) -> bool {
    let unsigned = cell.strip_prefix('-').unwrap_or(cell);
    let (whole, fraction) = match unsigned.split_once(['.', ',']) {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// A `Content-Disposition` value that downloads the file under `filename`:
/// `attachment; filename="Ho da len san.csv"; filename*=UTF-8''H%E1%BB%99%20...` (RFC 6266).
///
/// Browsers use the RFC 8187 (formerly 5987) `filename*` with the exact UTF-8 name; the plain
/// `filename` is an ASCII fallback for old clients, with Vietnamese letters stripped of their
/// marks (`Hộ đã` → `Ho da`) rather than dropped, so it stays readable. In the fallback, any
/// other non-ASCII character, a control character (a CR or LF would otherwise split the
/// header), `"`, `\`, `/` and `%` become `_`. An empty name becomes `download`.
pub fn content_disposition(filename: &str) -> String {
    let filename = if filename.is_empty() {
        "download"
    } else {
        filename
    };
    let fallback: String = filename
        .chars()
        .filter_map(|c| match c {
            // Combining marks of a decomposed (NFD) name: the base letter is already there.
            '\u{300}'..='\u{36f}' => None,
            c if c.is_ascii_graphic() || c == ' ' => match c {
                '"' | '\\' | '/' | '%' => Some('_'),
                c => Some(c),
            },
            c => Some(strip_vietnamese_marks(c).unwrap_or('_')),
        })
        .collect();
    let mut encoded = String::with_capacity(filename.len() * 3);
    for b in filename.bytes() {
        // RFC 8187 attr-char; everything else is percent-encoded byte by byte.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            let _ = write!(encoded, "%{b:02X}");
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// The ASCII letter under a precomposed Vietnamese letter (`ộ` → `o`, `Đ` → `D`), if it is one.
fn strip_vietnamese_marks(c: char) -> Option<char> {
    // Every Vietnamese letter with a mark, grouped by the ASCII letter it is written on.
    const LETTERS: [(char, &str); 14] = [
        ('a', "àáảãạăằắẳẵặâầấẩẫậ"),
        ('A', "ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ"),
        ('e', "èéẻẽẹêềếểễệ"),
        ('E', "ÈÉẺẼẸÊỀẾỂỄỆ"),
        ('i', "ìíỉĩị"),
        ('I', "ÌÍỈĨỊ"),
        ('o', "òóỏõọôồốổỗộơờớởỡợ"),
        ('O', "ÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ"),
        ('u', "ùúủũụưừứửữự"),
        ('U', "ÙÚỦŨỤƯỪỨỬỮỰ"),
        ('y', "ỳýỷỹỵ"),
        ('Y', "ỲÝỶỸỴ"),
        ('d', "đ"),
        ('D', "Đ"),
    ];
    LETTERS
        .iter()
        .find(|(_, marked)| marked.contains(c))
        .map(|&(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(cells: &[&[&str]]) -> Vec<Vec<String>> {
        cells
            .iter()
            .map(|row| row.iter().map(|c| c.to_string()).collect())
            .collect()
    }

    fn read_back(bytes: &[u8]) -> (Vec<String>, Vec<Vec<String>>) {
        let mut reader = ::csv::Reader::from_reader(bytes);
        let headers = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        let records = reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect();
        (headers, records)
    }

    #[test]
    fn starts_with_bom_and_ends_lines_with_crlf() {
        let out = to_csv(&["a", "b"], &rows(&[&["1", "2"], &["3", "4"]])).unwrap();
        assert!(out.starts_with(b"\xEF\xBB\xBF"));
        assert_eq!(&out[3..], b"a,b\r\n1,2\r\n3,4\r\n");
    }

    #[test]
    fn vietnamese_headers_round_trip() {
        let out = to_csv(
            &["Tỉnh/thành", "Hộ đã lên sàn"],
            &rows(&[&["Đắk Lắk", "1234"], &["Thừa Thiên Huế", "-12"]]),
        )
        .unwrap();
        assert_eq!(&out[..3], BOM);
        assert!(std::str::from_utf8(&out[3..])
            .unwrap()
            .starts_with("Tỉnh/thành,Hộ đã lên sàn\r\n"));
        let (headers, records) = read_back(&out);
        assert_eq!(headers, ["Tỉnh/thành", "Hộ đã lên sàn"]);
        assert_eq!(
            records,
            rows(&[&["Đắk Lắk", "1234"], &["Thừa Thiên Huế", "-12"]])
        );
    }

    #[test]
    fn quotes_commas_quotes_and_newlines() {
        let cells = rows(&[&[
            "Hà Nội, Việt Nam",
            "nói \"chào\"",
            "dòng 1\ndòng 2",
            "a\r\nb",
        ]]);
        let out = to_csv(&["a", "b", "c", "d"], &cells).unwrap();
        let text = std::str::from_utf8(&out[3..]).unwrap();
        assert_eq!(
            text,
            "a,b,c,d\r\n\"Hà Nội, Việt Nam\",\"nói \"\"chào\"\"\",\"dòng 1\ndòng 2\",\"a\r\nb\"\r\n"
        );
        let (_, records) = read_back(&out);
        assert_eq!(records, cells);
    }

    #[test]
    fn neutralises_formulas() {
        let cells = rows(&[&[
            "=SUM(A1)",
            "+1",
            "@x",
            "-x",
            "\tx",
            "\rx",
            "-",
            "-1e5",
            "-1.234.567",
        ]]);
        let out = to_csv(&[], &cells).unwrap();
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&out[..]);
        let record: Vec<String> = reader
            .records()
            .next()
            .unwrap()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        assert_eq!(
            record,
            [
                "'=SUM(A1)",
                "'+1",
                "'@x",
                "'-x",
                "'\tx",
                "'\rx",
                "'-",
                "'-1e5",
                "'-1.234.567"
            ]
        );
        // Header cells are neutralised too.
        let out = to_csv(&["=cmd|' /C calc'!A0"], &[]).unwrap();
        assert_eq!(&out[3..], b"'=cmd|' /C calc'!A0\r\n");
    }

    #[test]
    fn leaves_plain_numbers_and_text_alone() {
        let cells = rows(&[&[
            "-1234",
            "12,5",
            "-12,5",
            "-0.25",
            "0",
            "1234",
            "Bắc Giang",
            "a=b",
            "x-1",
        ]]);
        let out = to_csv(&[], &cells).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[3..]).unwrap(),
            "-1234,\"12,5\",\"-12,5\",-0.25,0,1234,Bắc Giang,a=b,x-1\r\n"
        );
    }

    #[test]
    fn plain_number_rule() {
        for yes in ["0", "-0", "1234", "-1234", "12,5", "-12.5", "00,10"] {
            assert!(is_plain_number(yes), "{yes}");
        }
        for no in [
            "", "-", "--1", "-.5", "5.", "1.2.3", "1,2,3", "1e5", "+1", " 1", "١٢",
        ] {
            assert!(!is_plain_number(no), "{no}");
        }
    }

    #[test]
    fn empty_rows_and_files() {
        // Only the header row.
        assert_eq!(to_csv(&["a", "b"], &[]).unwrap(), b"\xEF\xBB\xBFa,b\r\n");
        // Nothing at all: just the BOM.
        assert_eq!(to_csv(&[], &[]).unwrap(), BOM);
        // A row of empty cells keeps its columns.
        let out = to_csv(&["a", "b"], &rows(&[&["", ""]])).unwrap();
        assert_eq!(&out[3..], b"a,b\r\n,\r\n");
        let (_, records) = read_back(&out);
        assert_eq!(records, rows(&[&["", ""]]));
        // A row of the wrong width is an error, not a shifted column.
        let err = to_csv(&["a", "b"], &[vec![]]).unwrap_err();
        assert!(err.contains("row 1"), "{err}");
        let err = to_csv(&["a", "b"], &rows(&[&["1", "2"], &["1", "2", "3"]])).unwrap_err();
        assert!(err.contains("row 2"), "{err}");
    }

    #[test]
    fn content_disposition_ascii_and_utf8() {
        assert_eq!(
            content_disposition("Hộ đã lên sàn.csv"),
            "attachment; filename=\"Ho da len san.csv\"; \
             filename*=UTF-8''H%E1%BB%99%20%C4%91%C3%A3%20l%C3%AAn%20s%C3%A0n.csv"
        );
        assert_eq!(
            content_disposition("bao-cao_2026.csv"),
            "attachment; filename=\"bao-cao_2026.csv\"; filename*=UTF-8''bao-cao_2026.csv"
        );
        assert_eq!(
            content_disposition("ĐẮK LẮK.csv"),
            "attachment; filename=\"DAK LAK.csv\"; filename*=UTF-8''%C4%90%E1%BA%AEK%20L%E1%BA%AEK.csv"
        );
        // Decomposed marks are dropped, not replaced.
        assert!(content_disposition("Ho\u{323}.csv").starts_with("attachment; filename=\"Ho.csv\""));
        assert!(content_disposition("").starts_with("attachment; filename=\"download\""));
    }

    #[test]
    fn content_disposition_cannot_break_the_header() {
        let value = content_disposition("a\"b\\c/d%e\r\nSet-Cookie: x=1;日.csv");
        assert!(!value.contains(['\r', '\n']));
        assert!(value.is_ascii());
        assert!(value.starts_with("attachment; filename=\"a_b_c_d_e__Set-Cookie: x=1;_.csv\"; "));
        assert!(value.ends_with(
            "filename*=UTF-8''a%22b%5Cc%2Fd%25e%0D%0ASet-Cookie%3A%20x%3D1%3B%E6%97%A5.csv"
        ));
    }
}
