//! Static tokens: the `--auth-tokens` file, parsed into a [`TokenTable`], and the constant-time lookup of a
//! presented token.
//!
//! The file is one grant a line, `<token> <pool>` or `<token> *`, fields split by spaces or tabs. A field
//! that starts with `#` starts a comment that runs to the end of the line (as in a shell), so a whole-line
//! comment and a comment after the fields both work, while a `#` inside a token is just a byte of it (a
//! token cannot *start* with `#`). Blank lines are skipped and a trailing `\r` is dropped, so a file edited
//! on Windows reads the same.
//!
//! The table never holds a token. At load it draws a random 32-byte key and keeps only HMAC-SHA256(key,
//! token) for each line. A lookup hashes the presented bytes with the same key and compares that digest
//! with every entry's, in constant time and without stopping at a match, so how long a lookup takes tells
//! a client nothing about which token, or how much of one, it got right: every comparison is of 32 bytes
//! against 32 bytes, whatever the lengths of the presented and stored tokens, and the loop always runs
//! over the whole table. Hashing first is what hides the lengths; comparing raw tokens would leak them or
//! need padding. The key is per table and random, so the digests are worthless outside this process (no
//! offline guessing of a weak token from a memory dump) and a client cannot aim inputs at chosen digests.
//! The remaining timing signal is the table's size and the presented token's length (hashing is linear in
//! it), neither of which is secret.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::error::AuthFileError;
use super::grant::Grant;

/// The longest token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// HMAC-SHA256 of a token under the table's key.
type Digest = [u8; 32];

/// The grants of a tokens file, keyed by a keyed hash of each token. Immutable once built: a reload builds
/// a new table and swaps it in whole (see [`Authenticator`](super::Authenticator)).
pub struct TokenTable {
    key: [u8; 32],
    entries: Vec<Entry>,
}

struct Entry {
    digest: Digest,
    grant: Grant,
}

/// What is wrong with one line of a tokens file. The messages say what to write instead and never quote
/// the line: its first field is a token, and a line with its fields swapped would put one in the second.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenLineProblem {
    #[error("a token with no pool after it; write `<token> <pool>`, or `<token> *` for every pool")]
    MissingPool,
    #[error(
        "more than two fields; write `<token> <pool>` or `<token> *` (a field starting with `#` starts a comment)"
    )]
    ExtraField,
    #[error("the second field is not a pool name; use 1-64 of `A-Z a-z 0-9 _ . -`, or `*` for every pool")]
    BadPool,
    #[error("the token is {len} bytes long; tokens are at most {MAX_TOKEN_LEN}")]
    TokenTooLong { len: usize },
    #[error("the token has a byte that is not printable ASCII; tokens are bytes 0x21 to 0x7E")]
    TokenNotPrintable,
    #[error("the same token as on line {first_line}; each token may appear once")]
    DuplicateToken { first_line: usize },
}

impl TokenTable {
    /// Reads and parses a tokens file. Errors name the file, and the line when the text is at fault.
    pub fn load(path: &Path) -> Result<TokenTable, AuthFileError> {
        let text = std::fs::read(path).map_err(|cause| AuthFileError::Read { path: path.to_owned(), cause })?;
        TokenTable::parse_bytes(&text).map_err(|error| error.in_file(path))
    }

    /// Parses the text of a tokens file (see the module docs for the format). Errors name the line.
    pub fn parse(text: &str) -> Result<TokenTable, AuthFileError> {
        TokenTable::parse_bytes(text.as_bytes())
    }

