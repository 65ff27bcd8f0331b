//! Client text as the server decodes it: `client_encoding`.
//!
//! The server converts what the client sends from the client encoding
//! before it lexes it, so the guard has to read the same characters: in
//! SJIS, BIG5, GBK, UHC and GB18030 a multibyte character's second byte can
//! be `\` or `'`, and the same bytes read as UTF-8 or Latin-1 end a string
//! elsewhere. Every client encoding PostgreSQL accepts is decoded (by
//! encoding_rs where it knows it), or, where no decoder reads it exactly,
//! its non-ASCII text is refused as undecodable.

use std::borrow::Cow;

/// How a session's client text is decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientEncoding {
    /// UTF8.
    #[default]
    Utf8,
    /// SQL_ASCII: bytes are passed through unconverted, so the server reads
    /// non-ASCII bytes in whatever its own encoding is: not readable here.
    SqlAscii,
    /// LATIN1: each byte is the code point of its value.
    Latin1,
    /// Encodings encoding_rs decodes exactly as PostgreSQL converts them.
    Decoder(&'static encoding_rs::Encoding),
    /// Encodings whose multibyte characters are high bytes only (EUC_TW,
    /// EUC_JIS_2004, MULE_INTERNAL): the ASCII text is exact, each run of
    /// other bytes reads as U+FFFD (a letter to the lexer, as it is to the
    /// server).
    HighBytesOnly,
    /// JOHAB, SHIFT_JIS_2004 and unknown names: only ASCII text is readable.
    AsciiOnly,
}

/// Client text that is not valid in its session's encoding.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the statement is not valid {encoding} text{why}")]
pub struct Undecodable {
    encoding: &'static str,
    why: &'static str,
}

impl ClientEncoding {
    /// The encoding PostgreSQL names `name` (ParameterStatus sends its
    /// canonical names; aliases are accepted too).
    pub fn from_name(name: &str) -> Self {
        use encoding_rs as e;
        let name = name.trim().to_ascii_uppercase().replace(['-', '_'], "");
        let decoder = |encoding| Self::Decoder(encoding);
        match name.as_str() {
            "UTF8" | "UNICODE" => Self::Utf8,
            "SQLASCII" => Self::SqlAscii,
            "LATIN1" | "ISO88591" => Self::Latin1,
            "LATIN2" | "ISO88592" => decoder(e::ISO_8859_2),
            "LATIN3" | "ISO88593" => decoder(e::ISO_8859_3),
            "LATIN4" | "ISO88594" => decoder(e::ISO_8859_4),
            // encoding_rs reads ISO-8859-9 as windows-1254, which differs
            // from it only in 0x80–0x9F: C1 controls either way to the lexer.
            "LATIN5" | "ISO88599" => decoder(e::WINDOWS_1254),
            "LATIN6" | "ISO885910" => decoder(e::ISO_8859_10),
            "LATIN7" | "ISO885913" => decoder(e::ISO_8859_13),
            "LATIN8" | "ISO885914" => decoder(e::ISO_8859_14),
            "LATIN9" | "ISO885915" => decoder(e::ISO_8859_15),
            "LATIN10" | "ISO885916" => decoder(e::ISO_8859_16),
            "ISO88595" => decoder(e::ISO_8859_5),
            "ISO88596" => decoder(e::ISO_8859_6),
            "ISO88597" => decoder(e::ISO_8859_7),
            "ISO88598" => decoder(e::ISO_8859_8),
            "WIN866" | "ALT" => decoder(e::IBM866),
            "WIN874" => decoder(e::WINDOWS_874),
            "WIN1250" => decoder(e::WINDOWS_1250),
            "WIN1251" | "WIN" => decoder(e::WINDOWS_1251),
            "WIN1252" => decoder(e::WINDOWS_1252),
            "WIN1253" => decoder(e::WINDOWS_1253),
            "WIN1254" => decoder(e::WINDOWS_1254),
            "WIN1255" => decoder(e::WINDOWS_1255),
            "WIN1256" => decoder(e::WINDOWS_1256),
            "WIN1257" => decoder(e::WINDOWS_1257),
            "WIN1258" | "ABC" | "TCVN" | "TCVN5712" | "VSCII" => decoder(e::WINDOWS_1258),
            "KOI8R" | "KOI8" => decoder(e::KOI8_R),
            "KOI8U" => decoder(e::KOI8_U),
            "EUCJP" => decoder(e::EUC_JP),
            "EUCKR" => decoder(e::EUC_KR),
            // EUC-CN is GB2312, a subset of GBK, high bytes only.
            "EUCCN" | "GBK" | "CP936" | "WIN936" => decoder(e::GBK),
            "SJIS" | "SHIFTJIS" | "MSKANJI" | "WIN932" | "CP932" => decoder(e::SHIFT_JIS),
            "BIG5" | "WIN950" | "CP950" => decoder(e::BIG5),
            // UHC is windows-949, which encoding_rs calls EUC-KR.
            "UHC" | "WIN949" | "CP949" => decoder(e::EUC_KR),
            "GB18030" => decoder(e::GB18030),
            "EUCTW" | "EUCJIS2004" | "MULEINTERNAL" => Self::HighBytesOnly,
            _ => Self::AsciiOnly,
        }
    }

