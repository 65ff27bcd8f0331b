//! systemd readiness notification (`Type=notify`): one datagram to
//! `$NOTIFY_SOCKET`. Without that variable (not started by systemd) these
//! do nothing.

use std::os::unix::net::UnixDatagram;

/// Tells systemd the agent is ready: programs attached, listeners bound.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\nMAINPID={}", std::process::id()));
}

/// Tells systemd a reload is under way (followed by [`ready`] when done).
pub fn reloading() {
    send("RELOADING=1");
}

/// Tells systemd the agent is stopping.
pub fn stopping() {
    send("STOPPING=1");
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // Abstract namespace socket.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)
            }
            None => socket.send_to(message.as_bytes(), &path),
        }
    });
    if let Err(error) = result {
        tracing::warn!(%error, "could not notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this is the only test in the crate touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        ready("testing");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("READY=1\nSTATUS=testing\nMAINPID="), "{text}");
    }
}