    /// Parses bytes rather than a `str`, so that a stray non-UTF-8 byte is reported on its line instead of
    /// failing the whole read.
    fn parse_bytes(text: &[u8]) -> Result<TokenTable, AuthFileError> {
        let mut table = TokenTable { key: rand::random(), entries: Vec::new() };
        // Load time is not observable by clients, so duplicates are found with an ordinary map of digests.
        let mut first_line_of: HashMap<Digest, usize> = HashMap::new();
        for (index, line) in text.split(|&b| b == b'\n').enumerate() {
            let line_number = index + 1;
            let at_line = |problem| AuthFileError::Line { file: None, line: line_number, problem };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut fields = line
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|field| !field.is_empty())
                .take_while(|field| !field.starts_with(b"#"));
            let Some(token) = fields.next() else {
                continue;
            };
            check_token(token).map_err(at_line)?;
            let grant_field = fields.next().ok_or_else(|| at_line(TokenLineProblem::MissingPool))?;
            if fields.next().is_some() {
                return Err(at_line(TokenLineProblem::ExtraField));
            }
            let grant = Grant::from_field(grant_field).ok_or_else(|| at_line(TokenLineProblem::BadPool))?;
            let digest = table.digest(token);
            if let Some(&first_line) = first_line_of.get(&digest) {
                return Err(at_line(TokenLineProblem::DuplicateToken { first_line }));
            }
            first_line_of.insert(digest, line_number);
            table.entries.push(Entry { digest, grant });
        }
        Ok(table)
    }

    /// The grant of the token equal to `presented`, if any. Takes the same time whichever entry matches,
    /// or none: O(number of tokens + length of `presented`), with no early exit (see the module docs).
    pub fn lookup(&self, presented: &[u8]) -> Option<Grant> {
        let digest = self.digest(presented);
        // 1 + the index of the matching entry, or 0. Updated with a constant-time select, not a branch, so
        // the loop does the same work on a hit as on a miss. Tokens are unique, so at most one matches.
        let mut found: u64 = 0;
        for (index, entry) in (1u64..).zip(&self.entries) {
            let hit = entry.digest.as_slice().ct_eq(digest.as_slice());
            found.conditional_assign(&index, hit);
        }
        // Branching only now reveals hit or miss, which the client learns from the reply anyway.
        let index = usize::try_from(found.checked_sub(1)?).ok()?;
        self.entries.get(index).map(|entry| entry.grant.clone())
    }

    /// How many tokens the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no token (a valid file may be empty: every token revoked).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn digest(&self, token: &[u8]) -> Digest {
        // HMAC accepts a key of any length, so this never fails; the key is 32 bytes anyway.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(token);
        mac.finalize().into_bytes().into()
    }
}

/// Only the count: the digests are not secrets, but nothing about tokens belongs in a log.
impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable").field("tokens", &self.entries.len()).finish_non_exhaustive()
    }
}