    /// `bytes` as the server reads them.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, Undecodable> {
        if bytes.is_ascii() {
            // Every client encoding PostgreSQL accepts reads ASCII as ASCII.
            return Ok(Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default()));
        }
        match self {
            Self::Utf8 => {
                std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|_| Undecodable { encoding: "UTF8", why: "" })
            }
            Self::SqlAscii => Err(Undecodable {
                encoding: "SQL_ASCII",
                why: ": its non-ASCII bytes reach the server unconverted and cannot be read here",
            }),
            Self::Latin1 => Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
            Self::Decoder(encoding) => encoding
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or(Undecodable { encoding: encoding.name(), why: "" }),
            Self::HighBytesOnly => {
                let mut out = String::with_capacity(bytes.len());
                let mut in_run = false;
                for &byte in bytes {
                    if byte.is_ascii() {
                        out.push(char::from(byte));
                    } else if !in_run {
                        out.push(char::REPLACEMENT_CHARACTER);
                    }
                    in_run = !byte.is_ascii();
                }
                Ok(Cow::Owned(out))
            }
            Self::AsciiOnly => Err(Undecodable {
                encoding: "client-encoded",
                why: ": Airlock has no exact decoder for this session's client_encoding",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert_eq!(ClientEncoding::from_name("UTF8"), ClientEncoding::Utf8);
        assert_eq!(ClientEncoding::from_name("unicode"), ClientEncoding::Utf8);
        assert_eq!(ClientEncoding::from_name("SQL_ASCII"), ClientEncoding::SqlAscii);
        assert_eq!(ClientEncoding::from_name("LATIN1"), ClientEncoding::Latin1);
        assert_eq!(ClientEncoding::from_name("SJIS"), ClientEncoding::Decoder(encoding_rs::SHIFT_JIS));
        assert_eq!(ClientEncoding::from_name("Shift_JIS"), ClientEncoding::Decoder(encoding_rs::SHIFT_JIS));
        assert_eq!(ClientEncoding::from_name("JOHAB"), ClientEncoding::AsciiOnly);
        assert_eq!(ClientEncoding::from_name("EUC_TW"), ClientEncoding::HighBytesOnly);
    }

    #[test]
    fn decodes_as_the_server_converts() {
        let latin1 = ClientEncoding::from_name("LATIN1");
        assert_eq!(latin1.decode(b"DROP TABLE t /* \xe9 */").unwrap(), "DROP TABLE t /* é */");
        // In SJIS 0x5C after a lead byte is part of the character, not a backslash.
        let sjis = ClientEncoding::from_name("SJIS");
        assert_eq!(sjis.decode(b"SELECT '\x83\x5c'").unwrap(), "SELECT 'ソ'");
        assert_eq!(ClientEncoding::Utf8.decode("SELECT 'é'".as_bytes()).unwrap(), "SELECT 'é'");
    }

    #[test]
    fn what_cannot_be_read_exactly_is_an_error() {
        assert!(ClientEncoding::Utf8.decode(b"DROP TABLE t /* \xe9 */").is_err());
        let error = ClientEncoding::SqlAscii.decode(b"SELECT '\xe9'").unwrap_err();
        assert!(error.to_string().contains("SQL_ASCII"), "{error}");
        assert!(ClientEncoding::from_name("JOHAB").decode(b"SELECT '\x88\x61'").is_err());
        assert!(ClientEncoding::from_name("SJIS").decode(b"SELECT '\x83'").is_err());
        assert_eq!(ClientEncoding::SqlAscii.decode(b"SELECT 1").unwrap(), "SELECT 1");
        assert_eq!(ClientEncoding::HighBytesOnly.decode(b"SELECT '\xa1\xa2'").unwrap(), "SELECT '\u{fffd}'");
    }
}
