//! JSON Web Tokens: the `--jwt-secret-file` verifier, and [`mint_hs256`] to make test tokens.
//!
//! Only HS256 is accepted. The header's `alg` is read and checked before anything else, so a token with
//! `alg: none` (or RS256, whose "public key" an attacker could pass off as an HMAC secret) is refused by
//! name rather than by some later failure; `jsonwebtoken` then checks the same again, and the signature
//! before any claim. Claims:
//!
//! - `exp` is required and checked, with [`LEEWAY_SECS`] of leeway for clocks that disagree a little
//!   between the host that mints tokens and this one;
//! - `sub` is required and is the grant: a pool name, or `*` for every pool;
//! - `nbf` is checked when present (with the same leeway);
//! - `aud`: with an audience configured it is required and must name it. With none configured, a token
//!   that carries an `aud` is refused, as RFC 7519 §4.1.3 asks: it was minted for some other service that
//!   happens to share the secret.
//!
//! The secret is the file's bytes less one trailing `\n` (the newline an editor or `echo` adds), so the
//! file may hold any bytes; an empty secret is refused. The README's Python one-liner for minting a token
//! follows the same rule, and a unit test below runs it against this verifier.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::error::AuthFileError;
use super::grant::Grant;

/// Seconds of clock skew tolerated on `exp` and `nbf`: a token is still accepted up to this long after
/// its `exp`. Small, so an expired token dies promptly; non-zero, so two hosts whose clocks are a second or
/// two apart agree.
pub const LEEWAY_SECS: u64 = 5;

/// Checks HS256 JWTs against one secret and, optionally, one audience.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    audience: Option<String>,
}

/// Why a JWT was refused. For the server's debug log: the client only ever reads `CLIENT_ERROR invalid
/// token`, so that a caller probing with forged tokens learns nothing. No variant carries text from the
/// token itself (claim names here are the verifier's own), so logging one cannot inject into the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON, or a part that is not what it should be.
    #[error("malformed token")]
    Malformed,
    /// The header's `alg` is not HS256 (this includes `none`).
    #[error("algorithm refused: only HS256 is accepted")]
    Algorithm,
    /// The signature does not match: another secret, or an altered token.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is more than [`LEEWAY_SECS`] in the past.
    #[error("expired")]
    Expired,
    /// `nbf` is more than [`LEEWAY_SECS`] in the future.
    #[error("not valid yet (nbf)")]
    NotYetValid,
    /// A required claim (`exp`, `sub`, or `aud` when an audience is configured) is absent, or of the wrong
    /// JSON type (jsonwebtoken counts an `exp` that is not a number, or a `sub` that is not a string, as
    /// missing).
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    /// A `sub` that is neither a pool name nor `*`, or another claim in a form jsonwebtoken refuses.
    #[error("bad claim `{0}`")]
    BadClaim(String),
    /// `aud` does not name the configured audience, or is present when none is configured.
    #[error("wrong audience")]
    WrongAudience,
}

impl JwtVerifier {
    /// Reads the HS256 secret from `path` (its bytes, less one trailing `\n`) and checks `aud` against
    /// `audience` when given. Fails if the file cannot be read or the secret is empty.
    pub fn from_secret_file(path: &Path, audience: Option<String>) -> Result<JwtVerifier, AuthFileError> {
        let mut secret = std::fs::read(path).map_err(|cause| AuthFileError::Read { path: path.to_owned(), cause })?;
        if secret.last() == Some(&b'\n') {
            secret.pop();
        }
        if secret.is_empty() {
            return Err(AuthFileError::EmptySecret { path: path.to_owned() });
        }
        Ok(JwtVerifier::from_secret(&secret, audience))
    }

    /// The verifier for a secret already in hand; not public, so that the empty-secret check in
    /// [`JwtVerifier::from_secret_file`] cannot be skipped.
    fn from_secret(secret: &[u8], audience: Option<String>) -> JwtVerifier {
        use_rust_crypto();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // jsonwebtoken checks `aud` only when the token has one, so a configured audience must also be a
        // required claim. Without one, validate_aud stays on with no audience set, which refuses any token
        // that names an audience (see the module docs).
        validation.validate_aud = true;
        match &audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["exp", "sub", "aud"]);
            }
            None => validation.set_required_spec_claims(&["exp", "sub"]),
        }
        JwtVerifier { key: DecodingKey::from_secret(secret), validation, audience }
    }

    /// Checks `token` and returns what it grants. Never panics, whatever the input.
    pub fn verify(&self, token: &str) -> Result<Grant, JwtError> {
        check_algorithm(token)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|error| JwtError::from_library(error.into_kind()))?
            .claims;
        // Present (a required claim), but may not be a string or a pool name.
        let sub = claims.get("sub").and_then(Value::as_str).ok_or_else(|| JwtError::BadClaim("sub".to_owned()))?;
        Grant::from_field(sub.as_bytes()).ok_or_else(|| JwtError::BadClaim("sub".to_owned()))
    }
}

