//! The accepted TCP connection, with the writes of one flush sent in one system call.
//!
//! h2 (under hyper and tonic) copies a DATA frame into its 16 KiB write buffer only when the
//! frame is small (256 bytes with vectored I/O, 1024 without); a bigger frame is written on its
//! own, followed by a flush. An event fanned out to many streams of one connection is one frame
//! per stream (a `WatchJob` event is a few hundred bytes), so frames that could share a write
//! were each a `writev` and a TCP segment.
//!
//! `BatchedSocket` says it has no vectored writes, so h2 buffers frames up to 1 KiB itself, and
//! collects small writes until h2 flushes (or `MAX_BATCH` is reached), so frames and headers
//! written one by one go out together. A write of `DIRECT` bytes or more (a download's frame, a
//! full h2 buffer) is not copied: it goes out at once, in one `writev` with whatever waits before
//! it. The batch is allocated while data waits and released once sent, so an idle connection
//! holds no buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes collected before they are written without waiting for a flush.
const MAX_BATCH: usize = 64 * 1024;
/// Writes this big are not copied: they go out at once, with whatever waits before them.
const DIRECT: usize = 4 * 1024;

/// See the module's doc.
pub struct BatchedSocket {
    inner: TcpStream,
    /// Written by the caller, not yet to the socket; `sent` of them are already on the socket.
    batch: Vec<u8>,
    sent: usize,
}

impl BatchedSocket {
    pub fn new(inner: TcpStream) -> BatchedSocket {
        BatchedSocket {
            inner,
            batch: Vec::new(),
            sent: 0,
        }
    }

    /// Writes the whole batch to the socket, then releases it.
    fn poll_send_batch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.batch.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.batch[self.sent..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.sent += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.batch = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for BatchedSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BatchedSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if data.len() < DIRECT {
            if this.batch.len() + data.len() > MAX_BATCH {
                ready!(this.poll_send_batch(cx))?;
            }
            this.batch.extend_from_slice(data);
            return Poll::Ready(Ok(data.len()));
        }
        // A big write (a download's frame, a full h2 buffer) leaves with what waits, uncopied.
        loop {
            let waiting = &this.batch[this.sent..];
            if waiting.is_empty() {
                this.batch = Vec::new();
                this.sent = 0;
                return Pin::new(&mut this.inner).poll_write(cx, data);
            }
            let slices = [io::IoSlice::new(waiting), io::IoSlice::new(data)];
            let waited = waiting.len();
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n <= waited {
                this.sent += n;
                continue;
            }
            this.batch = Vec::new();
            this.sent = 0;
            return Poll::Ready(Ok(n - waited));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_batch(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_batch(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    /// No: see the module's doc (h2 then buffers frames up to 1 KiB instead of 256 bytes).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (BatchedSocket, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (BatchedSocket::new(accepted.unwrap().0), client.unwrap())
    }

    /// Small writes wait for the flush; medium writes leave with what waits before them; a write
    /// bigger than the socket's buffer goes out in parts; everything arrives whole and in order,
    /// and the batch is released once sent.
    #[tokio::test]
    async fn writes_arrive_in_order() {
        let (mut socket, mut client) = pair().await;
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let pattern = |n: usize, k: usize| -> Vec<u8> { (0..n).map(|i| (i * k) as u8).collect() };
        let mut expected = Vec::new();
        for (i, n) in [300, 9, DIRECT, 300, MAX_BATCH + 10, 5, 4 << 20, 7]
            .into_iter()
            .enumerate()
        {
            let data = pattern(n, i + 1);
            socket.write_all(&data).await.unwrap();
            expected.extend_from_slice(&data);
            if n < DIRECT {
                assert!(
                    !socket.batch.is_empty(),
                    "a small write waits for the flush"
                );
            }
        }
        socket.flush().await.unwrap();
        assert_eq!(socket.batch.capacity(), 0, "the batch is released");
        socket.shutdown().await.unwrap();
        let received = reader.await.unwrap();
        assert_eq!(received.len(), expected.len());
        assert!(received == expected, "bytes arrive in order");
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (mut socket, mut client) = pair().await;
        client.write_all(b"hello").await.unwrap();
        let mut got = [0_u8; 5];
        socket.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert!(!socket.is_write_vectored());
    }
}
