//! Reports as CSV files: reading what provinces send (UTF-8 with or without BOM, or the
//! Windows-1258 that Excel writes in the Vietnamese locale; English or Vietnamese headers) and
//! writing what Excel opens correctly (UTF-8 with BOM, CRLF, Vietnamese headers, formulas
//! neutralised).

use agriportal_platform::csv::BOM;
use unicode_normalization::UnicodeNormalization;

use crate::config::{MAX_IMPORT_BYTES, MAX_IMPORT_LINES};

/// The columns, in file order: (English header, Vietnamese header).
pub const COLUMNS: [(&str, &str); 5] = [
    ("province_code", "Mã tỉnh"),
    ("period", "Kỳ báo cáo"),
    ("indicator_code", "Mã chỉ tiêu"),
    ("value", "Giá trị"),
    ("comment", "Ghi chú"),
];

/// A file's text and the encoding it was read as (`utf-8` or `windows-1258`), in NFC.
pub fn decode(bytes: &[u8]) -> (String, &'static str) {
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let (text, encoding) = match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), "utf-8"),
        Err(_) => {
            // Windows-1258 writes most Vietnamese letters as a base letter and a combining
            // tone mark; NFC below composes them, so codes and names compare as typed.
            let (text, _) = encoding_rs::WINDOWS_1258.decode_without_bom_handling(bytes);
            (text.into_owned(), "windows-1258")
        }
    };
    (text.nfc().collect(), encoding)
}

/// A header as compared: NFC, lower case, without spaces, underscores or hyphens.
fn header_key(text: &str) -> String {
    text.nfc()
        .flat_map(char::to_lowercase)
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .collect()
}

/// One data line of an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Line number in the file (the header is line 1).
    pub line: u32,
    /// Province code as written.
    pub province_code: String,
    /// Period id as written.
    pub period: String,
    /// Indicator code as written.
    pub indicator_code: String,
    /// Value as written.
    pub value: String,
    /// Comment.
    pub comment: String,
}

/// A line that could not be read, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    /// Line number (the header is line 1).
    pub line: u32,
    /// Why.
    pub reason: String,
}

/// A cell as read: trimmed, and with the apostrophe our export puts before a formula-like
/// cell removed again, so an exported file imports as it was.
fn cell(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest.to_string(),
        _ => text.to_string(),
    }
}

