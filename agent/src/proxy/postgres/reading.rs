//! How the server will read the client's next statement: the session's
//! `client_encoding` and `standard_conforming_strings`, as the server
//! reports them (ParameterStatus), and whether a change to them may still
//! be on its way.
//!
//! The guard sees a client's statement before the server has run the ones
//! sent ahead of it. When one of those may change how text is read (`SET
//! standard_conforming_strings`, a rollback, a function that calls
//! set_config), the reading is unsettled until the server has answered
//! everything sent (its ReadyForQuery, preceded by any ParameterStatus),
//! and the guard reads text every way it could be read.

use super::{
    codec::{Backend, Frame},
    encoding::ClientEncoding,
};
use crate::guardrails::parser::Lexing;

/// What a statement sent now will be read with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// How its bytes decode.
    pub encoding: ClientEncoding,
    /// How its string literals lex.
    pub lexing: Lexing,
    /// Whether a statement still in flight may change either.
    pub unsettled: bool,
}

/// One session's reading, kept from both directions of the relay.
#[derive(Debug)]
pub struct SessionReading {
    encoding: ClientEncoding,
    lexing: Lexing,
    /// Query, Sync and FunctionCall messages sent and not yet answered by a
    /// ReadyForQuery; the start-up counts as one.
    in_flight: u32,
    unsettled: bool,
    /// Transaction status of the last ReadyForQuery: `I`, `T` or `E`.
    status: u8,
}

impl Default for SessionReading {
    /// Before the server's first ReadyForQuery nothing is known for sure:
    /// its start-up ParameterStatus messages come first.
    fn default() -> Self {
        Self { encoding: ClientEncoding::Utf8, lexing: Lexing::default(), in_flight: 1, unsettled: true, status: b'I' }
    }
}

impl SessionReading {
    /// The reading for a statement sent now.
    pub fn reading(&self) -> Reading {
        Reading { encoding: self.encoding, lexing: self.lexing, unsettled: self.unsettled }
    }

    /// The transaction status, once the server has answered everything
    /// sent to it; `None` while something is in flight.
    pub fn idle(&self) -> Option<u8> {
        (self.in_flight == 0).then_some(self.status)
    }

    /// Notes a message forwarded to the server; `may_change` when running it
    /// may change how text is read.
    pub fn client_sent(&mut self, tag: u8, may_change: bool) {
        if may_change {
            self.unsettled = true;
        }
        if matches!(tag, b'Q' | b'S' | b'F') {
            self.in_flight = self.in_flight.saturating_add(1);
        }
    }

    /// Notes a message the server sent.
    pub fn server_sent(&mut self, frame: &Frame) {
        match Backend::parse(frame) {
            Ok(Backend::ParameterStatus { name, value }) => self.set(name, value),
            Ok(Backend::ReadyForQuery { status }) => {
                self.status = status;
                self.in_flight = self.in_flight.saturating_sub(1);
                if self.in_flight == 0 {
                    self.unsettled = false;
                }
            }
            _ => {}
        }
    }

    fn set(&mut self, name: &str, value: &str) {
        if name.eq_ignore_ascii_case("client_encoding") {
            self.encoding = ClientEncoding::from_name(value);
        } else if name.eq_ignore_ascii_case("standard_conforming_strings") {
            self.lexing.backslash_escapes = !value.eq_ignore_ascii_case("on");
        }
    }

    /// Whether the server reports a frame this type of tracking reads.
    pub fn follows(tag: u8) -> bool {
        matches!(tag, b'S' | b'Z')
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame { tag, body: Bytes::copy_from_slice(body) }
    }

    #[test]
    fn settles_once_the_server_answered_everything() {
        let mut session = SessionReading::default();
        assert!(session.reading().unsettled);
        session.server_sent(&frame(b'S', b"client_encoding\0LATIN1\0"));
        session.server_sent(&frame(b'S', b"standard_conforming_strings\0off\0"));
        session.server_sent(&frame(b'Z', b"I"));
        let reading = session.reading();
        assert_eq!(
            (reading.encoding, reading.lexing.backslash_escapes, reading.unsettled),
            (ClientEncoding::Latin1, true, false)
        );
        // Pipelined: a SET and then a query, before the server answers.
        session.client_sent(b'Q', true);
        session.client_sent(b'Q', false);
        assert!(session.reading().unsettled);
        session.server_sent(&frame(b'S', b"standard_conforming_strings\0on\0"));
        session.server_sent(&frame(b'Z', b"I"));
        assert!(session.reading().unsettled, "one query still in flight");
        session.server_sent(&frame(b'Z', b"I"));
        assert!(!session.reading().unsettled);
        assert!(!session.reading().lexing.backslash_escapes);
        assert_eq!(session.idle(), Some(b'I'));
        // Statements that change nothing leave it settled.
        session.client_sent(b'P', false);
        session.client_sent(b'S', false);
        assert!(!session.reading().unsettled);
    }
}
