//! A TCP stream that counts the bytes it carries, below TLS: what the uplink carries for the
//! producer (records, retries, probes, handshakes, TLS records; not the TCP/IP headers), for
//! `edge_kafka_wire_bytes_total` on a metered link.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes written to and read from every connection of one producer.
#[derive(Debug, Default)]
pub struct WireBytes {
    /// Written to Kafka sockets.
    pub sent: AtomicU64,
    /// Read from Kafka sockets.
    pub received: AtomicU64,
}

/// `inner`, counting into `bytes`.
pub(crate) struct Counted<S> {
    inner: S,
    bytes: Arc<WireBytes>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, bytes: Arc<WireBytes>) -> Self {
        Self { inner, bytes }
    }

    fn sent(&self, result: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = result {
            self.bytes.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            let n = buf.filled().len().saturating_sub(before);
            self.bytes.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.sent(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.sent(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Every byte each way is counted once, plain and vectored writes alike.
    #[tokio::test]
    async fn counts_what_goes_each_way() {
        let (near, mut far) = tokio::io::duplex(64);
        let bytes = Arc::new(WireBytes::default());
        let mut counted = Counted::new(near, Arc::clone(&bytes));
        counted.write_all(b"hello").await.unwrap();
        let slices = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cde")];
        let n = counted.write_vectored(&slices).await.unwrap();
        far.write_all(b"0123456789").await.unwrap();
        let mut got = [0u8; 10];
        counted.read_exact(&mut got).await.unwrap();
        assert_eq!(bytes.sent.load(Ordering::Relaxed), 5 + n as u64);
        assert_eq!(bytes.received.load(Ordering::Relaxed), 10);
        let mut seen = vec![0u8; 5 + n];
        far.read_exact(&mut seen).await.unwrap();
        assert_eq!(&seen[..5], b"hello");
    }
}
