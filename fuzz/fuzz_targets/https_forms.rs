//! `_method` readers on arbitrary forms: a content type (the first line
//! of the input) and a body (the rest). No panic, and no way past them:
//! - a urlencoded body (or query) with `&_method=VALUE` appended is read as
//!   asking for VALUE, whatever came before;
//! - a body read as multipart that spells the field's name either yields
//!   a method or is refused, never read as asking for none;
//! - a refusal says why.
#![no_main]

use airlock::proxy::https::form_method::{Form, urlencoded_fields};
use hyper::{HeaderMap, Method, header, header::HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(line_end) = data.iter().position(|&b| b == b'\n') else { return };
    let (content_type, body) = (&data[..line_end], &data[line_end + 1..]);

    let mut appended = body.to_vec();
    appended.extend_from_slice(b"&_method=FUZZ");
    assert!(urlencoded_fields(&appended).iter().any(|m| m == "FUZZ"), "an appended _method went unread");

    let Ok(value) = HeaderValue::from_bytes(content_type) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, value);
    let Ok(forms) = Form::of(&Method::POST, &headers) else { return };
    for form in forms {
        match form.methods_in(body) {
            Ok(methods) => {
                let spelled = body.windows(7).any(|w| w.eq_ignore_ascii_case(b"_method"));
                if spelled && matches!(form, Form::Multipart(_)) {
                    assert!(!methods.is_empty(), "a multipart body naming _method was read as asking for nothing");
                }
            }
            Err(why) => assert!(!why.is_empty()),
        }
    }
});
