//! Which columns the rows flowing from the server have, so each DataRow is
//! masked by the right plan.
//!
//! A simple Query announces its rows with a RowDescription. In the extended
//! protocol the description may come from a Describe of the portal, or of
//! the statement long before (drivers describe a prepared statement once and
//! then only Bind and Execute it), with the formats the Bind asked for. The
//! server answers messages in order, so a FIFO of what the client asked
//! says what each answer belongs to; after an error the server skips to the
//! next Sync, and so does the FIFO.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use super::codec::{self, CodecError, FieldDescription, Frame};

/// Most prepared statements and portals remembered per session.
const MAX_REMEMBERED: usize = 10_000;

/// Columns of a result, with the formats they arrive in.
pub type Columns = Arc<Vec<FieldDescription>>;

/// What the server will answer next.
#[derive(Debug)]
enum Awaiting {
    /// Simple query (or function call): answered up to ReadyForQuery.
    Query,
    Parse,
    Bind(codec::BindFormats),
    DescribeStatement(String),
    DescribePortal(String),
    Execute {
        portal: String,
        /// Whether its first row announced the columns: the rest follow them.
        announced: bool,
    },
    Close,
    Sync,
}

#[derive(Debug)]
struct Portal {
    statement: String,
    result_formats: Vec<i16>,
    described: Option<Columns>,
}

/// What a server frame means for the rows.
#[derive(Debug, PartialEq, Eq)]
pub enum Rows {
    /// Rows that follow have these columns.
    Columns(Columns),
    /// COPY TO STDOUT data follows: text or CSV (`binary` false) with this many columns.
    CopyOut {
        /// Binary COPY format.
        binary: bool,
        /// Columns per row.
        columns: usize,
    },
    /// The current result ended.
    Ended,
    /// Nothing changes.
    Same,
}

/// Per-session tracking of result shapes.
#[derive(Debug, Default)]
pub struct ResultShapes {
    awaiting: VecDeque<Awaiting>,
    statements: HashMap<String, Columns>,
    portals: HashMap<String, Portal>,
}

impl ResultShapes {
    /// Notes a frame the client sent.
    pub fn client_sent(&mut self, frame: &Frame) -> Result<(), CodecError> {
        match frame.tag {
            b'Q' | b'F' => self.awaiting.push_back(Awaiting::Query),
            b'P' => {
                // A statement parsed again under a name drops the old description.
                let mut body = frame.body.clone();
                let end = body.iter().position(|b| *b == 0).ok_or(CodecError::Truncated("Parse"))?;
                let name = String::from_utf8_lossy(&body.split_to(end)).into_owned();
                self.statements.remove(&name);
                self.awaiting.push_back(Awaiting::Parse);
            }
            b'B' => self.awaiting.push_back(Awaiting::Bind(codec::bind_formats(frame)?)),
            b'D' => match codec::describe_target(frame)? {
                (b'S', name) => self.awaiting.push_back(Awaiting::DescribeStatement(name)),
                (_, name) => self.awaiting.push_back(Awaiting::DescribePortal(name)),
            },
            b'E' => {
                let mut body = frame.body.clone();
                let end = body.iter().position(|b| *b == 0).ok_or(CodecError::Truncated("Execute"))?;
                let portal = String::from_utf8_lossy(&body.split_to(end)).into_owned();
                self.awaiting.push_back(Awaiting::Execute { portal, announced: false });
            }
            b'C' => {
                match codec::describe_target(frame)? {
                    (b'S', name) => drop(self.statements.remove(&name)),
                    (_, name) => drop(self.portals.remove(&name)),
                }
                self.awaiting.push_back(Awaiting::Close);
            }
            b'S' => self.awaiting.push_back(Awaiting::Sync),
            _ => {}
        }
        Ok(())
    }

