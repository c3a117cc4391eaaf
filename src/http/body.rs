//! Reading a request body into one bounded buffer within one deadline, for any handler that
//! needs the whole body (docs/protocol.md §7: "a body is one bounded buffer, however it is
//! chunked"; "every wait on a peer has a deadline").
//!
//! Collecting the frames as they come would keep one buffer per frame, each pinning a piece of
//! hyper's read buffer: a million 1-byte chunks cost far more than a megabyte. Here every frame
//! is copied into a single `BytesMut` and dropped at once, and that buffer never grows past the
//! limit.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use hyper::body::Body as HttpBody;

use super::{text, Body};

/// The first allocation for a body of unknown length; it doubles from there up to the limit.
const INITIAL_CAPACITY: usize = 4 * 1024;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyReadError {
    /// The body (or its announced `Content-Length`) is larger than the limit.
    #[error("request body over the limit")]
    TooLarge,
    /// The whole body did not arrive within the deadline.
    #[error("request body not received in time")]
    Timeout,
    /// The connection failed or the peer reset the stream before the end of the body.
    #[error("request body broken off")]
    Broken,
}

impl BodyReadError {
    /// The HTTP answer: 413, or 408 with `Connection: close` (hyper then closes an HTTP/1.1
    /// connection once the answer is written instead of waiting for the rest of the body; on
    /// HTTP/2 only the stream ends), or 400.
    pub fn response(&self) -> Response<Body> {
        match self {
            Self::TooLarge => text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"),
            Self::Timeout => {
                let mut r = text(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body not received in time\n",
                );
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            }
            Self::Broken => text(StatusCode::BAD_REQUEST, "request body broken off\n"),
        }
    }

    /// The `reason` label of `input_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Timeout => "body_timeout",
            Self::Broken => "body_broken",
        }
    }
}

/// Reads all of `body` into one buffer of at most `limit` bytes' capacity, within `deadline`.
/// A body announced larger than `limit` (`Content-Length`) is refused before anything is read.
pub async fn read_bounded<B>(
    body: B,
    limit: usize,
    deadline: Duration,
) -> Result<BytesMut, BodyReadError>
where
    B: HttpBody,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyReadError::TooLarge);
    }
    tokio::time::timeout(deadline, collect_into_one_buffer(body, limit))
        .await
        .map_err(|_| BodyReadError::Timeout)?
}

async fn collect_into_one_buffer<B>(body: B, limit: usize) -> Result<BytesMut, BodyReadError>
where
    B: HttpBody,
{
    use http_body_util::BodyExt;

    let announced = body.size_hint().exact().map(|n| n as usize);
    let mut buf = BytesMut::with_capacity(announced.unwrap_or(INITIAL_CAPACITY).min(limit));
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyReadError::Broken)?;
        // Trailers carry nothing a handler reads.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let needed = buf.len() + data.remaining();
        if needed > limit {
            return Err(BodyReadError::TooLarge);
        }
        if needed > buf.capacity() {
            grow_within(&mut buf, needed, limit);
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            let n = chunk.len();
            buf.put_slice(chunk);
            data.advance(n);
        }
    }
    Ok(buf)
}

/// Moves `buf` into an allocation of at least `needed` bytes: double the current capacity,
/// never more than `limit`. `BytesMut::reserve` may round a request up past the limit, so the
/// new buffer is sized here.
fn grow_within(buf: &mut BytesMut, needed: usize, limit: usize) {
    let capacity = needed.max(buf.capacity() * 2).min(limit);
    let mut bigger = BytesMut::with_capacity(capacity);
    bigger.put_slice(buf);
    *buf = bigger;
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::{Frame, SizeHint};

    use super::*;

    /// A body of `remaining` 1-byte frames, announcing `hint` as its size.
    struct TinyFrames {
        remaining: usize,
        hint: SizeHint,
    }

    impl TinyFrames {
        fn new(frames: usize) -> Self {
            Self {
                remaining: frames,
                hint: SizeHint::default(),
            }
        }
    }

    impl HttpBody for TinyFrames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.remaining == 0 {
                return Poll::Ready(None);
            }
            self.remaining -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }

        fn size_hint(&self) -> SizeHint {
            self.hint
        }
    }

    /// A body that announces a length and never sends a byte of it.
    struct Silent(u64);

    impl HttpBody for Silent {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }

    const LIMIT: usize = 1024 * 1024;
    const LONG: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_million_one_byte_frames_end_in_one_buffer_within_the_limit() {
        let frames = 1_000_000;
        let buf = read_bounded(TinyFrames::new(frames), LIMIT, LONG)
            .await
            .expect("under the limit");
        assert_eq!(buf.len(), frames);
        assert!(buf.iter().all(|&b| b == b'x'));
        assert!(
            buf.capacity() <= LIMIT,
            "capacity {} over the limit",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn capacity_never_passes_the_limit_even_when_doubling_would() {
        // 4 KiB doubled reaches 512 KiB, whose double is past a limit of 1,000,000 bytes: the
        // last growth stops at the limit.
        let limit = 1_000_000;
        let frames = limit - 1;
        let buf = read_bounded(TinyFrames::new(frames), limit, LONG)
            .await
            .expect("under the limit");
        assert_eq!(buf.len(), frames);
        assert_eq!(buf.capacity(), limit);
    }

    #[tokio::test]
    async fn a_body_of_exactly_the_limit_is_accepted() {
        let buf = read_bounded(TinyFrames::new(4096), 4096, LONG).await;
        assert_eq!(buf.map(|b| b.len()), Ok(4096));
    }

    #[tokio::test]
    async fn many_tiny_frames_over_the_limit_are_too_large() {
        let read = read_bounded(TinyFrames::new(4097), 4096, LONG).await;
        assert_eq!(read.err(), Some(BodyReadError::TooLarge));
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_refused_before_reading() {
        // Silent never yields: only the announced length can answer this.
        let read = read_bounded(Silent(4097), 4096, LONG).await;
        assert_eq!(read.err(), Some(BodyReadError::TooLarge));
    }

    #[tokio::test]
    async fn an_announced_length_sizes_the_buffer_once() {
        let mut body = TinyFrames::new(3000);
        body.hint = SizeHint::with_exact(3000);
        let buf = read_bounded(body, LIMIT, LONG).await.expect("read");
        assert_eq!((buf.len(), buf.capacity()), (3000, 3000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_times_out_at_the_deadline() {
        let started = tokio::time::Instant::now();
        let read = read_bounded(Silent(10), 4096, Duration::from_secs(30)).await;
        assert_eq!(read.err(), Some(BodyReadError::Timeout));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
