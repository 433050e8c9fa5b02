//! URLs in text shown to people: git remotes and broker addresses may carry
//! `user:password@`, which troupe keeps to connect but never shows, logs or stores in a
//! message.

/// Removes `user:password@` (any userinfo) from every `scheme://` URL in `text`.
pub fn redact_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || matches!(c, '\'' | '"' | '<' | '>'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A URL's password (or token) split off: the URL without it (a user name stays), and the
/// password, percent-decoded as git decodes it.
#[derive(Clone, PartialEq, Eq)]
pub struct SplitPassword {
    /// The URL with `user@` at most.
    pub url: String,
    /// The password, decoded.
    pub password: String,
}

impl std::fmt::Debug for SplitPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SplitPassword({:?}, ********)", self.url)
    }
}

/// The password of a `scheme://user:password@host/...` URL split off, when it has one (an
/// empty password counts as none). `user@` alone is a user name and stays: whether it is a
/// token cannot be told.
pub fn split_password(url: &str) -> Option<SplitPassword> {
    let start = url.find("://")? + 3;
    let tail = &url[start..];
    let end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
    let authority = &tail[..end];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let (user, password) = userinfo.split_once(':')?;
    if password.is_empty() {
        return None;
    }
    let user_part = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    Some(SplitPassword {
        url: format!(
            "{}{user_part}{}{}",
            &url[..start],
            &authority[at + 1..],
            &tail[end..]
        ),
        password: percent_decode(password),
    })
}

/// `%XX` sequences decoded (others kept as they are); invalid UTF-8 replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact_credentials, split_password};

    #[test]
    fn passwords_are_split_off() {
        let s = split_password("https://bob:s3cr%40t@git.example.com/r.git").expect("split");
        assert_eq!(s.url, "https://bob@git.example.com/r.git");
        assert_eq!(s.password, "s3cr@t");
        assert!(!format!("{s:?}").contains("s3cr"));
        let s = split_password("http://:tok@127.0.0.1:8080/a/b.git?x=1").expect("split");
        assert_eq!(s.url, "http://127.0.0.1:8080/a/b.git?x=1");
        assert_eq!(s.password, "tok");
        for none in [
            "https://bob@git.example.com/r.git",
            "https://git.example.com/r.git",
            "https://bob:@h/r.git",
            "git@github.com:o/r.git",
            "/srv/repo",
            "ssh://git@h:22/r.git",
        ] {
            assert_eq!(split_password(none), None, "{none}");
        }
    }

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact_credentials(
                "fatal: unable to access 'https://bob:s3cr%40t@git.example.com/r.git/': 403"
            ),
            "fatal: unable to access 'https://git.example.com/r.git/': 403"
        );
        assert_eq!(
            redact_credentials("a https://tok@h/x and http://u:p@h2 end"),
            "a https://h/x and http://h2 end"
        );
        assert_eq!(
            redact_credentials("git@github.com:o/r.git /srv/repo"),
            "git@github.com:o/r.git /srv/repo"
        );
    }
}