    /// Notes a frame the server sent, and says what it means for the rows.
    pub fn server_sent(&mut self, frame: &Frame) -> Result<Rows, CodecError> {
        Ok(match frame.tag {
            b'T' => {
                let columns: Columns = Arc::new(codec::row_description(frame)?);
                match self.awaiting.front() {
                    Some(Awaiting::DescribeStatement(_)) => {
                        if let Some(Awaiting::DescribeStatement(name)) = self.awaiting.pop_front() {
                            remember(&mut self.statements, name, columns);
                        }
                        Rows::Same
                    }
                    Some(Awaiting::DescribePortal(_)) => {
                        if let Some(Awaiting::DescribePortal(name)) = self.awaiting.pop_front()
                            && let Some(portal) = self.portals.get_mut(&name)
                        {
                            portal.described = Some(columns);
                        }
                        Rows::Same
                    }
                    _ => Rows::Columns(columns),
                }
            }
            b'n' => {
                if matches!(self.awaiting.front(), Some(Awaiting::DescribeStatement(_) | Awaiting::DescribePortal(_))) {
                    self.awaiting.pop_front();
                }
                Rows::Same
            }
            b'1' | b'3' => {
                self.awaiting.pop_front();
                Rows::Same
            }
            b'2' => {
                if let Some(Awaiting::Bind(bind)) = self.awaiting.pop_front() {
                    if self.portals.len() >= MAX_REMEMBERED && !self.portals.contains_key(&bind.portal) {
                        self.portals.clear();
                    }
                    let portal =
                        Portal { statement: bind.statement, result_formats: bind.result_formats, described: None };
                    self.portals.insert(bind.portal, portal);
                }
                Rows::Same
            }
            // The first row of an Execute: its columns come from the portal.
            b'D' => {
                let Some(Awaiting::Execute { portal, announced: false }) = self.awaiting.front() else {
                    return Ok(Rows::Same);
                };
                let columns = self.portal_columns(portal);
                if let Some(Awaiting::Execute { announced, .. }) = self.awaiting.front_mut() {
                    *announced = true;
                }
                columns.map_or(Rows::Same, Rows::Columns)
            }
            b'H' => {
                let body = &frame.body;
                if body.len() < 3 {
                    return Err(CodecError::Truncated("CopyOutResponse"));
                }
                Rows::CopyOut { binary: body[0] == 1, columns: usize::from(u16::from_be_bytes([body[1], body[2]])) }
            }
            b'C' | b'I' | b's' => {
                if matches!(self.awaiting.front(), Some(Awaiting::Execute { .. })) {
                    self.awaiting.pop_front();
                }
                Rows::Ended
            }
            b'E' => {
                match self.awaiting.front() {
                    Some(Awaiting::Query) | None => {}
                    // Extended protocol: the server skips to the next Sync.
                    Some(_) => {
                        while !matches!(self.awaiting.front(), Some(Awaiting::Sync) | None) {
                            self.awaiting.pop_front();
                        }
                    }
                }
                Rows::Ended
            }
            b'Z' => {
                if matches!(self.awaiting.front(), Some(Awaiting::Query | Awaiting::Sync)) {
                    self.awaiting.pop_front();
                }
                Rows::Ended
            }
            _ => Rows::Same,
        })
    }

    /// Whether the rows now flowing belong to an Execute whose columns are known.
    fn portal_columns(&self, name: &str) -> Option<Columns> {
        let portal = self.portals.get(name)?;
        if let Some(described) = &portal.described {
            return Some(Arc::clone(described));
        }
        let statement = self.statements.get(&portal.statement)?;
        let format = |i: usize| match portal.result_formats.as_slice() {
            [] => 0,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(0),
        };
        Some(Arc::new(
            statement
                .iter()
                .enumerate()
                .map(|(i, field)| FieldDescription { format: format(i), ..field.clone() })
                .collect(),
        ))
    }
}

