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
const FIELD: &str = "_method";

/// The most of a form read before it is forwarded; a larger one, where it
/// matters, is refused: a `_method` past the cap would go unjudged.
const READ_AHEAD_CAP: usize = 256 * 1024;

/// How long a form read ahead may take to arrive.
const READ_AHEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How a POSTed body is written, as frameworks read `_method` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `application/x-www-form-urlencoded`, or no type at all (Rack reads
    /// an untyped POST as a form).
    UrlEncoded,
    /// `multipart/*` with this boundary.
    Multipart(String),
    /// JSON (Laravel takes a JSON body's members as the form's).
    Json,
}

impl Form {
    /// The ways frameworks may read a POST's body for `_method` (none for
    /// another method, or a body no framework reads it from); `Err` when
    /// its type could be read two ways.
    pub fn of(method: &Method, headers: &HeaderMap) -> Result<Vec<Self>, String> {
        // Symfony upper-cases the method it is given.
        if !method.as_str().eq_ignore_ascii_case("POST") {
            return Ok(Vec::new());
        }
        let Some(content_type) = headers.get(header::CONTENT_TYPE) else { return Ok(vec![Self::UrlEncoded]) };
        let written = String::from_utf8_lossy(content_type.as_bytes()).into_owned();
        let lower = written.to_ascii_lowercase();
        // Rack ends the media type at `;` or `,`, PHP also at a space.
        let media = lower.trim_start().split([';', ',', ' ', '\t']).next().unwrap_or_default();
        let mut forms = Vec::new();
        if media.is_empty() || media == "application/x-www-form-urlencoded" {
            forms.push(Self::UrlEncoded);
        }
        if media.starts_with("multipart/") {
            forms.push(Self::Multipart(boundary(&written)?));
        }
        // Laravel reads a body as JSON wherever its type says `/json` or `+json`.
        if lower.contains("/json") || lower.contains("+json") {
            forms.push(Self::Json);
        }
        Ok(forms)
    }

    /// The methods `body`'s `_method` fields ask for, upper-cased; `Err`
    /// when a part names a field Airlock cannot read.
    pub fn methods_in(&self, body: &[u8]) -> Result<Vec<String>, String> {
        let found = match self {
            Self::UrlEncoded => urlencoded_fields(body),
            Self::Multipart(boundary) => multipart_fields(body, boundary)?,
            Self::Json => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(members)) => members
                    .iter()
                    .filter(|(name, _)| names_the_field(name))
                    .map(|(_, value)| value.as_str().map_or_else(|| value.to_string(), str::to_owned))
                    .collect(),
                Ok(_) => Vec::new(),
                // PHP reads deeper documents than serde_json.
                Err(_) if mentions_the_field(body) => {
                    return Err(format!("the body names {FIELD} in JSON Airlock cannot read"));
                }
                Err(_) => Vec::new(),
            },
        };
        Ok(found.into_iter().map(|method| method.trim().to_ascii_uppercase()).collect())
    }
}

/// The boundary a multipart type gives, as written; `Err` when
/// frameworks could read it apart (PHP takes the first `boundary`
/// anywhere in the type, Rack the last; both keep spaces).
fn boundary(written: &str) -> Result<String, String> {
    let lower = written.to_ascii_lowercase();
    let mut found = lower.match_indices("boundary");
    let Some((at, _)) = found.next() else { return Ok(String::new()) };
    if found.next().is_some() {
        return Err("the form's type names more than one boundary".into());
    }
    let rest = written[at + "boundary".len()..].strip_prefix('=').unwrap_or_default();
    let value = rest.split([';', ',']).next().unwrap_or_default();
    let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    if value.is_empty() || value.trim() != value {
        return Err("the form's boundary is empty or padded with spaces, which frameworks read apart".into());
    }
    Ok(value.to_owned())
}

