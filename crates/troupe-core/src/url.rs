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

#[cfg(test)]
mod tests {
    use super::redact_credentials;

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