/// A token is 1 to [`MAX_TOKEN_LEN`] bytes of printable ASCII other than space: what an `AUTH <token>` line
/// can carry as one argument. (It is never empty here: fields are non-empty by construction.)
fn check_token(token: &[u8]) -> Result<(), TokenLineProblem> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenLineProblem::TokenTooLong { len: token.len() });
    }
    if !token.iter().all(|&b| (0x21..=0x7E).contains(&b)) {
        return Err(TokenLineProblem::TokenNotPrintable);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_files::TempFile;

    fn pool(name: &str) -> Option<Grant> {
        Some(Grant::Pool(name.to_owned()))
    }

    /// The line number and problem of a parse that must fail; also checks that the message carries the
    /// line number and none of `secrets`.
    fn parse_error(text: &str, secrets: &[&str]) -> (usize, TokenLineProblem) {
        let error = TokenTable::parse(text).expect_err("the text should not parse");
        let message = error.to_string();
        for secret in secrets {
            assert!(!message.contains(secret), "{message:?} quotes {secret:?}");
        }
        match error {
            AuthFileError::Line { file: None, line, problem } => {
                assert!(message.starts_with(&format!("line {line}: ")), "{message:?}");
                (line, problem)
            }
            other => panic!("not a line error: {other:?}"),
        }
    }

    #[test]
    fn parses_grants_comments_blanks_and_star() {
        let text = "# keypool tokens\n\
                    \n\
                    tok-openai   openai\n\
                    \t tok-admin\t*   # ops, any pool\n\
                    tok#hash default #comment\n\
                    tok-crlf team.b_2\r\n\
                    \x20  # indented comment\n";
        let table = TokenTable::parse(text).unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table.lookup(b"tok-openai"), pool("openai"));
        assert_eq!(table.lookup(b"tok-admin"), Some(Grant::AnyPool));
        assert_eq!(table.lookup(b"tok#hash"), pool("default"));
        assert_eq!(table.lookup(b"tok-crlf"), pool("team.b_2"));
    }

    #[test]
    fn an_empty_file_is_an_empty_table() {
        assert!(TokenTable::parse("").unwrap().is_empty());
        assert!(TokenTable::parse("# all revoked\n\n").unwrap().is_empty());
    }

    #[test]
    fn lookups_match_whole_tokens_only() {
        let table = TokenTable::parse("abc p1\nabcd p2\nxyz *\n").unwrap();
        assert_eq!(table.lookup(b"abc"), pool("p1"));
        assert_eq!(table.lookup(b"abcd"), pool("p2"));
        assert_eq!(table.lookup(b"xyz"), Some(Grant::AnyPool));
        for miss in [&b"ab"[..], b"abcde", b"ABC", b"abc ", b" abc", b"", b"xyz\n", b"p1", b"*"] {
            assert_eq!(table.lookup(miss), None, "{miss:?}");
        }
    }

    #[test]
    fn an_empty_table_matches_nothing() {
        assert_eq!(TokenTable::parse("").unwrap().lookup(b"anything"), None);
    }

    #[test]
    fn bad_pool_names_are_refused_by_line() {
        for bad in ["has/slash", &"p".repeat(65), "**", "caf\u{e9}", "pool#x"] {
            let (line, problem) = parse_error(&format!("ok-token p\nsecret-tok {bad}\n"), &["secret-tok", "ok-token"]);
            assert_eq!((line, problem), (2, TokenLineProblem::BadPool), "{bad:?}");
        }
    }

    #[test]
    fn a_line_needs_exactly_two_fields() {
        assert_eq!(parse_error("\n\nlonely-secret\n", &["lonely-secret"]), (3, TokenLineProblem::MissingPool));
        assert_eq!(parse_error("lonely-secret # p\n", &["lonely-secret"]), (1, TokenLineProblem::MissingPool));
        assert_eq!(parse_error("a-secret p q\n", &["a-secret"]), (1, TokenLineProblem::ExtraField));
    }

    #[test]
    fn duplicate_tokens_are_refused_naming_both_lines() {
        let text = "dup-secret p1\nother p2\n# c\ndup-secret p3\n";
        let (line, problem) = parse_error(text, &["dup-secret"]);
        assert_eq!((line, problem), (4, TokenLineProblem::DuplicateToken { first_line: 1 }));
    }

    #[test]
    fn tokens_are_at_most_1024_printable_bytes() {
        let longest = "k".repeat(MAX_TOKEN_LEN);
        let table = TokenTable::parse(&format!("{longest} p\n")).unwrap();
        assert_eq!(table.lookup(longest.as_bytes()), pool("p"));

        let overlong = format!("{longest}x");
        let (line, problem) = parse_error(&format!("# c\n{overlong} p\n"), &[&overlong, &longest[..40]]);
        assert_eq!((line, problem), (2, TokenLineProblem::TokenTooLong { len: 1025 }));

        for bad in ["tok\u{7f}en", "t\u{e9}", "tok\x0ben"] {
            let (line, problem) = parse_error(&format!("{bad} p\n"), &[bad]);
            assert_eq!((line, problem), (1, TokenLineProblem::TokenNotPrintable), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 200, failure_persistence: None, ..Default::default()
        })]

        #[test]
        fn lookup_finds_exactly_the_tokens_in_the_file(
            tokens in proptest::collection::hash_set("[!-~]{1,12}", 0..20),
            probes in proptest::collection::vec("[!-~]{0,13}", 0..20),
        ) {
            // Tokens that start with `#` would be comments, so they are kept out of the file.
            let tokens: Vec<String> = tokens.into_iter().filter(|token| !token.starts_with('#')).collect();
            let text: String = tokens.iter().enumerate().map(|(i, token)| format!("{token} pool{i}\n")).collect();
            let table = TokenTable::parse(&text).unwrap();
            proptest::prop_assert_eq!(table.len(), tokens.len());
            for (i, token) in tokens.iter().enumerate() {
                proptest::prop_assert_eq!(table.lookup(token.as_bytes()), pool(&format!("pool{i}")));
            }
            for probe in probes.iter().filter(|probe| !tokens.contains(probe)) {
                proptest::prop_assert_eq!(table.lookup(probe.as_bytes()), None);
            }
        }

        #[test]
        fn parse_never_panics(text in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = TokenTable::parse_bytes(&text);
        }
    }

    #[test]
    fn debug_shows_no_token() {
        let table = TokenTable::parse("hunter2 p\n").unwrap();
        let debug = format!("{table:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("tokens: 1"), "{debug}");
    }

    #[test]
    fn load_names_the_file_and_line() {
        let file = TempFile::with_contents(b"good p\nbad-secret \xff\n");
        let message = TokenTable::load(file.path()).unwrap_err().to_string();
        assert_eq!(message, format!("{}, line 2: {}", file.path().display(), TokenLineProblem::BadPool));
        assert!(!message.contains("bad-secret"));

        let file = TempFile::with_contents(b"good p\n");
        assert_eq!(TokenTable::load(file.path()).unwrap().lookup(b"good"), pool("p"));
    }

    #[test]
    fn load_of_a_missing_file_names_it() {
        let missing = TempFile::with_contents(b"");
        let path = missing.path().to_owned();
        drop(missing);
        let message = TokenTable::load(&path).unwrap_err().to_string();
        assert!(message.starts_with(&format!("cannot read {}: ", path.display())), "{message}");
    }
}