fn remember(map: &mut HashMap<String, Columns>, name: String, columns: Columns) {
    if map.len() >= MAX_REMEMBERED && !map.contains_key(&name) {
        map.clear();
    }
    map.insert(name, columns);
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut as _, Bytes, BytesMut};

    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame { tag, body: Bytes::copy_from_slice(body) }
    }

    fn description(names: &[&str]) -> Frame {
        let mut body = BytesMut::new();
        body.put_i16(names.len() as i16);
        for name in names {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
            body.put_u32(16_384);
            body.put_i16(1);
            body.put_u32(25);
            body.put_i16(-1);
            body.put_i32(-1);
            body.put_i16(0);
        }
        Frame { tag: b'T', body: body.freeze() }
    }

    fn bind(portal: &str, statement: &str, formats: &[i16]) -> Frame {
        let mut body = BytesMut::new();
        for name in [portal, statement] {
            body.put_slice(name.as_bytes());
            body.put_u8(0);
        }
        body.put_i16(0);
        body.put_i16(1);
        body.put_i32(2);
        body.put_slice(b"42");
        body.put_i16(formats.len() as i16);
        for f in formats {
            body.put_i16(*f);
        }
        Frame { tag: b'B', body: body.freeze() }
    }

    fn names(rows: Rows) -> Vec<(String, i16)> {
        match rows {
            Rows::Columns(columns) => columns.iter().map(|c| (c.name.clone(), c.format)).collect(),
            other => panic!("no columns: {other:?}"),
        }
    }

    #[test]
    fn simple_queries_announce_their_rows() {
        let mut shapes = ResultShapes::default();
        shapes.client_sent(&frame(b'Q', b"select 1\0")).unwrap();
        assert_eq!(names(shapes.server_sent(&description(&["a"])).unwrap()), [("a".into(), 0)]);
        assert_eq!(shapes.server_sent(&frame(b'C', b"SELECT 1\0")).unwrap(), Rows::Ended);
        shapes.server_sent(&frame(b'Z', b"I")).unwrap();
        assert!(shapes.awaiting.is_empty());
    }

    #[test]
    fn a_statement_described_once_shapes_later_executions_with_their_formats() {
        let mut shapes = ResultShapes::default();
        for message in [frame(b'P', b"s1\0select email from t\0\0\0"), frame(b'D', b"Ss1\0"), frame(b'S', b"")] {
            shapes.client_sent(&message).unwrap();
        }
        for answer in [frame(b'1', b""), frame(b't', b"\0\0"), description(&["email"]), frame(b'Z', b"I")] {
            assert!(!matches!(shapes.server_sent(&answer).unwrap(), Rows::Columns(_)));
        }
        // Later: Bind with binary results, Execute, no Describe.
        for message in [bind("", "s1", &[1]), frame(b'E', b"\0\0\0\0\0"), frame(b'S', b"")] {
            shapes.client_sent(&message).unwrap();
        }
        shapes.server_sent(&frame(b'2', b"")).unwrap();
        assert_eq!(names(shapes.server_sent(&frame(b'D', b"\0\x01\0\0\0\x01x")).unwrap()), [("email".into(), 1)]);
        // The rest of the rows follow the columns announced: no plan per row.
        assert_eq!(shapes.server_sent(&frame(b'D', b"\0\x01\0\0\0\x01y")).unwrap(), Rows::Same);
        assert_eq!(shapes.server_sent(&frame(b'C', b"SELECT 1\0")).unwrap(), Rows::Ended);
        shapes.server_sent(&frame(b'Z', b"I")).unwrap();
        assert!(shapes.awaiting.is_empty());
    }

    #[test]
    fn an_error_skips_to_the_next_sync() {
        let mut shapes = ResultShapes::default();
        for message in [
            frame(b'P', b"\0bad\0\0\0"),
            bind("", "", &[]),
            frame(b'D', b"P\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
            frame(b'Q', b"select 1\0"),
        ] {
            shapes.client_sent(&message).unwrap();
        }
        shapes.server_sent(&frame(b'E', b"SERROR\0\0")).unwrap();
        shapes.server_sent(&frame(b'Z', b"I")).unwrap();
        assert_eq!(names(shapes.server_sent(&description(&["x"])).unwrap()), [("x".into(), 0)]);
    }

    #[test]
    fn copy_out_and_malformed_messages() {
        let mut shapes = ResultShapes::default();
        shapes.client_sent(&frame(b'Q', b"copy t to stdout\0")).unwrap();
        let copy = shapes.server_sent(&frame(b'H', &[0, 0, 2, 0, 0, 0, 0])).unwrap();
        assert_eq!(copy, Rows::CopyOut { binary: false, columns: 2 });
        assert!(shapes.client_sent(&frame(b'B', b"\0")).is_err());
        assert!(shapes.server_sent(&frame(b'T', &[0, 1])).is_err());
    }
}
