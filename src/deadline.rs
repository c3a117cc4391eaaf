//! A deadline on every write to a peer (docs/protocol.md §7): a socket wrapped in [`Deadline`]
//! fails a write, flush or shutdown that has made no progress for the configured time with
//! `TimedOut`, instead of waiting forever on a peer that stopped reading.
//!
//! Every socket of the gateway is wrapped once, where it is made: browser connections when
//! they are accepted (so hyper's writes, WebSocket frames, pings, pongs, closes and stream
//! errors alike), server connections when they are dialled (so TLS records and plain writes
//! alike). Reads pass through untouched: how long a peer may stay silent is the business of
//! each protocol's own timers.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A byte stream whose writes fail after `timeout` without progress.
#[derive(Debug)]
pub struct Deadline<T> {
    inner: T,
    timeout: Duration,
    /// Running while a write waits; allocated only then, so an idle socket costs nothing.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadline<T> {
    /// Wraps `inner`; each write may wait at most `timeout` for the peer to take bytes.
    pub fn new(inner: T, timeout: Duration) -> Self {
        Deadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped stream, mutably (reads and writes through it have no deadline).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Passes on the outcome of a write attempt: progress clears the deadline, waiting starts
    /// it (or finds it passed).
    fn track<R>(
        &mut self,
        cx: &mut Context<'_>,
        attempt: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if attempt.is_ready() {
            self.stalled = None;
            return attempt;
        }
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(timed_out()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The error of a write that waited too long.
pub fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "peer took no bytes within the write deadline",
    )
}

/// Whether an error is a write deadline passing (see [`timed_out`]).
pub fn is_timed_out(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::TimedOut
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(cx, attempt)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(cx, attempt)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, attempt)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let attempt = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(cx, attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_takes_fails_after_the_timeout() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut ours = Deadline::new(ours, TIMEOUT);
        let started = tokio::time::Instant::now();
        let err = ours.write_all(&[b'x'; 1000]).await.unwrap_err();
        assert!(is_timed_out(&err), "{err}");
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_taking_bytes_is_not_cut() {
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut ours = Deadline::new(ours, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                // Slower than the writer, but never TIMEOUT without taking a byte.
                tokio::time::sleep(TIMEOUT / 2).await;
                match theirs.read(&mut buf).await.unwrap() {
                    0 => return got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let data = vec![b'y'; 256];
        ours.write_all(&data)
            .await
            .expect("progress keeps the write alive");
        ours.shutdown().await.unwrap();
        drop(ours);
        assert_eq!(reader.await.unwrap(), data);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_socket_holds_no_timer() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut ours = Deadline::new(ours, TIMEOUT);
        ours.write_all(b"fits").await.unwrap();
        assert!(ours.stalled.is_none());
    }
}
