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
const READ_AHEAD_CAP: usize = 256 * 1024;

/// How long a form read ahead may take to arrive.
const READ_AHEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a POSTed body is written, as frameworks read `_method` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Form {
    /// `application/x-www-form-urlencoded`, or no type at all (Rack reads
    /// an untyped POST as a form).
    UrlEncoded,
    /// `multipart/*` with this boundary.
    Multipart(String),
    /// JSON (Laravel takes a JSON body's members as the form's).
    Json,
}

impl Form {
    /// The form a POST carries, if its body is one frameworks read
    /// `_method` from; `Err` when its type could be read two ways.
    pub(super) fn of(method: &Method, headers: &HeaderMap) -> Result<Option<Self>, String> {
        if method != Method::POST {
            return Ok(None);
        }
        let Some(content_type) = headers.get(header::CONTENT_TYPE) else { return Ok(Some(Self::UrlEncoded)) };
        let content_type = String::from_utf8_lossy(content_type.as_bytes()).to_ascii_lowercase();
        // Rack ends the media type at `;` or `,`, PHP also at a space.
        let media = content_type.trim_start().split([';', ',', ' ', '\t']).next().unwrap_or_default();
        Ok(match media {
            "" | "application/x-www-form-urlencoded" => Some(Self::UrlEncoded),
            "application/json" => Some(Self::Json),
            json if json.starts_with("application/") && json.ends_with("+json") => Some(Self::Json),
            multipart if multipart.starts_with("multipart/") => {
                let boundaries: Vec<&str> = content_type
                    .split([';', ','])
                    .filter_map(|param| param.split_once('='))
                    .filter(|(name, _)| name.trim() == "boundary")
                    .map(|(_, value)| value.trim().trim_matches('"'))
                    .collect();
                match boundaries[..] {
                    [] => Some(Self::Multipart(String::new())),
                    [one] => Some(Self::Multipart(original_case(headers, one))),
                    _ => return Err("the form's type gives more than one boundary".into()),
                }
            }
            _ => None,
        })
    }

    /// Reads `body` ahead (at most [`READ_AHEAD_CAP`], within
    /// [`READ_AHEAD_TIMEOUT`]) for the methods its `_method` fields ask
    /// for: the frames to send on in its place, and those methods; `Err`
    /// with why it may not go.
    pub(super) async fn read_methods<B>(&self, body: &mut B) -> Result<(VecDeque<Frame<Bytes>>, Vec<String>), String>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let read = tokio::time::timeout(READ_AHEAD_TIMEOUT, read_ahead(body, READ_AHEAD_CAP)).await;
        let (frames, data) =
            read.map_err(|_| format!("the form did not arrive within {} s", READ_AHEAD_TIMEOUT.as_secs()))??;
        Ok((frames, self.methods_in(&data)?))
    }

    /// The methods `body`'s `_method` fields ask for, upper-cased; `Err`
    /// when a part names a field Airlock cannot read.
    pub(super) fn methods_in(&self, body: &[u8]) -> Result<Vec<String>, String> {
        let found = match self {
            Self::UrlEncoded => urlencoded_fields(body),
            Self::Multipart(boundary) => multipart_fields(body, boundary)?,
            Self::Json => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(members)) => members
                    .iter()
                    .filter(|(name, _)| field_name(name) == FIELD)
                    .map(|(_, value)| value.as_str().map_or_else(|| value.to_string(), str::to_owned))
                    .collect(),
                _ => Vec::new(),
            },
        };
        Ok(found.into_iter().map(|method| method.trim().to_ascii_uppercase()).collect())
    }
}

/// The boundary as the header wrote it (the type was lower-cased to be read).
fn original_case(headers: &HeaderMap, lower: &str) -> String {
    let written = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let written = written.unwrap_or_default();
    match written.to_ascii_lowercase().find(lower) {
        Some(at) => written[at..at + lower.len()].to_owned(),
        None => lower.to_owned(),
    }
}

