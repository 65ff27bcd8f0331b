//! Shell command lines (an SSH exec request, a line typed at a shell):
//! split into words and commands as the shell splits them, each command's
//! secrets replaced where they stand, the rest kept as written.

use std::ops::Range;

use super::{
    REDACTED,
    words::{self, Secret},
};

/// `command` with the secrets of each of its commands replaced (see
/// [`words`]), then what [`super::text`] removes (URIs, `password=`, SQL
/// `PASSWORD '…'`).
pub fn shell(command: &str) -> String {
    let mut out = String::with_capacity(command.len());
    let mut copied = 0;
    for simple in commands(command) {
        let found = words::secrets(simple.iter().map(|word| word.value.as_str()));
        for (word, secret) in simple.iter().zip(found) {
            let Some(secret) = secret else { continue };
            let written = &command[word.span.clone()];
            out.push_str(&command[copied..word.span.start]);
            match secret {
                // The part kept reads the same as written: keep its quoting.
                Secret::After(n) if written.as_bytes().get(..n) == word.value.as_bytes().get(..n) => {
                    out.push_str(&written[..n]);
                    out.push_str(REDACTED);
                }
                _ => out.push_str(&words::redacted(&word.value, secret)),
            }
            copied = word.span.end;
        }
    }
    out.push_str(&command[copied..]);
    super::text(&out)
}

/// A word as the shell reads it, and where it is written.
struct Word {
    value: String,
    span: Range<usize>,
}

/// The simple commands of `text`: words between `;`, `&`, `|`, newlines
/// and parentheses. Quotes and backslashes are read as the shell reads
/// them; what is unterminated runs to the end.
fn commands(text: &str) -> Vec<Vec<Word>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<Word> = None;
    let mut chars = text.char_indices().peekable();
    let end_word = |word: &mut Option<Word>, commands: &mut Vec<Vec<Word>>, at: usize| {
        if let Some(mut done) = word.take() {
            done.span.end = at;
            if let Some(last) = commands.last_mut() {
                last.push(done);
            }
        }
    };
    while let Some((at, c)) = chars.next() {
        match c {
            ' ' | '\t' => end_word(&mut word, &mut commands, at),
            '\n' | ';' | '&' | '|' | '(' | ')' => {
                end_word(&mut word, &mut commands, at);
                if commands.last().is_some_and(|last| !last.is_empty()) {
                    commands.push(Vec::new());
                }
            }
            '#' if word.is_none() => while chars.next_if(|&(_, c)| c != '\n').is_some() {},
            _ => {
                let current = word.get_or_insert_with(|| Word { value: String::new(), span: at..at });
                match c {
                    '\'' => {
                        while let Some((_, c)) = chars.next_if(|&(_, c)| c != '\'') {
                            current.value.push(c);
                        }
                        chars.next();
                    }
                    '"' => {
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '"' => break,
                                '\\' if chars.peek().is_some_and(|&(_, n)| matches!(n, '"' | '\\' | '$' | '`')) => {
                                    if let Some((_, escaped)) = chars.next() {
                                        current.value.push(escaped);
                                    }
                                }
                                _ => current.value.push(c),
                            }
                        }
                    }
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            current.value.push(escaped);
                        }
                    }
                    _ => current.value.push(c),
                }
            }
        }
    }
    end_word(&mut word, &mut commands, text.len());
    commands
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_go_wherever_they_are_written() {
        let cases = [
            ("tool --password s3cret", "tool --password ***"),
            ("tool --password='two words' -v", "tool --password=*** -v"),
            ("PGPASSWORD=s3cret psql -h db", "PGPASSWORD=*** psql -h db"),
            ("cd /x && mysql -uroot -ps3cret db; echo ok", "cd /x && mysql -uroot -p*** db; echo ok"),
            ("sshpass -p 's3 cret' ssh host", "sshpass -p *** ssh host"),
            ("sudo redis-cli -a s3cret ping | grep PONG", "sudo redis-cli -a *** ping | grep PONG"),
            ("curl -u bob:s3cret https://x/y", "curl -u bob:*** https://x/y"),
            ("curl --user=bob:s3cret https://x/y", "curl --user=bob:*** https://x/y"),
            ("\"--token\"=abc tool", "--token=*** tool"),
            ("psql postgres://a:s3cret@db/x", "psql postgres://a:***@db/x"),
            ("ls -la # --password not-a-flag", "ls -la # --password not-a-flag"),
            ("echo 'unterminated --password", "echo 'unterminated --password"),
        ];
        for (command, expected) in cases {
            assert_eq!(shell(command), expected, "{command}");
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in ["", "\\", "'", "\"\\", "a=", "-p", "mysql -p", "é=ü ö", "((;;&&||", "curl -u", "x\"y\\\"z"] {
            let _ = shell(text);
        }
    }
}
