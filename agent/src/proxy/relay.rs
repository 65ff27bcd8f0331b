//! Byte relay between two TCP sockets, through kernel pipes with splice(2):
//! payload moves socket → pipe → socket inside the kernel and is never copied
//! into userspace. Used for targets without a protocol proxy.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

use nix::{
    fcntl::{SpliceFFlags, splice},
    sys::socket::{Shutdown, shutdown},
    unistd::pipe2,
};
use tokio::{io::Interest, net::TcpStream};

/// Most bytes moved by one splice call: the default pipe capacity.
const CHUNK: usize = 64 * 1024;

/// Byte counters of a relayed connection, readable while it runs.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Client → upstream.
    pub to_upstream: AtomicU64,
    /// Upstream → client.
    pub to_client: AtomicU64,
}

/// Relays until both directions have seen end of stream, or either fails.
/// Half-close is passed on: EOF from one side becomes a write shutdown
/// toward the other, so request/response protocols that close their sending
/// side first still get their answer.
pub async fn relay(client: &TcpStream, upstream: &TcpStream, counters: &ByteCounters) -> io::Result<()> {
    tokio::try_join!(pump(client, upstream, &counters.to_upstream), pump(upstream, client, &counters.to_client),)?;
    Ok(())
}

/// One direction: splice `from` → pipe → `to` until EOF.
async fn pump(from: &TcpStream, to: &TcpStream, counter: &AtomicU64) -> io::Result<()> {
    let (pipe_out, pipe_in) = pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let filled = splice_when_ready(from, Interest::READABLE, || {
            splice(from.as_fd(), None, pipe_in.as_fd(), None, CHUNK, flags)
        })
        .await?;
        if filled == 0 {
            // Already-closed peers make shutdown fail with ENOTCONN; nothing is lost.
            let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
            return Ok(());
        }
        drain(&pipe_out, to, filled, flags).await?;
        counter.fetch_add(filled as u64, Ordering::Relaxed);
    }
}

/// Moves exactly `len` bytes from the pipe to `to`. The pipe was empty before
/// it was filled, so everything in it belongs to this chunk.
async fn drain(pipe_out: &OwnedFd, to: &TcpStream, mut len: usize, flags: SpliceFFlags) -> io::Result<()> {
    while len > 0 {
        let moved =
            splice_when_ready(to, Interest::WRITABLE, || splice(pipe_out.as_fd(), None, to.as_fd(), None, len, flags))
                .await?;
        if moved == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "peer stopped accepting data"));
        }
        len -= moved;
    }
    Ok(())
}

/// Waits for readiness and runs a non-blocking splice, letting tokio clear the
/// readiness when the kernel says EAGAIN.
async fn splice_when_ready(
    stream: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> nix::Result<usize>,
) -> io::Result<usize> {
    loop {
        stream.ready(interest).await?;
        match stream.try_io(interest, || op().map_err(io::Error::from)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    /// A relay between two loopback socket pairs; returns the far ends.
    async fn relayed() -> (TcpStream, TcpStream, tokio::task::JoinHandle<(io::Result<()>, ByteCounters)>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client_far = TcpStream::connect(addr).await.unwrap();
        let (client_near, _) = listener.accept().await.unwrap();
        let upstream_near = TcpStream::connect(addr).await.unwrap();
        let (upstream_far, _) = listener.accept().await.unwrap();
        let task = tokio::spawn(async move {
            let counters = ByteCounters::default();
            let result = relay(&client_near, &upstream_near, &counters).await;
            (result, counters)
        });
        (client_far, upstream_far, task)
    }

    #[tokio::test]
    async fn relays_both_ways_with_half_close_and_counts() {
        let (client, mut upstream, task) = relayed().await;
        // More than a pipe's worth, so drain and refill both run many times.
        let request: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let to_send = request.clone();
            let (mut read_half, mut write_half) = client.into_split();
            let send = tokio::spawn(async move {
                write_half.write_all(&to_send).await.unwrap();
                write_half.shutdown().await.unwrap();
                write_half
            });
            let mut received = Vec::new();
            let mut received_request = Vec::new();
            upstream.read_to_end(&mut received_request).await.unwrap();
            assert_eq!(received_request, request);
            upstream.write_all(b"done").await.unwrap();
            drop(upstream);
            read_half.read_to_end(&mut received).await.unwrap();
            assert_eq!(received, b"done");
            send
        };
        writer.await.unwrap();
        let (result, counters) = task.await.unwrap();
        result.unwrap();
        assert_eq!(counters.to_upstream.load(Ordering::Relaxed), 3_000_000);
        assert_eq!(counters.to_client.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn reset_by_one_side_ends_the_relay() {
        let (client, upstream, task) = relayed().await;
        upstream.set_zero_linger().unwrap();
        drop(upstream);
        let (result, _) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
            .await
            .expect("relay ends when a side resets")
            .unwrap();
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        let mut client = client;
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0, "client sees the end");
    }
}