/// The audience only: the key is a secret.
impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier").field("audience", &self.audience).finish_non_exhaustive()
    }
}

impl JwtError {
    /// Not a `From` impl, so that jsonwebtoken's types stay out of this module's public API.
    fn from_library(kind: ErrorKind) -> JwtError {
        match kind {
            ErrorKind::InvalidSignature => JwtError::BadSignature,
            ErrorKind::ExpiredSignature => JwtError::Expired,
            ErrorKind::ImmatureSignature => JwtError::NotYetValid,
            ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(claim),
            ErrorKind::InvalidClaimFormat(claim) => JwtError::BadClaim(claim),
            ErrorKind::InvalidAudience => JwtError::WrongAudience,
            ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::MissingAlgorithm => {
                JwtError::Algorithm
            }
            // Bad base64, JSON or UTF-8, the wrong number of parts, and kinds added in later versions.
            _ => JwtError::Malformed,
        }
    }
}

/// Refuses any header whose `alg` is not exactly `HS256`. jsonwebtoken would refuse these too, but an
/// `alg` it does not know (`none`) fails there as unparseable JSON; reading it here names the real reason.
fn check_algorithm(token: &str) -> Result<(), JwtError> {
    let header = token.split('.').next().unwrap_or_default();
    let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| JwtError::Malformed)?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => Ok(()),
        Some(Value::String(_)) => Err(JwtError::Algorithm),
        _ => Err(JwtError::Malformed),
    }
}

/// jsonwebtoken picks its crypto backend from its cargo features and panics on first use if a build ends
/// up with both (another crate turning on `aws_lc_rs`, say). Installing ours first rules that out; an
/// `Err` only means a provider is installed already, which is as good.
fn use_rust_crypto() {
    let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
}

/// Mints an HS256 JWT granting `sub` (a pool name or `*`) until `exp_unix` (seconds since the Unix epoch),
/// for audience `aud` when given. For tests and tooling: the daemon itself never issues tokens.
pub fn mint_hs256(secret: &[u8], sub: &str, exp_unix: u64, aud: Option<&str>) -> String {
    let mut claims = Map::new();
    claims.insert("sub".to_owned(), sub.into());
    claims.insert("exp".to_owned(), exp_unix.into());
    if let Some(aud) = aud {
        claims.insert("aud".to_owned(), aud.into());
    }
    sign(Algorithm::HS256, secret, &claims)
}

