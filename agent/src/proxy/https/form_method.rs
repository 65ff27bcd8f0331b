//! `_method` in a form body: Rails, Laravel and Symfony let a POSTed form
//! pass for a DELETE, PUT or PATCH with a field named `_method`. Where
//! rules tell methods apart, such a form is read before it is forwarded (up
//! to [`READ_AHEAD_CAP`]) so that each method it may pass for is judged;
//! the frames read are then sent on as they came ([`Replayed`]).

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::{HeaderMap, Method, header};

/// The field frameworks read.
pub(super) const FIELD: &str = "_method";

/// The most of a form read before it is forwarded; a larger one, where it
/// matters, is refused: a `_method` past the cap would go unjudged.
pub(super) const READ_AHEAD_CAP: usize = 256 * 1024;

/// How a form body is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Form {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data` with this boundary.
    Multipart(String),
}

impl Form {
    /// The form a POST carries, if its body is one frameworks read `_method` from.
    pub(super) fn of(method: &Method, headers: &HeaderMap) -> Option<Self> {
        if method != Method::POST {
            return None;
        }
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mut params = content_type.split(';');
        match params.next()?.trim().to_ascii_lowercase().as_str() {
            "application/x-www-form-urlencoded" => Some(Self::UrlEncoded),
            "multipart/form-data" => {
                let boundary = params.find_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
                });
                // Without a boundary nothing can read the parts; read as one
                // (the raw search below still sees a `_method`).
                Some(Self::Multipart(boundary.unwrap_or_default()))
            }
            _ => None,
        }
    }

    /// The methods `body`'s `_method` fields ask for, upper-cased; `Err`
    /// when the body names the field where this reading finds none (a
    /// form written so that a framework and Airlock could read it apart).
    pub(super) fn methods_in(&self, body: &[u8]) -> Result<Vec<String>, String> {
        let found: Vec<Vec<u8>> = match self {
            Self::UrlEncoded => {
                let text = String::from_utf8_lossy(body);
                super::query::values(Some(&text), FIELD).collect()
            }
            Self::Multipart(boundary) => multipart_fields(body, boundary, FIELD),
        };
        let named = memchr::memmem::find(body, FIELD.as_bytes()).is_some()
            || memchr::memmem::find(&body.to_ascii_lowercase(), b"%5fmethod").is_some();
        if named && found.is_empty() {
            return Err(format!("the form names {FIELD} in a way Airlock cannot read"));
        }
        Ok(found.into_iter().map(|m| String::from_utf8_lossy(&m).to_ascii_uppercase()).collect())
    }
}

/// The values of the parts of a `multipart/form-data` body named `name`.
fn multipart_fields(body: &[u8], boundary: &str, name: &str) -> Vec<Vec<u8>> {
    if boundary.is_empty() {
        return Vec::new();
    }
    let delimiter = format!("--{boundary}");
    let mut values = Vec::new();
    for part in split(body, delimiter.as_bytes()).skip(1) {
        let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&part[..head_end]);
        let named = head.lines().any(|line| {
            let Some((field, value)) = line.split_once(':') else { return false };
            field.trim().eq_ignore_ascii_case("content-disposition")
                && value.split(';').skip(1).any(|param| {
                    param.split_once('=').is_some_and(|(key, value)| {
                        key.trim().eq_ignore_ascii_case("name") && value.trim().trim_matches('"') == name
                    })
                })
        });
        if named {
            let value = &part[head_end + 4..];
            values.push(value.strip_suffix(b"\r\n").unwrap_or(value).to_vec());
        }
    }
    values
}

fn split<'a>(body: &'a [u8], delimiter: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = Some(body);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memmem::find(text, delimiter) {
            Some(at) => {
                rest = Some(&text[at + delimiter.len()..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// Reads `body`'s frames until it ends or more than `cap` bytes came:
/// `Ok` with the frames and their bytes, `Err` with why not.
pub(super) async fn read_ahead<B>(body: &mut B, cap: usize) -> Result<(VecDeque<Frame<Bytes>>, Bytes), String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut frames, mut bytes) = (VecDeque::new(), BytesMut::new());
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|error| format!("the request's body could not be read: {error}"))?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > cap {
                return Err(format!(
                    "a form over {} KiB, where rules tell methods apart and a {FIELD} field in it would go unread",
                    cap / 1024
                ));
            }
            bytes.extend_from_slice(data);
        }
        frames.push_back(frame);
    }
    Ok((frames, bytes.freeze()))
}

/// A body whose first frames were read ahead: those, then the rest.
pub(super) struct Replayed<B> {
    read: VecDeque<Frame<Bytes>>,
    rest: B,
}

impl<B> Replayed<B> {
    /// `rest`, after `read`.
    pub fn after(read: VecDeque<Frame<Bytes>>, rest: B) -> Self {
        Self { read, rest }
    }
}

impl<B> Body for Replayed<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.read.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let read: u64 = self.read.iter().filter_map(Frame::data_ref).map(|d| d.len() as u64).sum();
        let mut hint = self.rest.size_hint();
        hint.set_lower(hint.lower() + read);
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + read);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::https::test_body::Chunks;
    use hyper::header::HeaderValue;

    fn form(content_type: &'static str) -> Option<Form> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Form::of(&Method::POST, &headers)
    }

    #[test]
    fn posted_forms_are_read_for_their_method_field() {
        assert_eq!(form("application/x-www-form-urlencoded; charset=utf-8"), Some(Form::UrlEncoded));
        assert_eq!(form("Multipart/Form-Data; boundary=\"xyz\""), Some(Form::Multipart("xyz".into())));
        assert_eq!(form("application/json"), None);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        assert_eq!(Form::of(&Method::PUT, &headers), None, "frameworks read the field of a POST only");
    }

    #[test]
    fn the_method_a_form_asks_for_is_read_as_frameworks_read_it() {
        let urlencoded = Form::UrlEncoded;
        assert_eq!(urlencoded.methods_in(b"a=1&_method=delete").unwrap(), ["DELETE"]);
        assert_eq!(urlencoded.methods_in(b"%5Fmethod=put&b=2").unwrap(), ["PUT"]);
        assert!(urlencoded.methods_in(b"name=x").unwrap().is_empty());
        assert!(urlencoded.methods_in(b"_method;=DELETE").is_err(), "named, not read: refused");
        let multipart = Form::Multipart("B0undary".into());
        let body = b"--B0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
                     --B0undary\r\ncontent-disposition: form-data; name=_method\r\n\r\nPATCH\r\n--B0undary--\r\n";
        assert_eq!(multipart.methods_in(body).unwrap(), ["PATCH"]);
        let hidden = b"--B0undary\r\nContent-Disposition: form-data; name=\"_method\"\n\nDELETE\r\n--B0undary--";
        assert!(multipart.methods_in(hidden).is_err());
    }

    #[tokio::test]
    async fn frames_read_ahead_are_sent_on_as_they_came() {
        let mut body = Chunks::of(b"a=1&_method=DELETE", 5);
        let (read, bytes) = read_ahead(&mut body, 64).await.unwrap();
        assert_eq!(bytes, "a=1&_method=DELETE");
        let replayed = Replayed::after(read, body);
        assert_eq!(replayed.size_hint().lower(), 18);
        assert_eq!(replayed.collect().await.unwrap().to_bytes(), "a=1&_method=DELETE");
        let mut large = Chunks::of(&[b'x'; 100], 30);
        assert!(read_ahead(&mut large, 64).await.unwrap_err().contains("over 0 KiB"));
    }
}
