//! Plain text in whatever encoding it came: a BOM (UTF-8, UTF-16LE/BE) decides; else valid
//! UTF-8 is UTF-8; else UTF-16 without a BOM is recognised by its NUL bytes; else the
//! encoding is guessed from the bytes (Shift_JIS, EUC-JP, ISO-2022-JP, windows-1252 …).

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE};

pub fn decode_text(bytes: &[u8]) -> String {
    if let Some((enc, bom)) = Encoding::for_bom(bytes) {
        return enc
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned();
    }
    // ISO-2022-JP is 7-bit (valid UTF-8 byte-wise): recognise its escape sequences first.
    if bytes.windows(3).any(|w| w == b"\x1b$B" || w == b"\x1b$@") {
        return encoding_rs::ISO_2022_JP
            .decode_without_bom_handling(bytes)
            .0
            .into_owned();
    }
    match bunko_core::documents::utf16_without_bom(bytes) {
        Some(true) => return UTF_16LE.decode_without_bom_handling(bytes).0.into_owned(),
        Some(false) => return UTF_16BE.decode_without_bom_handling(bytes).0.into_owned(),
        None => {}
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.to_owned();
    }
    let mut det = chardetng::EncodingDetector::new();
    det.feed(bytes, true);
    let enc = det.guess(Some(b"jp"), true);
    enc.decode_without_bom_handling(bytes).0.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JA: &str = "日本語の文書です。東京都千代田区霞が関一丁目。これはテストの文章であり、十分な長さを持つ。";

    #[test]
    fn japanese_legacy_encodings_and_utf16() {
        for enc in [
            encoding_rs::SHIFT_JIS,
            encoding_rs::EUC_JP,
            encoding_rs::ISO_2022_JP,
        ] {
            let (bytes, _, _) = enc.encode(JA);
            assert_eq!(decode_text(&bytes), JA, "{}", enc.name());
        }
        let le: Vec<u8> = JA.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut with_bom = vec![0xFF, 0xFE];
        with_bom.extend(&le);
        assert_eq!(decode_text(&with_bom), JA);
        let ascii_le: Vec<u8> = "plain English text"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(decode_text(&ascii_le), "plain English text");
        let ascii_be: Vec<u8> = "plain English text"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(decode_text(&ascii_be), "plain English text");
        assert_eq!(decode_text("ok ✓".as_bytes()), "ok ✓");
        let mut bom8 = vec![0xEF, 0xBB, 0xBF];
        bom8.extend("x".as_bytes());
        assert_eq!(decode_text(&bom8), "x");
    }
}
