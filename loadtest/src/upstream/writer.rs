//! The writer of one bound connection: a task that owns the socket's write half and writes
//! what other connections (and its own reader) queue for it.
//!
//! Queuing is bounded ([`QUEUE_STANZAS`]), so a client that reads slowly makes its senders
//! wait instead of growing memory without limit. The writer is its own task so that a reader
//! queuing a reply to its own client never waits on itself: the writer drains the queue
//! whatever the reader is doing. Everything waiting when the writer wakes goes out in one
//! write (one syscall, one TLS record run) instead of one per stanza.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Stanzas queued for one connection before senders wait.
pub const QUEUE_STANZAS: usize = 256;

/// Most bytes gathered into one write.
const BATCH_BYTES: usize = 64 * 1024;

/// A write that makes no progress for this long ends the connection: a peer that stopped
/// reading must not hold its senders forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What a connection's writer is asked to do.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes.
    Data(Bytes),
    /// Write these bytes (a stream error, `</stream:stream>`), then close the connection.
    Close(Bytes),
}

/// The sending side of a connection's queue.
pub type Outbox = mpsc::Sender<Out>;

/// A new queue for one connection.
pub fn outbox() -> (Outbox, mpsc::Receiver<Out>) {
    mpsc::channel(QUEUE_STANZAS)
}

/// Writes what arrives on `queue` until told to close, every sender is gone, or a write fails.
/// `done` is dropped on return, which tells the connection's reader that the writer is gone.
pub async fn run<W: AsyncWrite + Unpin>(
    mut io: W,
    mut queue: mpsc::Receiver<Out>,
    done: oneshot::Sender<()>,
) {
    let _done = done;
    while let Some(first) = queue.recv().await {
        let (batch, close) = gather(first, &mut queue);
        let write = async {
            io.write_all(&batch).await?;
            io.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) if !close => {}
            Ok(Ok(())) => {
                // Whoever still sends finds the connection gone at once.
                queue.close();
                break;
            }
            Ok(Err(_)) | Err(_) => return,
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, io.shutdown()).await;
}

/// `first` and whatever else is already queued, up to [`BATCH_BYTES`]; true if a close was
/// among them (nothing after it is taken). A lone item is passed on without a copy.
fn gather(first: Out, queue: &mut mpsc::Receiver<Out>) -> (Bytes, bool) {
    let (first, close) = match first {
        Out::Data(data) => (data, false),
        Out::Close(data) => return (data, true),
    };
    let next = match queue.try_recv() {
        Ok(next) => next,
        Err(_) => return (first, false),
    };
    let mut batch = BytesMut::with_capacity((first.len() * 4).clamp(1024, BATCH_BYTES));
    batch.extend_from_slice(&first);
    let mut next = Some(next);
    while let Some(out) = next.take() {
        match out {
            Out::Data(data) => batch.extend_from_slice(&data),
            Out::Close(data) => {
                batch.extend_from_slice(&data);
                return (batch.freeze(), true);
            }
        }
        if batch.len() < BATCH_BYTES {
            next = queue.try_recv().ok();
        }
    }
    (batch.freeze(), close)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_stanzas_go_out_in_one_batch_and_close_ends_it() {
        let (tx, mut rx) = outbox();
        for part in ["<a/>", "<b/>"] {
            tx.send(Out::Data(Bytes::from_static(part.as_bytes())))
                .await
                .unwrap();
        }
        tx.send(Out::Close(Bytes::from_static(b"</stream:stream>")))
            .await
            .unwrap();
        tx.send(Out::Data(Bytes::from_static(b"<late/>")))
            .await
            .unwrap();
        let first = rx.recv().await.unwrap();
        let (batch, close) = gather(first, &mut rx);
        assert_eq!(&batch[..], b"<a/><b/></stream:stream>");
        assert!(close);
    }

    #[tokio::test]
    async fn the_writer_stops_when_told_to_close_and_says_so() {
        let (tx, rx) = outbox();
        let (done_tx, done_rx) = oneshot::channel();
        let (client, mut server_side) = tokio::io::duplex(1024);
        let writer = tokio::spawn(run(client, rx, done_tx));
        tx.send(Out::Data(Bytes::from_static(b"<a/>")))
            .await
            .unwrap();
        tx.send(Out::Close(Bytes::from_static(b"</x>")))
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(done_rx.await.is_err(), "done is dropped, not sent");
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server_side, &mut got)
            .await
            .unwrap();
        assert_eq!(got, b"<a/></x>");
    }
}
