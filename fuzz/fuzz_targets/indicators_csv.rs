//! `ImportReport`'s reading of a file, as the indicators service runs it before any rule:
//! `csv::check_size`, then `csv::decode` (a BOM dropped, UTF-8 or else Windows-1258, then NFC)
//! and `csv::parse` (headers in English or Vietnamese, data lines, unreadable lines, the line
//! limit). Any bytes must be refused or read, never panic, and the limits must hold.
//!
//! Input layout: unless byte 0 is `0xFF`, the rest is the file. When it is, bytes 1–2 (big
//! endian) are a repeat count and the rest is split at its first `0xFF` into a head and a body
//! repeated after it: files over 2 MiB or 10,000 lines are a mutation away, which libFuzzer's
//! small inputs never are. A file that would pass 2 MiB stops just past it (refused before it
//! is decoded, so cheap); one under it stops at 32 KiB, room for 10,001 lines of a cell each:
//! an unoptimised, instrumented build reads such a file in about a second, a 2 MiB one in
//! minutes. One byte value out of 256, not one bit, selects it: with half the inputs repeated
//! the target ran at one execution a second.
#![no_main]

use agriportal_indicators::config::{MAX_IMPORT_BYTES, MAX_IMPORT_LINES};
use agriportal_indicators::csv;
use libfuzzer_sys::fuzz_target;
use unicode_normalization::{is_nfc, UnicodeNormalization};

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// The largest repeated file under the size limit (see the input layout).
const SMALL: usize = 32 * 1024;
/// The largest file whose lines are also exported and read back (the round trip is about
/// cells, not length: small files explore it as well, and much faster).
const ROUND_TRIP: usize = 16 * 1024;

/// The file the input stands for.
fn file(data: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    if mode != 0xFF || rest.len() < 2 {
        return rest.to_vec();
    }
    let times = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    let (head, body) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let mut out = head.to_vec();
    if body.is_empty() {
        return out;
    }
    let wanted = head.len().saturating_add(times.saturating_mul(body.len()));
    if wanted > MAX_IMPORT_BYTES {
        // Just past the limit (by less than one body), however far the count goes.
        while out.len() <= MAX_IMPORT_BYTES {
            out.extend_from_slice(body);
        }
    } else {
        for _ in 0..times {
            if out.len() + body.len() > SMALL {
                break;
            }
            out.extend_from_slice(body);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let bytes = file(data);
    match csv::check_size(bytes.len()) {
        Ok(()) => assert!(bytes.len() <= MAX_IMPORT_BYTES),
        Err(reason) => {
            assert!(bytes.len() > MAX_IMPORT_BYTES);
            assert!(reason.contains("2 MiB"), "{reason}");
            // The service refuses the file here: nothing below runs on it.
            return;
        }
    }

    let (text, encoding) = csv::decode(&bytes);
    assert!(is_nfc(&text), "decoded text is not NFC");
    let stripped = bytes.strip_prefix(BOM).unwrap_or(&bytes);
    match std::str::from_utf8(stripped) {
        Ok(utf8) => {
            assert_eq!(encoding, "utf-8");
            assert!(text.chars().eq(utf8.nfc()), "UTF-8 text changed beyond NFC");
        }
        Err(_) => assert_eq!(encoding, "windows-1258"),
    }

    match csv::parse(&text) {
        Err(reason) => assert!(!reason.is_empty()),
        Ok((lines, bad)) => {
            assert!(
                lines.len() + bad.len() <= MAX_IMPORT_LINES,
                "{} lines and {} unreadable ones kept, over the limit",
                lines.len(),
                bad.len()
            );
            // The header is line 1; the file cannot have more lines than it has bytes.
            let most = u32::try_from(text.len() + 1).unwrap_or(u32::MAX);
            for line in &lines {
                assert!(line.line >= 1 && line.line <= most, "line {}", line.line);
                for cell in [
                    &line.province_code,
                    &line.period,
                    &line.indicator_code,
                    &line.value,
                    &line.comment,
                ] {
                    assert_eq!(cell.trim(), cell.as_str(), "a cell kept its spaces");
                }
            }
            for b in &bad {
                assert!(b.line <= most, "bad line {}", b.line);
                assert!(!b.reason.is_empty());
            }
            if text.len() > ROUND_TRIP {
                return;
            }
            // What was read is written back by the export and read again alike.
            let rows: Vec<[String; 5]> = lines
                .iter()
                .map(|l| {
                    [
                        l.province_code.clone(),
                        l.period.clone(),
                        l.indicator_code.clone(),
                        l.value.clone(),
                        l.comment.clone(),
                    ]
                })
                .filter(|row| row.iter().any(|c| !c.is_empty()))
                .collect();
            if let Ok(exported) = csv::write(&rows) {
                let (again, encoding) = csv::decode(&exported);
                assert_eq!(encoding, "utf-8");
                let (reread, rebad) = csv::parse(&again).expect("an export reads back");
                assert!(
                    rebad.is_empty(),
                    "an export has unreadable lines: {rebad:?}"
                );
                let reread: Vec<[String; 5]> = reread
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
                assert_eq!(reread, rows, "the export does not read back as it was");
            }
        }
    }
});
