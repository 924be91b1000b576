//! Webhook authenticity: the `X-Loop-Signature` header is an HMAC-SHA256 of the raw
//! request body under a per-webhook secret. Loop does not document the encoding, so
//! the receiver accepts hex or base64 (optionally behind a `sha256=` prefix) unless
//! configured otherwise, tries every configured secret (rotation, one per webhook), and
//! compares in constant time.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag in bytes.
const TAG_LEN: usize = 32;

/// How the signature header encodes the 32-byte tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Accept hex or base64 (the encoding Loop uses is not documented).
    #[default]
    Auto,
    Hex,
    Base64,
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Encoding::Auto),
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            other => Err(format!(
                "signature encoding {other:?} is not known: use \"auto\", \"hex\" or \"base64\""
            )),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Auto => "auto",
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        })
    }
}

/// A webhook signing secret. Its `Debug` prints `***` so that it cannot leak into logs
/// through a derived `Debug` of a config struct.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret's bytes, for signing. Deliberately not `Display`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// True when `header` is a valid signature of `body` under any of `secrets`.
///
/// Every secret is tried even after a match, so timing does not reveal which secret
/// (or whether the first one) matched.
pub fn verify(secrets: &[Secret], enc: Encoding, body: &[u8], header: &str) -> bool {
    let candidates = decode_candidates(enc, header);
    if candidates.is_empty() || secrets.is_empty() {
        return false;
    }
    let mut ok = Choice::from(0u8);
    for secret in secrets {
        let tag = tag(secret.expose(), body);
        for candidate in &candidates {
            ok |= tag.as_slice().ct_eq(candidate.as_slice());
        }
    }
    ok.into()
}

/// Hex (lowercase) HMAC-SHA256 of `body` under `secret`.
pub fn sign_hex(secret: &str, body: &[u8]) -> String {
    hex::encode(tag(secret, body))
}

/// Base64 (standard alphabet, padded) HMAC-SHA256 of `body` under `secret`.
pub fn sign_base64(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(tag(secret, body))
}

fn tag(secret: &str, body: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The 32-byte tags the header could stand for under `enc`. A hex string of 64 digits
/// and a base64 string of a 32-byte value never have the same length, so `Auto` yields
/// at most one candidate in practice; both are kept in case a header is ambiguous.
fn decode_candidates(enc: Encoding, header: &str) -> Vec<[u8; TAG_LEN]> {
    let mut value = header.trim();
    if value.len() >= 7 && value[..7].eq_ignore_ascii_case("sha256=") {
        value = value[7..].trim();
    }
    let mut out = Vec::with_capacity(2);
    if matches!(enc, Encoding::Auto | Encoding::Hex) {
        if let Some(tag) = decode_hex(value) {
            out.push(tag);
        }
    }
    if matches!(enc, Encoding::Auto | Encoding::Base64) {
        if let Some(tag) = decode_base64(value) {
            out.push(tag);
        }
    }
    out
}

fn decode_hex(value: &str) -> Option<[u8; TAG_LEN]> {
    if value.len() != TAG_LEN * 2 {
        return None;
    }
    let mut tag = [0u8; TAG_LEN];
    hex::decode_to_slice(value, &mut tag).ok()?;
    Some(tag)
}

fn decode_base64(value: &str) -> Option<[u8; TAG_LEN]> {
    // 32 bytes are 44 characters padded, 43 unpadded.
    if !(43..=44).contains(&value.len()) {
        return None;
    }
    let engines = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD];
    engines.iter().find_map(|engine| {
        let bytes = engine.decode(value).ok()?;
        <[u8; TAG_LEN]>::try_from(bytes.as_slice()).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values computed independently with Python:
    // python3 -c 'import hmac,hashlib,base64; d=hmac.new(b"loop-test-secret",
    //   b"{\"payload\":{\"id\":1},\"metaData\":{\"myshopifyDomain\":\"shop.myshopify.com\"}}",
    //   hashlib.sha256).digest(); print(d.hex()); print(base64.b64encode(d).decode())'
    const SECRET: &str = "loop-test-secret";
    const BODY: &[u8] =
        br#"{"payload":{"id":1},"metaData":{"myshopifyDomain":"shop.myshopify.com"}}"#;
    const HEX: &str = "7b3ae30a49217c11a7bf135f12ece88716bb1490a8c2cc8a65e39881410cc825";
    const B64: &str = "ezrjCkkhfBGnvxNfEuzohxa7FJCowsyKZeOYgUEMyCU=";

    fn secrets() -> Vec<Secret> {
        vec![Secret::new(SECRET)]
    }

    #[test]
    fn signs_known_vectors() {
        assert_eq!(sign_hex(SECRET, BODY), HEX);
        assert_eq!(sign_base64(SECRET, BODY), B64);
    }

    #[test]
    fn auto_accepts_hex_base64_prefix_and_uppercase_hex() {
        for header in [
            HEX.to_string(),
            B64.to_string(),
            format!("sha256={HEX}"),
            format!("SHA256={B64}"),
            HEX.to_ascii_uppercase(),
            B64.trim_end_matches('=').to_string(),
            format!("  {HEX} "),
        ] {
            assert!(
                verify(&secrets(), Encoding::Auto, BODY, &header),
                "{header}"
            );
        }
    }

    #[test]
    fn fixed_encoding_rejects_the_other_one() {
        assert!(verify(&secrets(), Encoding::Hex, BODY, HEX));
        assert!(!verify(&secrets(), Encoding::Hex, BODY, B64));
        assert!(verify(&secrets(), Encoding::Base64, BODY, B64));
        assert!(!verify(&secrets(), Encoding::Base64, BODY, HEX));
    }

    #[test]
    fn rejects_wrong_body_secret_and_garbage() {
        assert!(!verify(&secrets(), Encoding::Auto, b"{}", HEX));
        assert!(!verify(&[Secret::new("other")], Encoding::Auto, BODY, HEX));
        assert!(!verify(&[], Encoding::Auto, BODY, HEX));
        for header in [
            "",
            "sha256=",
            "zz",
            &HEX[..63],
            "not base64 at all, not hex either!!!!!!!!",
        ] {
            assert!(
                !verify(&secrets(), Encoding::Auto, BODY, header),
                "{header}"
            );
        }
    }

    #[test]
    fn any_of_several_secrets_verifies() {
        let rotated = vec![Secret::new("old-secret"), Secret::new(SECRET)];
        assert!(verify(&rotated, Encoding::Auto, BODY, HEX));
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let s = Secret::new("super-secret-value");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", vec![s]), "[***]");
    }

    #[test]
    fn encoding_parses_and_serializes_lowercase() {
        assert_eq!("HEX".parse::<Encoding>(), Ok(Encoding::Hex));
        assert_eq!("auto".parse::<Encoding>(), Ok(Encoding::Auto));
        assert!("b64".parse::<Encoding>().is_err());
        assert_eq!(
            serde_json::to_string(&Encoding::Base64).unwrap(),
            "\"base64\""
        );
        let e: Encoding = serde_json::from_str("\"hex\"").unwrap();
        assert_eq!(e, Encoding::Hex);
    }
}
