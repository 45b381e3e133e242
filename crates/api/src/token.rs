//! The bearer token, both ends of it: reading it from its file ([`read_token`]: the agent's
//! `--token-file`, the manager's `token_file` keys, the CLI's `--token-file`), and the servers'
//! check of a presented one ([`bearer_matches`]).
//!
//! A token file holds one token: printable ASCII without spaces (it travels in an HTTP header),
//! surrounding whitespace ignored (an editor's final newline), at most [`MAX_TOKEN_BYTES`]. A
//! token shorter than [`MIN_TOKEN_BYTES`], or a file that others may read, is taken with a
//! warning ([`token_warnings`]): refusing would lock out a cluster set up that way.

use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A token shorter than this, bytes, is easy to guess (a warning).
pub const MIN_TOKEN_BYTES: usize = 16;
/// A token longer than this, bytes, is refused: no generator makes one, HTTP servers limit a
/// header's size (8 KiB is common), and a file that large is most likely the wrong file.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token file gives no token. Every variant names the file.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "token file {path} is empty: expected a secret in it (at least {MIN_TOKEN_BYTES} random \
         characters)"
    )]
    Empty { path: PathBuf },
    #[error(
        "token file {path} holds {len} bytes or more: expected a token of at most \
         {MAX_TOKEN_BYTES} (is it the right file?)"
    )]
    TooLong { path: PathBuf, len: usize },
    #[error(
        "token file {path}: character {at} of the token is {what}: expected printable ASCII \
         (letters, digits, punctuation) without spaces"
    )]
    Charset {
        path: PathBuf,
        /// 1-based position in the trimmed token.
        at: usize,
        /// The offending byte, described.
        what: String,
    },
}

/// Reads the bearer token in `path`: its text without surrounding whitespace. Logs the
/// [`token_warnings`] of a token that is taken but weak.
///
/// # Errors
/// [`TokenError`]: the file cannot be read, is empty (or only whitespace), is longer than
/// [`MAX_TOKEN_BYTES`], or the token holds a byte that is not printable ASCII.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mode = file.metadata().map_or(0, |m| m.permissions().mode());
    // Read a little past the limit, so a file of whitespace around a token at the limit passes
    // and a huge file (or a device) is never read whole.
    let mut bytes = Vec::new();
    file.take(2 * MAX_TOKEN_BYTES as u64)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    let token = check_token(path, &bytes)?;
    for w in token_warnings(path, mode, token.len()) {
        tracing::warn!("{w}");
    }
    Ok(token)
}

/// The token in a token file's `bytes` (pure; see [`read_token`]).
fn check_token(path: &Path, bytes: &[u8]) -> Result<String, TokenError> {
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong {
            path: path.to_path_buf(),
            len: token.len(),
        });
    }
    if let Some(i) = token.iter().position(|b| !b.is_ascii_graphic()) {
        let b = token[i];
        let what = match b {
            b' ' => "a space".to_string(),
            b'\t' => "a tab".to_string(),
            b'\n' | b'\r' => "a line break (one token, on one line)".to_string(),
            _ => format!("byte 0x{b:02x}"),
        };
        return Err(TokenError::Charset {
            path: path.to_path_buf(),
            at: i + 1,
            what,
        });
    }
    // Only printable ASCII is left, which is UTF-8.
    Ok(token.iter().map(|&b| char::from(b)).collect())
}

/// What is weak about a token file whose permission bits are `mode` and whose token is `len`
/// bytes (pure, for tests): readable or writable by group or others, or shorter than
/// [`MIN_TOKEN_BYTES`]. Each warning names the file and the fix.
pub fn token_warnings(path: &Path, mode: u32, len: usize) -> Vec<String> {
    let mut out = Vec::new();
    if mode & 0o077 != 0 {
        out.push(format!(
            "token file {} is readable or writable by group or others (mode {:04o}): anyone who \
             reads it controls the hosts that trust it; chmod 600 it",
            path.display(),
            mode & 0o7777
        ));
    }
    if len < MIN_TOKEN_BYTES {
        out.push(format!(
            "the token in {} is {len} bytes long; use at least {MIN_TOKEN_BYTES} random bytes",
            path.display()
        ));
    }
    out
}