/// Whether a field's name is `_method` as a framework reads it:
/// percent-decoded, cut at a NUL (PHP), less leading spaces (Rack splits on
/// `& *`); then PHP's (`.`, ` `, `[` as `_`) or Rack 2's (brackets around
/// the name dropped) reading; case ignored (more readings, never fewer).
fn names_the_field(raw: &str) -> bool {
    let decoded = crate::percent::form_decoded(raw);
    let name = decoded.split('\0').next().unwrap_or_default().trim_start();
    let php: String = name.chars().map(|c| if matches!(c, '.' | ' ' | '[') { '_' } else { c }).collect();
    let unbracketed = name.trim_start_matches(['[', ']']);
    let key_end = unbracketed.find(['[', ']']).unwrap_or(unbracketed.len());
    let rack = unbracketed[key_end..].chars().all(|c| c == ']').then_some(&unbracketed[..key_end]);
    php.eq_ignore_ascii_case(FIELD) || rack.is_some_and(|key| key.eq_ignore_ascii_case(FIELD))
}

/// Whether `body` holds the field's name in some spelling.
fn mentions_the_field(body: &[u8]) -> bool {
    let lower = body.to_ascii_lowercase();
    ["_method", "%5fmethod", ".method", "%2emethod", " method", "+method", "[method"]
        .iter()
        .any(|name| memchr::memmem::find(&lower, name.as_bytes()).is_some())
}

/// Reads `body` ahead (at most [`READ_AHEAD_CAP`], within
/// [`READ_AHEAD_TIMEOUT`]) for the methods its `_method` fields ask for,
/// read each way in `forms`: the frames to send on in its place, and those
/// methods; `Err` with why it may not go.
pub(super) async fn read_methods<B>(
    forms: &[Form],
    body: &mut B,
) -> Result<(VecDeque<Frame<Bytes>>, Vec<String>), String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let read = tokio::time::timeout(READ_AHEAD_TIMEOUT, read_ahead(body, READ_AHEAD_CAP)).await;
    let (frames, data) =
        read.map_err(|_| format!("the form did not arrive within {} s", READ_AHEAD_TIMEOUT.as_secs()))??;
    let mut methods = Vec::new();
    for form in forms {
        methods.extend(form.methods_in(&data)?);
    }
    Ok((frames, methods))
}

/// Every `_method` value of an urlencoded body (or a query), however its
/// name is written; pairs split on `&` and `;`.
pub fn urlencoded_fields(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split(['&', ';'])
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| names_the_field(name))
        .map(|(_, value)| crate::percent::form_decoded(value))
        .collect()
}