/// Reads an import file's text: the lines, and those that could not be read. The error is for
/// the whole file (no header, a missing column, too many lines).
pub fn parse(text: &str) -> Result<(Vec<Line>, Vec<BadLine>), String> {
    // The reader counts lines by their `\n` but starts a record after the `\r` of a CRLF,
    // which would number every line of an Excel file one too low.
    let text = text.replace("\r\n", "\n");
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(format!("the header line cannot be read: {e}")),
        None => return Err("the file is empty: it needs a header line and values".to_string()),
    };
    let keys: Vec<String> = header.iter().map(header_key).collect();
    let mut index = [0usize; 5];
    for (slot, (en, vi)) in index.iter_mut().zip(COLUMNS) {
        let found = keys
            .iter()
            .position(|k| *k == header_key(en) || *k == header_key(vi));
        match found {
            Some(i) => *slot = i,
            // The comment column is optional; the others are not.
            None if en == "comment" => *slot = usize::MAX,
            None => {
                return Err(format!(
                    "the header has no column {en} (\"{vi}\"); the columns are {}",
                    COLUMNS
                        .iter()
                        .map(|(en, vi)| format!("{en} (\"{vi}\")"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                bad.push(BadLine {
                    line: u32::try_from(line).unwrap_or(u32::MAX),
                    reason: format!("line cannot be read: {e}"),
                });
                continue;
            }
        };
        let line = u32::try_from(record.position().map_or(0, |p| p.line())).unwrap_or(u32::MAX);
        if record.iter().all(|f| f.trim().is_empty()) {
            // Excel leaves empty lines (`,,,,`) at the end of a sheet.
            continue;
        }
        if lines.len() + bad.len() >= MAX_IMPORT_LINES {
            return Err(format!(
                "the file has more than {MAX_IMPORT_LINES} lines; split it into several files"
            ));
        }
        if index[..4].iter().any(|&i| i >= record.len()) {
            bad.push(BadLine {
                line,
                reason: format!(
                    "line has {} columns; the header has {}: check the separators and quotes",
                    record.len(),
                    header.len()
                ),
            });
            continue;
        }
        let get = |i: usize| record.get(i).map(cell).unwrap_or_default();
        lines.push(Line {
            line,
            province_code: get(index[0]),
            period: get(index[1]),
            indicator_code: get(index[2]).to_uppercase(),
            value: get(index[3]),
            comment: get(index[4]),
        });
    }
    Ok((lines, bad))
}

/// Checks an import's size before it is decoded.
pub fn check_size(bytes: usize) -> Result<(), String> {
    if bytes > MAX_IMPORT_BYTES {
        return Err(format!(
            "the file is {bytes} bytes; the limit is {MAX_IMPORT_BYTES} bytes (2 MiB): split it"
        ));
    }
    Ok(())
}

/// Writes rows (`[province_code, period, indicator_code, value, comment]`) as a file with the
/// platform's one writer (`platform::csv`: UTF-8 with BOM, CRLF, formula cells neutralised),
/// under the Vietnamese headers the import reads back.
pub fn write(rows: &[[String; 5]]) -> Result<Vec<u8>, String> {
    let headers: Vec<&str> = COLUMNS.iter().map(|(_, vi)| *vi).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.to_vec()).collect();
    agriportal_platform::csv::to_csv(&headers, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text as Windows-1258 holds it: base letters (with their circumflex, breve or horn
    /// where the code page has them) followed by combining tone marks.
    fn windows_1258_form(text: &str) -> String {
        let encodable = |c: char| {
            let (_, _, unmappable) = encoding_rs::WINDOWS_1258.encode(c.encode_utf8(&mut [0; 4]));
            !unmappable
        };
        let mut out: Vec<char> = Vec::new();
        for c in text.nfd() {
            let composed = out
                .last()
                .and_then(|&last| unicode_normalization::char::compose(last, c))
                .filter(|&k| encodable(k));
            match composed {
                Some(k) => {
                    out.pop();
                    out.push(k);
                }
                None => out.push(c),
            }
        }
        out.into_iter().collect()
    }

    fn row(cells: [&str; 5]) -> [String; 5] {
        cells.map(str::to_string)
    }

    #[test]
    fn utf8_with_and_without_bom() {
        let text = "province_code,period,indicator_code,value,comment\n79,202611,TRAINED_HH,12,Sở Công Thương\n";
        for bytes in [text.as_bytes().to_vec(), [BOM, text.as_bytes()].concat()] {
            let (decoded, encoding) = decode(&bytes);
            assert_eq!(encoding, "utf-8");
            let (lines, bad) = parse(&decoded).unwrap();
            assert!(bad.is_empty());
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].line, 2);
            assert_eq!(lines[0].province_code, "79");
            assert_eq!(lines[0].comment, "Sở Công Thương");
        }
    }

    #[test]
    fn vietnamese_headers_in_any_case_and_spacing() {
        let text = " MÃ TỈNH ,kỳ  báo cáo,Mã_chỉ_tiêu,giá trị\n01,202611,trained_hh,5\n";
        let (lines, bad) = parse(text).unwrap();
        assert!(bad.is_empty());
        assert_eq!(lines[0].indicator_code, "TRAINED_HH");
        assert_eq!(lines[0].comment, "");
        // Headers typed in decomposed form (NFD) match too.
        let nfd: String = "Mã tỉnh,Kỳ báo cáo,Mã chỉ tiêu,Giá trị\n01,202611,X,1\n"
            .nfd()
            .collect();
        assert_eq!(parse(&nfd).unwrap().0.len(), 1);
        let err = parse("province,period,indicator_code,value\n").unwrap_err();
        assert!(
            err.contains("province_code") && err.contains("Mã tỉnh"),
            "{err}"
        );
        assert!(parse("").unwrap_err().contains("empty"));
    }

    #[test]
    fn windows_1258_is_decoded_and_composed() {
        let text = "Mã tỉnh,Kỳ báo cáo,Mã chỉ tiêu,Giá trị,Ghi chú\r\n79,202611,TRAINED_HH,7,Hồ Chí Minh đào tạo\r\n";
        let legacy = windows_1258_form(text);
        let (bytes, _, unmappable) = encoding_rs::WINDOWS_1258.encode(&legacy);
        assert!(!unmappable);
        assert!(
            std::str::from_utf8(&bytes).is_err(),
            "the sample must not be UTF-8"
        );
        let (decoded, encoding) = decode(&bytes);
        assert_eq!(encoding, "windows-1258");
        assert_eq!(decoded, text);
        let (lines, _) = parse(&decoded).unwrap();
        assert_eq!(lines[0].comment, "Hồ Chí Minh đào tạo");
    }

    #[test]
    fn a_file_with_errors_names_its_lines() {
        let text = "province_code,period,indicator_code,value,comment\n79,202611,TRAINED_HH,1\n\"79,202611\n";
        let (lines, bad) = parse(text).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert_eq!(bad[0].line, 3);
        assert!(bad[0].reason.contains("1 columns"), "{}", bad[0].reason);
        let many = "province_code,period,indicator_code,value\n".to_string()
            + &"79,202611,TRAINED_HH,1\n".repeat(MAX_IMPORT_LINES + 1);
        assert!(parse(&many).unwrap_err().contains("10000 lines"));
        assert!(check_size(MAX_IMPORT_BYTES + 1)
            .unwrap_err()
            .contains("2 MiB"));
    }

    #[test]
    fn formulas_are_neutralised_and_round_trip() {
        let rows = vec![
            row(["79", "202611", "TRAINED_HH", "12", "=HYPERLINK(\"x\")"]),
            row([
                "79",
                "202611",
                "EPAY_HH",
                "3",
                "@SUM(A1) \"quoted\", commas",
            ]),
            row([
                "79",
                "202611",
                "TRAINING_SESSIONS",
                "4",
                "-1 lớp, +2 dự kiến",
            ]),
        ];
        let bytes = write(&rows).unwrap();
        assert!(bytes.starts_with(BOM));
        let text = std::str::from_utf8(&bytes[3..]).unwrap();
        assert!(
            text.starts_with("Mã tỉnh,Kỳ báo cáo,Mã chỉ tiêu,Giá trị,Ghi chú\r\n"),
            "{text}"
        );
        assert!(text.contains("'=HYPERLINK") && text.contains("'@SUM") && text.contains("'-1"));
        assert!(text.ends_with("\r\n"));
        let (decoded, _) = decode(&bytes);
        let (lines, bad) = parse(&decoded).unwrap();
        assert!(bad.is_empty());
        let back: Vec<[String; 5]> = lines
            .into_iter()
            .map(|l| {
                [
                    l.province_code,
                    l.period,
                    l.indicator_code,
                    l.value,
                    l.comment,
                ]
            })
            .collect();
        assert_eq!(back, rows);
    }
}