/// Signs `claims` as given, so tests can also make tokens that lack a claim or use another HMAC algorithm.
fn sign(algorithm: Algorithm, secret: &[u8], claims: &Map<String, Value>) -> String {
    use_rust_crypto();
    // Encoding fails only for a key of another family than the algorithm's, or claims that do not
    // serialize: an HMAC key with an HMAC algorithm and a JSON map are neither.
    jsonwebtoken::encode(&Header::new(algorithm), claims, &EncodingKey::from_secret(secret))
        .expect("HMAC signing of JSON claims cannot fail")
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::auth::test_files::TempFile;

    const SECRET: &[u8] = b"correct horse battery staple, 32+ bytes";

    /// The README's one-liner, as the Python program inside `python3 -c '...'`. Arguments: the secret file,
    /// the pool (or `*`), the lifetime in seconds, and optionally the audience.
    const PYTHON_MINT: &str = r#"import base64,hashlib,hmac,json,sys,time;a=sys.argv;b=lambda x:base64.urlsafe_b64encode(x).rstrip(b"=");j=lambda o:b(json.dumps(o).encode());m=j({"alg":"HS256","typ":"JWT"})+b"."+j({"sub":a[2],"exp":int(time.time())+int(a[3]),**({"aud":a[4]} if a[4:] else {})});print((m+b"."+b(hmac.new(open(a[1],"rb").read().removesuffix(b"\n"),m,hashlib.sha256).digest())).decode())"#;

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs()
    }

    fn verifier(audience: Option<&str>) -> JwtVerifier {
        JwtVerifier::from_secret(SECRET, audience.map(str::to_owned))
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn a_valid_token_grants_its_sub() {
        let exp = now() + 3600;
        assert_eq!(verifier(None).verify(&mint_hs256(SECRET, "openai", exp, None)), Ok(Grant::Pool("openai".into())));
        assert_eq!(verifier(None).verify(&mint_hs256(SECRET, "*", exp, None)), Ok(Grant::AnyPool));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_a_bad_signature() {
        let token = mint_hs256(b"some other secret", "openai", now() + 3600, None);
        assert_eq!(verifier(None).verify(&token), Err(JwtError::BadSignature));
    }

    #[test]
    fn an_altered_payload_is_a_bad_signature() {
        let token = mint_hs256(SECRET, "openai", now() + 3600, None);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = b64(format!(r#"{{"sub":"*","exp":{}}}"#, now() + 3600).as_bytes());
        assert_eq!(verifier(None).verify(&parts.join(".")), Err(JwtError::BadSignature));
    }

    #[test]
    fn an_expired_token_is_refused_past_the_leeway() {
        let token = mint_hs256(SECRET, "openai", now() - LEEWAY_SECS - 60, None);
        assert_eq!(verifier(None).verify(&token), Err(JwtError::Expired));
    }

    #[test]
    fn exp_and_sub_are_required() {
        let no_exp = sign(Algorithm::HS256, SECRET, &claims(serde_json::json!({ "sub": "openai" })));
        assert_eq!(verifier(None).verify(&no_exp), Err(JwtError::MissingClaim("exp".into())));
        let no_sub = sign(Algorithm::HS256, SECRET, &claims(serde_json::json!({ "exp": now() + 3600 })));
        assert_eq!(verifier(None).verify(&no_sub), Err(JwtError::MissingClaim("sub".into())));
    }

    #[test]
    fn an_exp_or_sub_of_the_wrong_type_counts_as_missing() {
        let text_exp = sign(Algorithm::HS256, SECRET, &claims(serde_json::json!({ "sub": "p", "exp": "soon" })));
        assert_eq!(verifier(None).verify(&text_exp), Err(JwtError::MissingClaim("exp".into())));
        let number_sub = sign(Algorithm::HS256, SECRET, &claims(serde_json::json!({ "sub": 7, "exp": now() + 60 })));
        assert_eq!(verifier(None).verify(&number_sub), Err(JwtError::MissingClaim("sub".into())));
    }

    #[test]
    fn sub_must_be_a_pool_name_or_star() {
        for sub in ["no/slashes", "", "**", &"p".repeat(65)] {
            let token = mint_hs256(SECRET, sub, now() + 60, None);
            assert_eq!(verifier(None).verify(&token), Err(JwtError::BadClaim("sub".into())), "{sub}");
        }
    }

    #[test]
    fn a_future_nbf_is_refused() {
        let exp = now() + 3600;
        let early = claims(serde_json::json!({ "sub": "p", "exp": exp, "nbf": now() + 600 }));
        assert_eq!(verifier(None).verify(&sign(Algorithm::HS256, SECRET, &early)), Err(JwtError::NotYetValid));
        let started = claims(serde_json::json!({ "sub": "p", "exp": exp, "nbf": now() - 600 }));
        assert_eq!(verifier(None).verify(&sign(Algorithm::HS256, SECRET, &started)), Ok(Grant::Pool("p".into())));
    }

    #[test]
    fn a_configured_audience_is_required_and_checked() {
        let exp = now() + 3600;
        let keypool = verifier(Some("keypool"));
        assert_eq!(keypool.verify(&mint_hs256(SECRET, "p", exp, Some("keypool"))), Ok(Grant::Pool("p".into())));
        assert_eq!(keypool.verify(&mint_hs256(SECRET, "p", exp, Some("billing"))), Err(JwtError::WrongAudience));
        assert_eq!(keypool.verify(&mint_hs256(SECRET, "p", exp, None)), Err(JwtError::MissingClaim("aud".into())));
        let listed = claims(serde_json::json!({ "sub": "p", "exp": exp, "aud": ["billing", "keypool"] }));
        assert_eq!(keypool.verify(&sign(Algorithm::HS256, SECRET, &listed)), Ok(Grant::Pool("p".into())));
    }

    #[test]
    fn without_an_audience_a_token_for_another_audience_is_refused() {
        let token = mint_hs256(SECRET, "p", now() + 3600, Some("billing"));
        assert_eq!(verifier(None).verify(&token), Err(JwtError::WrongAudience));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let payload = b64(format!(r#"{{"sub":"*","exp":{}}}"#, now() + 3600).as_bytes());
        for alg in ["none", "None", "HS512", "RS256", "hs256"] {
            let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{payload}.{signature}");
                assert_eq!(verifier(None).verify(&token), Err(JwtError::Algorithm), "{token}");
            }
        }
        // A real HS512 signature with the right secret is still the wrong algorithm.
        let hs512 = sign(Algorithm::HS512, SECRET, &claims(serde_json::json!({ "sub": "p", "exp": now() + 60 })));
        assert_eq!(verifier(None).verify(&hs512), Err(JwtError::Algorithm));
    }

    #[test]
    fn garbage_is_malformed() {
        let good = mint_hs256(SECRET, "p", now() + 3600, None);
        let (header, rest) = good.split_once('.').unwrap();
        let no_alg = b64(br#"{"typ":"JWT"}"#);
        for garbage in [
            String::new(),
            "x".to_owned(),
            "a.b.c".to_owned(),
            "....".to_owned(),
            header.to_owned(),
            format!("{header}.{rest}.extra"),
            format!("{header}.!!!.sig"),
            format!("{header}.{}.sig", b64(b"not json")),
            format!("{no_alg}.{rest}"),
            format!("{}.{rest}", b64(b"[1,2]")),
        ] {
            let verdict = verifier(None).verify(&garbage);
            assert!(matches!(verdict, Err(JwtError::Malformed | JwtError::BadSignature)), "{garbage:?}: {verdict:?}");
        }
        assert_eq!(verifier(None).verify("not-a-jwt"), Err(JwtError::Malformed));
    }

    #[test]
    fn the_secret_file_loses_one_trailing_newline_and_must_not_be_empty() {
        let exp = now() + 3600;
        let file = TempFile::with_contents(b"s3cret\n");
        let loaded = JwtVerifier::from_secret_file(file.path(), None).unwrap();
        assert_eq!(loaded.verify(&mint_hs256(b"s3cret", "p", exp, None)), Ok(Grant::Pool("p".into())));
        assert_eq!(loaded.verify(&mint_hs256(b"s3cret\n", "p", exp, None)), Err(JwtError::BadSignature));

        let file = TempFile::with_contents(b"s3cret\n\n");
        let loaded = JwtVerifier::from_secret_file(file.path(), None).unwrap();
        assert_eq!(loaded.verify(&mint_hs256(b"s3cret\n", "p", exp, None)), Ok(Grant::Pool("p".into())));

        for empty in [&b""[..], b"\n"] {
            let file = TempFile::with_contents(empty);
            let error = JwtVerifier::from_secret_file(file.path(), None).unwrap_err();
            assert!(matches!(error, AuthFileError::EmptySecret { .. }), "{error:?}");
            assert!(error.to_string().starts_with(&file.path().display().to_string()), "{error}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let debug = format!("{:?}", verifier(Some("keypool")));
        assert!(!debug.contains("horse"), "{debug}");
        assert!(debug.contains("keypool"), "{debug}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 500, failure_persistence: None, ..Default::default()
        })]

        #[test]
        fn verify_refuses_any_string_without_panicking(token in "\\PC{0,200}") {
            proptest::prop_assert!(verifier(None).verify(&token).is_err());
        }

        #[test]
        fn verify_refuses_any_jwt_shaped_forgery_without_panicking(
            header in "[A-Za-z0-9_-]{1,60}",
            payload in "[A-Za-z0-9_-]{1,120}",
            signature in "[A-Za-z0-9_-]{0,60}",
        ) {
            let token = format!("{header}.{payload}.{signature}");
            proptest::prop_assert!(verifier(None).verify(&token).is_err());
        }
    }

    #[test]
    fn the_python_one_liner_makes_tokens_this_verifier_accepts() {
        // The README wraps the program in single quotes for the shell.
        assert!(!PYTHON_MINT.contains('\''));
        let file = TempFile::with_contents(b"a secret with a newline after it\n");
        let mint = |args: &[&str]| -> Option<String> {
            let output = match Command::new("python3").arg("-c").arg(PYTHON_MINT).arg(file.path()).args(args).output() {
                Ok(output) => output,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
                Err(error) => panic!("cannot run python3: {error}"),
            };
            assert!(output.status.success(), "python3 failed: {}", String::from_utf8_lossy(&output.stderr));
            Some(String::from_utf8(output.stdout).expect("ASCII output").trim_end().to_owned())
        };
        let Some(token) = mint(&["team-a", "3600"]) else {
            eprintln!("skipped: python3 is not installed, so the README's one-liner was not checked");
            return;
        };
        let plain = JwtVerifier::from_secret_file(file.path(), None).unwrap();
        assert_eq!(plain.verify(&token), Ok(Grant::Pool("team-a".into())));

        let with_audience = JwtVerifier::from_secret_file(file.path(), Some("keypool".into())).unwrap();
        let token = mint(&["*", "3600", "keypool"]).unwrap();
        assert_eq!(with_audience.verify(&token), Ok(Grant::AnyPool));

        let expired = mint(&["team-a", "-60"]).unwrap();
        assert_eq!(plain.verify(&expired), Err(JwtError::Expired));
    }
}
