//! `Authorization` header values for scrapes and remote writes, built the same way for both:
//! `authorization` (`<type> <credentials>`, bearer tokens included) or `basic_auth`
//! (`Basic base64(user:password)`, RFC 7617), credentials files read on every request and
//! trimmed as Prometheus' `strings.TrimSpace` does (service-account tokens rotate, files end
//! with a newline).
//!
//! [`Credentials`] keeps its buffers, so building a header allocates nothing once warm. The
//! values it holds are secrets: its `Debug` shows none of them, and no caller logs them.

use std::fmt;
use std::io::Read;

use crate::config::http::{Auth, Secret};

/// A credentials file that could not be read.
#[derive(Debug)]
pub struct CredentialsError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read credentials file {}: {}",
            self.path, self.source
        )
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Reusable buffers for one client's `Authorization` values.
#[derive(Default)]
pub struct Credentials {
    value: String,
    secret: String,
    joined: Vec<u8>,
}

impl fmt::Debug for Credentials {
    // Holds credentials: show nothing of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Reads `secret` into `buf`: inline as written, a file fresh on every call and trimmed.
fn read_secret<'b>(secret: &Secret, buf: &'b mut String) -> Result<&'b str, CredentialsError> {
    buf.clear();
    match secret {
        Secret::Empty => Ok(""),
        Secret::Inline(s) => {
            buf.push_str(s);
            Ok(buf.as_str())
        }
        Secret::File(path) => {
            // A small file in a secret volume or tmpfs, served from the page cache: reading
            // it does not wait on a disk, so the loop may do it per scrape.
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_string(buf))
                .map_err(|source| CredentialsError {
                    path: path.clone(),
                    source,
                })?;
            Ok(buf.trim())
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), appended to `out`: basic auth needs nothing
/// else of it, which is not worth a dependency.
pub fn base64_into(out: &mut String, input: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= chunk.len() {
                let index = usize::try_from(n >> shift & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
}

impl Credentials {
    /// The `Authorization` value for `auth`, if any (files read now).
    pub fn authorization(&mut self, auth: &Auth) -> Result<Option<&str>, CredentialsError> {
        self.value.clear();
        match auth {
            Auth::None => return Ok(None),
            Auth::Authorization { kind, credentials } => {
                let token = read_secret(credentials, &mut self.secret)?;
                self.value.push_str(kind);
                self.value.push(' ');
                self.value.push_str(token);
            }
            Auth::Basic { username, password } => {
                let password = read_secret(password, &mut self.secret)?;
                self.joined.clear();
                self.joined.extend_from_slice(username.as_bytes());
                self.joined.push(b':');
                self.joined.extend_from_slice(password.as_bytes());
                self.value.push_str("Basic ");
                base64_into(&mut self.value, &self.joined);
            }
        }
        Ok(Some(&self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            let mut out = String::new();
            base64_into(&mut out, input.as_bytes());
            assert_eq!(out, want, "{input:?}");
        }
    }

    #[test]
    fn files_are_read_on_every_call_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("promlet-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        let auth = Auth::Authorization {
            kind: "Bearer".to_owned(),
            credentials: Secret::File(file.to_string_lossy().into_owned()),
        };
        let mut c = Credentials::default();
        std::fs::write(&file, "one\n").expect("write");
        assert_eq!(c.authorization(&auth).expect("read"), Some("Bearer one"));
        std::fs::write(&file, "  two \n").expect("write");
        assert_eq!(c.authorization(&auth).expect("read"), Some("Bearer two"));
        assert_eq!(c.authorization(&Auth::None).expect("none"), None);
        let _ = std::fs::remove_dir_all(&dir);
        let e = c.authorization(&auth).expect_err("gone");
        assert!(
            e.to_string().starts_with("cannot read credentials file "),
            "{e}"
        );
        assert!(!format!("{c:?}").contains("two"));
    }
}
