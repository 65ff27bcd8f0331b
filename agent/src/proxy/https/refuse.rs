//! Telling a refused HTTP client why: its requests are answered with an
//! HTTP status and the reason (JSON when it accepts JSON), after the TLS
//! handshake for HTTPS, so curl, kubectl and SDKs show it instead of a reset.

use std::{sync::Arc, time::Duration};

use hyper::StatusCode;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::forward::{Said, answer};

/// How long a refused client is answered before the connection is closed.
const REFUSAL_TIME: Duration = Duration::from_secs(10);

/// What a refused client is told.
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Why.
    pub message: String,
    /// What to do about it.
    pub hint: String,
    /// Said as a Kubernetes `Status` object.
    pub kubernetes: bool,
}

/// Answers the requests on `client` with `said`.
pub async fn refuse(client: TcpStream, tls: Option<TlsAcceptor>, said: Refusal) {
    let status = StatusCode::from_u16(said.status).unwrap_or(StatusCode::FORBIDDEN);
    let said = Arc::new(said);
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let said = Arc::clone(&said);
        async move {
            let style = Said::to(&request, said.kubernetes);
            Ok::<_, std::convert::Infallible>(answer(style, status, &said.message, &said.hint))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(false);
    let answered = async {
        match tls {
            Some(acceptor) => {
                let Ok(stream) = acceptor.accept(client).await else { return };
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            }
            None => {
                let _ = builder.serve_connection(TokioIo::new(client), service).await;
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answered).await;
}