/// The values of a multipart body's parts named `_method`; `Err` when the
/// body names the field but no part Airlock reads is it (frameworks' part
/// parsers differ at the edges: a head Airlock cuts short, odd line ends).
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Vec<String>, String> {
    let mut values = Vec::new();
    if !boundary.is_empty() {
        let delimiter = format!("--{boundary}");
        for part in split(body, delimiter.as_bytes()).skip(1) {
            let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&part[..head_end]);
            let named = head
                .lines()
                .filter_map(|line| line.split_once(':'))
                .filter(|(field, _)| field.trim().eq_ignore_ascii_case("content-disposition"))
                .flat_map(|(_, value)| value.split(';').skip(1).map(str::to_owned).collect::<Vec<_>>())
                .filter_map(|param| param.split_once('=').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
                .any(|(key, value)| key.eq_ignore_ascii_case("name") && names_the_field(value.trim_matches('"')));
            if named {
                let value = &part[head_end + 4..];
                values.push(String::from_utf8_lossy(value.strip_suffix(b"\r\n").unwrap_or(value)).into_owned());
            }
        }
    }
    if values.is_empty() && mentions_the_field(body) {
        return Err(format!("the form names {FIELD} where Airlock reads no field of that name"));
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

    fn forms(content_type: &'static str) -> Result<Vec<Form>, String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        Form::of(&Method::POST, &headers)
    }

    fn methods(forms: &[Form], body: &[u8]) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        for form in forms {
            all.extend(form.methods_in(body)?);
        }
        Ok(all)
    }

    #[test]
    fn posts_are_read_as_frameworks_read_their_type() {
        use Form::*;
        assert_eq!(forms("application/x-www-form-urlencoded; charset=utf-8"), Ok(vec![UrlEncoded]));
        assert_eq!(forms("application/x-www-form-urlencoded, x"), Ok(vec![UrlEncoded]));
        assert_eq!(forms("application/x-www-form-urlencoded; a=/json"), Ok(vec![UrlEncoded, Json]), "Laravel");
        assert_eq!(forms("Multipart/Form-Data; boundary=\"XyZ\""), Ok(vec![Multipart("XyZ".into())]));
        assert_eq!(forms("multipart/form-data; boundary=TA"), Ok(vec![Multipart("TA".into())]));
        assert_eq!(forms("multipart/mixed; boundary=b"), Ok(vec![Multipart("b".into())]));
        for ambiguous in ["multipart/form-data; boundary=a; boundary=b", "multipart/form-data; xboundary=a; boundary=b"]
        {
            assert!(forms(ambiguous).is_err(), "{ambiguous}");
        }
        assert!(forms("multipart/form-data; boundary= a").is_err());
        assert_eq!(forms("text/json"), Ok(vec![Json]));
        assert_eq!(forms("application/merge-patch+json"), Ok(vec![Json]));
        assert_eq!(forms("application/octet-stream"), Ok(vec![]));
        assert_eq!(Form::of(&Method::POST, &HeaderMap::new()), Ok(vec![UrlEncoded]), "Rack reads an untyped POST");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        assert_eq!(Form::of(&Method::PUT, &headers), Ok(vec![]), "frameworks read the field of a POST only");
        let lower_post = Method::from_bytes(b"post").unwrap();
        assert_eq!(Form::of(&lower_post, &headers), Ok(vec![UrlEncoded]), "Symfony upper-cases the method");
    }

    #[test]
    fn every_method_a_form_may_ask_for_is_read() {
        let urlencoded = [Form::UrlEncoded];
        assert_eq!(methods(&urlencoded, b"a=1&_method=delete").unwrap(), ["DELETE"]);
        assert_eq!(methods(&urlencoded, b"%5Fmethod=put&b=2").unwrap(), ["PUT"]);
        // Rack: the last of two wins, a key may follow `& `, brackets around it
        // are dropped; PHP: `.` and ` ` are `_`, a NUL ends the name.
        assert_eq!(methods(&urlencoded, b"_method=POST& _method=DELETE").unwrap(), ["POST", "DELETE"]);
        for name in ["[_method]", "_method]", ".method", "%2Emethod", "_method%00x", "_METHOD"] {
            let body = format!("x=1;{name}=patch");
            assert_eq!(methods(&urlencoded, body.as_bytes()).unwrap(), ["PATCH"], "{name}");
        }
        assert!(methods(&urlencoded, b"_method[]=DELETE&payment_method=card").unwrap().is_empty());
        assert!(methods(&urlencoded, b"name=x&note=find_method").unwrap().is_empty());
        assert_eq!(methods(&[Form::Json], br#"{"a":1,"_method":"delete"}"#).unwrap(), ["DELETE"]);
        assert!(methods(&[Form::Json], b"[1]").unwrap().is_empty());
        let deep = format!("{{\"_method\":\"DELETE\",\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
        assert!(methods(&[Form::Json], deep.as_bytes()).is_err(), "deeper than serde_json reads");

        let multipart = [Form::Multipart("B0undary".into())];
        let body = b"--B0undary\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
                     --B0undary\r\ncontent-disposition: form-data; name=_method\r\n\r\nPATCH\r\n--B0undary--\r\n";
        assert_eq!(methods(&multipart, body).unwrap(), ["PATCH"]);
        for odd in [
            &b"--B0undary\nContent-Disposition: form-data; name=\".method\"\n\nDELETE\n--B0undary--"[..],
            b"--B0undary\r\n\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--B0undary--",
            b"--TA\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--TA--",
        ] {
            assert!(methods(&multipart, odd).is_err(), "{}", String::from_utf8_lossy(odd));
        }
        assert!(methods(&[Form::Multipart(String::new())], b"name=\"_method\"").is_err());
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
