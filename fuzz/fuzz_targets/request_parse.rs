//! `Request::parse` on any line: it must never panic, and whatever it returns must be safe to put on the
//! wire. An error's text goes into an `ERROR` or `CLIENT_ERROR` reply line, so it must be one line of
//! printable ASCII; an `ADD` secret is written back into lease replies as it is, so it must be printable
//! ASCII without spaces; a blank line (only spaces and tabs) is the only thing that parses to nothing.

#![no_main]

use keypool::protocol::{Request, RequestError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    match Request::parse(line) {
        Ok(None) => assert!(line.iter().all(|&b| b == b' ' || b == b'\t'), "a non-blank line parsed to nothing"),
        Ok(Some(Request::Add { secret, .. })) => {
            assert!(!secret.0.is_empty() && secret.0.iter().all(|b| (0x21..=0x7E).contains(b)), "unsafe secret");
        }
        Ok(Some(request)) => {
            // Every request has a STATS counter.
            let _ = request.command().stat_name();
        }
        Err(error) => {
            let text = error.to_string();
            assert!(!text.is_empty() && text.bytes().all(|b| (0x20..=0x7E).contains(&b)), "unsafe message {text:?}");
            if let RequestError::UnknownCommand(echo) = &error {
                // At most 32 bytes echoed, each as itself or as `\xNN`, then `...`.
                assert!(echo.len() <= 32 * 4 + 3, "echo too long: {echo:?}");
            }
        }
    }
});