/// A field's name as frameworks compare it: percent-decoded, leading
/// spaces dropped (Rack splits on `& *`), `.`, ` ` and `[` as `_` (PHP),
/// in lower case (more readings, never fewer).
fn field_name(raw: &str) -> String {
    let decoded = crate::percent::decoded(&raw.replace('+', " "));
    decoded
        .trim_start()
        .chars()
        .map(|c| if matches!(c, '.' | ' ' | '[') { '_' } else { c })
        .collect::<String>()
        .to_lowercase()
}

/// Every `_method` value of an urlencoded body, however its name is
/// written; pairs split on `&` and `;`.
fn urlencoded_fields(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split(['&', ';'])
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| field_name(name) == FIELD)
        .map(|(_, value)| crate::percent::decoded(&value.replace('+', " ")))
        .collect()
}

/// The values of a multipart body's parts named `_method`; `Err` when a
/// part's head cannot be read and names the field anyway.
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Vec<String>, String> {
    let unreadable = || Err(format!("the form names {FIELD} in a part Airlock cannot read"));
    let named = |bytes: &[u8]| {
        let lower = bytes.to_ascii_lowercase();
        ["_method", "%5fmethod", ".method", "%2emethod"]
            .iter()
            .any(|n| memchr::memmem::find(&lower, n.as_bytes()).is_some())
    };
    if boundary.is_empty() {
        return if named(body) { unreadable() } else { Ok(Vec::new()) };
    }
    let delimiter = format!("--{boundary}");
    let mut values = Vec::new();
    for part in split(body, delimiter.as_bytes()).skip(1) {
        // The head ends at the first empty line, however lines end.
        let ends = [&b"\r\n\r\n"[..], b"\n\n", b"\r\n\n", b"\n\r\n"];
        let Some((head_end, gap)) =
            ends.iter().filter_map(|end| memchr::memmem::find(part, end).map(|at| (at, end.len()))).min()
        else {
            if named(part) {
                return unreadable();
            }
            continue;
        };
        let head = String::from_utf8_lossy(&part[..head_end]);
        let names: Vec<String> = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .filter(|(field, _)| field.trim().eq_ignore_ascii_case("content-disposition"))
            .flat_map(|(_, value)| value.split(';').skip(1).map(str::to_owned).collect::<Vec<_>>())
            .filter_map(|param| {
                let (key, value) = param.split_once('=')?;
                key.trim().eq_ignore_ascii_case("name").then(|| field_name(value.trim().trim_matches('"')))
            })
            .collect();
        if names.iter().any(|name| name == FIELD) {
            let value = &part[head_end + gap..];
            let value = value.strip_suffix(b"\r\n").or_else(|| value.strip_suffix(b"\n")).unwrap_or(value);
            values.push(String::from_utf8_lossy(value).into_owned());
        } else if names.is_empty() && named(&part[..head_end]) {
            return unreadable();
        }
    }
    Ok(values)
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

/// Reads `body` until it ends or more than `cap` bytes came: `Ok` with
/// the frames to send on in its place (its data in one frame, then any
/// trailers) and that data; `Err` with why not.
async fn read_ahead<B>(body: &mut B, cap: usize) -> Result<(VecDeque<Frame<Bytes>>, Bytes), String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut data, mut others) = (BytesMut::new(), VecDeque::new());
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else { break };
        let frame = frame.map_err(|error| format!("the request's body could not be read: {error}"))?;
        match frame.into_data() {
            Ok(chunk) if data.len() + chunk.len() > cap => {
                return Err(format!(
                    "a form over {} KiB, where rules tell methods apart and a {FIELD} field in it would go unread",
                    cap / 1024
                ));
            }
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(frame) => others.push_back(frame),
        }
    }
    let data = data.freeze();
    if !data.is_empty() {
        others.push_front(Frame::data(data.clone()));
    }
    Ok((others, data))
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

    fn form(content_type: &'static str) -> Result<Option<Form>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Form::of(&Method::POST, &headers)
    }

    #[test]
    fn posts_are_read_as_frameworks_read_their_type() {
        assert_eq!(form("application/x-www-form-urlencoded; charset=utf-8"), Ok(Some(Form::UrlEncoded)));
        assert_eq!(form("application/x-www-form-urlencoded, x"), Ok(Some(Form::UrlEncoded)));
        assert_eq!(form("Multipart/Form-Data; boundary=\"XyZ\""), Ok(Some(Form::Multipart("XyZ".into()))));
        assert_eq!(form("multipart/mixed; boundary=b"), Ok(Some(Form::Multipart("b".into()))));
        assert!(form("multipart/form-data; boundary=a; boundary=b").is_err());
        assert_eq!(form("application/merge-patch+json"), Ok(Some(Form::Json)));
        assert_eq!(form("application/octet-stream"), Ok(None));
        assert_eq!(
            Form::of(&Method::POST, &HeaderMap::new()),
            Ok(Some(Form::UrlEncoded)),
            "Rack reads an untyped POST"
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        assert_eq!(Form::of(&Method::PUT, &headers), Ok(None), "frameworks read the field of a POST only");
    }

    #[test]
    fn every_method_a_form_may_ask_for_is_read() {
        let urlencoded = Form::UrlEncoded;
        assert_eq!(urlencoded.methods_in(b"a=1&_method=delete").unwrap(), ["DELETE"]);
        assert_eq!(urlencoded.methods_in(b"%5Fmethod=put&b=2").unwrap(), ["PUT"]);
        // Rack: the last of two wins, a key may follow `& `; PHP: `.` and ` ` are `_`.
        assert_eq!(urlencoded.methods_in(b"_method=POST& _method=DELETE").unwrap(), ["POST", "DELETE"]);
        assert_eq!(urlencoded.methods_in(b".method=DELETE").unwrap(), ["DELETE"]);
        assert_eq!(urlencoded.methods_in(b"x=1;%2Emethod=patch").unwrap(), ["PATCH"]);
        assert!(urlencoded.methods_in(b"name=x&note=find_method").unwrap().is_empty());
        assert_eq!(Form::Json.methods_in(br#"{"a":1,"_method":"delete"}"#).unwrap(), ["DELETE"]);
        assert!(Form::Json.methods_in(b"[1]").unwrap().is_empty());

        let multipart = Form::Multipart("B0undary".into());
        let body = b"--B0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello _method\r\n\
                     --B0undary\r\ncontent-disposition: form-data; name=_method\r\n\r\nPATCH\r\n--B0undary--\r\n";
        assert_eq!(multipart.methods_in(body).unwrap(), ["PATCH"]);
        let bare_lines = b"--B0undary\nContent-Disposition: form-data; name=\".method\"\n\nDELETE\n--B0undary--";
        assert_eq!(multipart.methods_in(bare_lines).unwrap(), ["DELETE"]);
        let headless = b"--B0undary\r\nContent-Disposition: form-data; name=\"_method\"DELETE--B0undary--";
        assert!(multipart.methods_in(headless).is_err());
        assert!(Form::Multipart(String::new()).methods_in(b"name=\"_method\"").is_err());
    }

    #[tokio::test]
    async fn a_form_read_ahead_is_sent_on_whole() {
        let mut body = Chunks::of(b"a=1&_method=DELETE", 5);
        let (read, bytes) = read_ahead(&mut body, 64).await.unwrap();
        assert_eq!(bytes, "a=1&_method=DELETE");
        assert_eq!(read.len(), 1, "its data in one frame");
        let replayed = Replayed::after(read, body);
        assert_eq!(replayed.size_hint().lower(), 18);
        assert_eq!(replayed.collect().await.unwrap().to_bytes(), "a=1&_method=DELETE");
        let mut large = Chunks::of(&[b'x'; 100], 30);
        assert!(read_ahead(&mut large, 64).await.unwrap_err().contains("over 0 KiB"));
    }
}
