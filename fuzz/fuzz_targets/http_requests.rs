//! Arbitrary bytes from a client, served by the agent's own hyper server
//! (HTTP/1.1 or HTTP/2 by preface, the agent's head limits, upgrades
//! allowed), with every request hyper hands over read as the HTTPS proxy
//! reads it: the path as servers resolve it (rules match it) and, for
//! Kubernetes targets, the verb and resource under every method. No panic,
//! no hang, and what the proxy reads holds together:
//! - a resolved path starts with `/`, has no empty, `.` or `..` segment,
//!   and resolving it again changes nothing (when no escape is left in it);
//! - the Kubernetes reading names a namespace, resource and name that are
//!   single path segments (a `/` in one would let a rule be matched on a
//!   different object than the API server acts on).
#![no_main]

use std::convert::Infallible;

use airlock::{
    policy::https::normalized_path,
    proxy::https::{kubernetes::KubeRequest, server_builder},
};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn check(request: &Request<Incoming>) {
    let normalized = normalized_path(request.uri().path());
    assert!(normalized.starts_with('/'), "{normalized:?}");
    let inner = normalized.trim_start_matches('/').trim_end_matches('/');
    assert!(
        inner.is_empty() || inner.split('/').all(|s| !s.is_empty() && s != "." && s != ".."),
        "{normalized:?} from {:?}",
        request.uri().path()
    );
    if !normalized.contains('%') && !normalized.contains('\\') {
        assert_eq!(normalized_path(&normalized), normalized, "resolving twice");
    }
    for method in [request.method().clone(), Method::GET, Method::DELETE, Method::POST] {
        let kube = KubeRequest::read(&method, &normalized, request.uri().query());
        for part in [&kube.namespace, &kube.resource, &kube.name, &kube.subresource] {
            assert!(!part.contains('/'), "{kube:?}");
        }
        let _ = kube.resource_name();
    }
}

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
            check(&request);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let served = tokio::spawn(async move {
            let builder = server_builder();
            let _ = builder.serve_connection_with_upgrades(TokioIo::new(server), service).await;
        });
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer);
        // A connection the server keeps open (an HTTP/2 one waiting for
        // more, an upgrade) ends with the time limit, not the test.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), read).await;
        served.abort();
    });
});
