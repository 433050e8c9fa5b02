//! Routing keys: matching them against a rule's patterns, and reading them as playbook paths
//! (Loopabull's `rkname` and `rkdirectory` translators).

use crate::config::Translator;

/// Why a rule's routing-key pattern is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Nothing but whitespace.
    #[error("a routing-key pattern must not be empty")]
    Empty,
    /// Two dots in a row, or one at an end.
    #[error("routing-key pattern {0:?} has an empty word")]
    EmptyWord(String),
    /// `*` or `#` inside a word (`a*`), which AMQP does not read as a wildcard.
    #[error("routing-key pattern {0:?}: `*` and `#` must be whole words (as in AMQP)")]
    PartialWildcard(String),
}

/// Why a routing key cannot name a playbook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the routing key is empty")]
    Empty,
    /// The key is longer than a file name may be.
    #[error("the routing key is longer than 255 bytes")]
    TooLong,
    /// Two dots in a row, or one at an end (which would make `..` or a hidden file).
    #[error("routing key {0:?} has an empty word")]
    EmptyWord(String),
    /// A character that could leave the playbooks directory or is not portable.
    #[error(
        "routing key {key:?} cannot name a playbook: {found:?} is not allowed \
         (letters, digits, `_`, `-` and `.` only)"
    )]
    Forbidden {
        /// The key.
        key: String,
        /// The first character not allowed.
        found: char,
    },
}

/// One routing-key pattern of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPattern {
    /// `all`: every key (Loopabull's reserved entry).
    All,
    /// A key, word for word.
    Exact(String),
    /// An AMQP topic pattern: words split on `.`, `*` matches exactly one word, `#` zero or
    /// more.
    Glob(Vec<String>),
}

impl KeyPattern {
    /// Reads a pattern; `all`, a key, or a key with `*`/`#` words.
    pub fn parse(text: &str) -> Result<KeyPattern, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "all" {
            return Ok(KeyPattern::All);
        }
        let words: Vec<&str> = text.split('.').collect();
        if words.iter().any(|w| w.is_empty()) {
            return Err(PatternError::EmptyWord(text.to_owned()));
        }
        for w in &words {
            if w.len() > 1 && (w.contains('*') || w.contains('#')) {
                return Err(PatternError::PartialWildcard(text.to_owned()));
            }
        }
        if words.iter().any(|w| *w == "*" || *w == "#") {
            Ok(KeyPattern::Glob(
                words.into_iter().map(str::to_owned).collect(),
            ))
        } else {
            Ok(KeyPattern::Exact(text.to_owned()))
        }
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyPattern::All => true,
            KeyPattern::Exact(k) => k == key,
            KeyPattern::Glob(words) => {
                let key: Vec<&str> = key.split('.').collect();
                glob_match(words, &key)
            }
        }
    }
}

fn glob_match(pattern: &[String], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((p, rest)) if p == "#" => {
            // `#` takes zero or more words: try every split.
            (0..=key.len()).any(|taken| glob_match(rest, &key[taken..]))
        }
        Some((p, rest)) => match key.split_first() {
            Some((k, key_rest)) => (p == "*" || p == k) && glob_match(rest, key_rest),
            None => false,
        },
    }
}

/// Whether `key` may name a playbook: words of letters, digits, `_` and `-`, separated by
/// single dots (so no path separators, no `..`, nothing hidden).
pub fn check_playbook_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > 255 {
        return Err(KeyError::TooLong);
    }
    for word in key.split('.') {
        if word.is_empty() {
            return Err(KeyError::EmptyWord(key.to_owned()));
        }
        if let Some(found) = word
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(KeyError::Forbidden {
                key: key.to_owned(),
                found,
            });
        }
    }
    Ok(())
}

/// The playbook path a routing key names under `dir` (`.` or empty for the project root).
pub fn playbook_for_key(dir: &str, key: &str, translator: Translator) -> Result<String, KeyError> {
    check_playbook_key(key)?;
    let file = match translator {
        Translator::Rkname => format!("{key}.yml"),
        Translator::Rkdirectory => format!("{}.yml", key.replace('.', "/")),
    };
    let dir = dir.trim_end_matches('/');
    Ok(if dir.is_empty() || dir == "." {
        file
    } else {
        format!("{dir}/{file}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, k: &str) -> bool {
        KeyPattern::parse(p).expect("valid pattern").matches(k)
    }

    #[test]
    fn amqp_globs() {
        assert!(m("org.*.prod", "org.fedora.prod"));
        assert!(!m("org.*.prod", "org.fedora.stg.prod"));
        assert!(m("org.#", "org"));
        assert!(m("org.#", "org.a.b.c"));
        assert!(!m("org.#", "com.a"));
        assert!(m("#.success", "org.x.image.success"));
        assert!(m("#", ""));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(!m("a.#.z", "a.b.c"));
        assert!(m("*.*", "a.b"));
        assert!(!m("*.*", "a"));
    }

    #[test]
    fn exact_and_all() {
        assert!(m("deploy.web", "deploy.web"));
        assert!(!m("deploy.web", "deploy.web.x"));
        assert!(m("all", "anything.at.all"));
        assert!(KeyPattern::parse("a..b").is_err());
        assert!(KeyPattern::parse("a.b*").is_err());
        assert!(KeyPattern::parse(" ").is_err());
    }

    #[test]
    fn translators() {
        assert_eq!(
            playbook_for_key(
                "playbooks",
                "org.fedoraproject.prod.foo",
                Translator::Rkname
            ),
            Ok("playbooks/org.fedoraproject.prod.foo.yml".to_owned())
        );
        assert_eq!(
            playbook_for_key(".", "org.fedoraproject.prod.foo", Translator::Rkdirectory),
            Ok("org/fedoraproject/prod/foo.yml".to_owned())
        );
        assert_eq!(
            playbook_for_key("pb/", "deploy", Translator::Rkdirectory),
            Ok("pb/deploy.yml".to_owned())
        );
    }

    #[test]
    fn keys_cannot_escape_the_playbooks_dir() {
        for bad in [
            "..",
            "a..b",
            "../etc/passwd",
            "a/b",
            ".hidden",
            "a b",
            "",
            "a\0b",
        ] {
            assert!(
                playbook_for_key("pb", bad, Translator::Rkdirectory).is_err(),
                "{bad:?}"
            );
        }
    }
}