/// Compares a presented token with ours in time independent of where they differ.
fn token_matches(presented: &[u8], expected: &[u8]) -> bool {
    let mut diff = presented.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(p ^ e);
    }
    diff == 0
}

/// The servers' side of the bearer token, the one rule of the agent and the manager: an
/// `Authorization` header value `Bearer <token>`, the scheme in any case, then one or more
/// spaces (RFC 9110, section 11.1), the token compared in constant time. An empty expected
/// token matches nothing.
pub fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(value) = header else { return false };
    let (scheme, rest) = value.split_at(value.len().min(6));
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.starts_with(b" ") {
        return false;
    }
    !token.is_empty() && token_matches(rest.trim_ascii_start(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A token file with `text` in a fresh directory (kept alive by the returned guard).
    fn token_file(text: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_token() {
        let (_dir, p) = token_file(b"  0123456789abcdef0123456789abcdef\r\n\n");
        assert_eq!(
            read_token(&p).expect("read"),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn an_empty_or_blank_file_is_refused_naming_it() {
        for text in [&b""[..], b"\n", b" \t \r\n "] {
            let (_dir, p) = token_file(text);
            let err = read_token(&p).expect_err("empty");
            assert!(matches!(err, TokenError::Empty { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&p.display().to_string()) && msg.contains("empty"),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_missing_file_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("nowhere");
        let err = read_token(&p).expect_err("missing");
        assert!(
            matches!(&err, TokenError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot read token file {}", p.display())),
            "{msg}"
        );
        // A directory is no token file either.
        assert!(matches!(
            read_token(dir.path()),
            Err(TokenError::Read { .. })
        ));
    }

    #[test]
    fn inner_whitespace_and_control_bytes_are_refused_with_their_place() {
        let cases: [(&[u8], usize, &str); 4] = [
            (b"two words\n", 4, "a space"),
            (b"line\none\n", 5, "a line break"),
            (b"tab\there", 4, "a tab"),
            (b"caf\xc3\xa9", 4, "byte 0xc3"),
        ];
        for (text, at, what) in cases {
            let (_dir, p) = token_file(text);
            let err = read_token(&p).expect_err("bad byte");
            assert!(
                matches!(&err, TokenError::Charset { at: a, .. } if *a == at),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(what) && msg.contains("printable ASCII"),
                "{msg}"
            );
        }
    }

    #[test]
    fn an_oversized_file_is_refused_without_reading_it_whole() {
        let (_dir, p) = token_file(&vec![b'a'; MAX_TOKEN_BYTES + 1]);
        assert!(matches!(
            read_token(&p),
            Err(TokenError::TooLong { len, .. }) if len == MAX_TOKEN_BYTES + 1
        ));
        let (_dir, p) = token_file(&vec![b'a'; MAX_TOKEN_BYTES]);
        assert_eq!(read_token(&p).expect("at the limit").len(), MAX_TOKEN_BYTES);
        // Far larger than the limit: read only up to twice the limit, still refused.
        let (_dir, p) = token_file(&vec![b'a'; 1 << 20]);
        let err = read_token(&p).expect_err("huge");
        assert!(err.to_string().contains("is it the right file"), "{err}");
    }

    #[test]
    fn weak_tokens_are_taken_with_warnings_that_name_the_fix() {
        let (_dir, p) = token_file(b"short\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(read_token(&p).expect("weak but taken"), "short");
        let p = Path::new("/run/t");
        assert!(token_warnings(p, 0o100600, 32).is_empty());
        let w = token_warnings(p, 0o100644, 32);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("mode 0644") && w[0].contains("chmod 600"),
            "{w:?}"
        );
        let w = token_warnings(p, 0o100640, 6);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].contains("6 bytes"), "{w:?}");
    }
}
