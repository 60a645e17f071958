//! The accept loop both front ends share: bounded connections, one task per connection, and a
//! drain that waits for every connection task at shutdown. Connections are served through
//! one [`Stream`] (MQTT) or [`ReadHalf`]/[`WriteHalf`] (NATS) so plain TCP and TLS look the
//! same to a protocol, and size their read buffers by one policy ([`ReadBuffer`]). A plain TCP
//! connection can wait for bytes without polling a read ([`ClientRead::poll_read_ready`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Pending};

/// The reading side of a client connection (plain TCP, TLS, or a WebSocket's pipe).
pub type ReadHalf = Box<dyn ClientRead>;

/// A client connection's reading side, which may be able to say that bytes arrived before a
/// buffer is handed to a read.
pub trait ClientRead: AsyncRead + Send + Unpin {
    /// Ready once a read may find bytes (or the end, or an error; readiness can be stale: a
    /// read may still find nothing). Plain TCP waits on the socket's readiness, so a quiet
    /// connection polled for something else takes no buffer for a read that would find
    /// nothing; other streams (TLS, the WebSocket and test pipes) are always ready.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Whether this is a plain TCP connection ([`ClientRead::into_tcp`] gives its socket).
    fn is_tcp(&self) -> bool {
        false
    }

    /// The plain TCP connection's socket (`None` for any other stream, which is dropped:
    /// ask [`ClientRead::is_tcp`] first).
    fn into_tcp(self: Box<Self>) -> Option<TcpStream> {
        None
    }
}

impl ClientRead for tokio::net::tcp::OwnedReadHalf {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let stream: &TcpStream = self.as_ref();
        stream.poll_read_ready(cx)
    }
}

/// TLS streams, and the in-memory pipes of WebSocket connections and tests.
impl<T: AsyncRead + Send> ClientRead for tokio::io::ReadHalf<T> {}

impl ClientRead for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }

    fn is_tcp(&self) -> bool {
        true
    }

    fn into_tcp(self: Box<Self>) -> Option<TcpStream> {
        Some(*self)
    }
}

/// The stream of a connection whose socket is elsewhere (a parked MQTT connection's is in its
/// session): reads and writes fail with `NotConnected`. Zero-sized, so its box allocates
/// nothing.
pub struct Unplugged;

impl Unplugged {
    fn error() -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            "the socket is not attached",
        )
    }
}

impl AsyncRead for Unplugged {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(Unplugged::error()))
    }
}

impl AsyncWrite for Unplugged {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(Unplugged::error()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Err(Unplugged::error()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl ClientRead for Unplugged {}

impl ClientRead for tokio_rustls::server::TlsStream<TcpStream> {}

/// The in-memory pipes of WebSocket connections and tests.
impl ClientRead for tokio::io::DuplexStream {}

impl<R: ClientRead + ?Sized> ClientRead for Box<R> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        (**self).poll_read_ready(cx)
    }

    fn is_tcp(&self) -> bool {
        (**self).is_tcp()
    }

    fn into_tcp(self: Box<Self>) -> Option<TcpStream> {
        (*self).into_tcp()
    }
}

/// A client connection, both ways.
pub trait ClientStream: ClientRead + AsyncWrite {}

impl<T: ClientRead + AsyncWrite> ClientStream for T {}

/// A client connection as one stream (plain TCP, TLS, or a WebSocket's pipe), for a protocol
/// that polls its reads and writes from one place: one box, where two halves take an `Arc`
/// of the stream and a box each (~130 bytes of every plain TCP connection).
pub type Stream = Box<dyn ClientStream>;

/// The writing side of a client connection (plain TCP or TLS).
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Limits what the kernel holds unsent for every connection `listener` accepts (they inherit
/// it) to about `bytes` (`TCP_NOTSENT_LOWAT`: a write past it waits, as if the send buffer
/// were full). Without it, a client that stops reading lets the kernel's autotuning grow the
/// send buffer to `net.ipv4.tcp_wmem`'s maximum (4 MiB): 500 stalled subscribers once held
/// 772 MB of kernel memory, charged to the unit's cgroup and seen in no RSS. Bytes in flight
/// to a client that reads are not limited (its window bounds them), so a fast subscriber keeps
/// its throughput; bounding the whole buffer instead (`SO_SNDBUF`) below twice loopback's
/// 64 KiB segment cut a local subscriber to 8,400 messages/s (BENCHMARKS.md, "Kernel send
/// buffers").
pub fn limit_unsent(listener: &tokio::net::TcpListener, bytes: u64) -> std::io::Result<()> {
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    socket2::SockRef::from(listener).set_tcp_notsent_lowat(bytes)
}

/// Fixes the kernel's receive buffer of every connection `listener` accepts (they inherit it,
/// from their first byte, before login) at `bytes` as `ss` shows it: the kernel is asked for
/// half and doubles it for its bookkeeping. Returns the size the kernel granted, which
/// `net.core.rmem_max` may cap. Without it, the kernel's autotuning grows the buffer of a
/// client that sends faster than the broker reads towards `net.ipv4.tcp_rmem`'s maximum, and
/// all of it waits there while the broker does not read (before login, while paused): four
/// fast publishers held by a stalled subscriber queued 600–850 KB each within seconds. The
/// window scale follows the fixed buffer, so the buffer is the connection's for its lifetime
/// (BENCHMARKS.md, "Kernel receive buffers").
pub fn fix_receive_buffer(listener: &tokio::net::TcpListener, bytes: u64) -> std::io::Result<u64> {
    let socket = socket2::SockRef::from(listener);
    let half = usize::try_from(bytes / 2).unwrap_or(usize::MAX);
    socket.set_recv_buffer_size(half)?;
    Ok(socket.recv_buffer_size()? as u64)
}

/// Splits a plain TCP connection (with Nagle off: protocol messages are small).
pub fn plain(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.into_split();
    (Box::new(reader), Box::new(writer))
}

/// A plain TCP connection as one [`Stream`] (with Nagle off: protocol messages are small).
pub fn plain_stream(stream: TcpStream) -> Stream {
    let _ = stream.set_nodelay(true);
    Box::new(stream)
}

/// Runs the TLS handshake on a new connection within `deadline`, then splits it.
pub async fn tls(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> std::io::Result<(ReadHalf, WriteHalf)> {
    let stream = tls_handshake(acceptor, stream, deadline).await?;
    let (reader, writer) = tokio::io::split(stream);
    Ok((Box::new(reader), Box::new(writer)))
}

/// Runs the TLS handshake on a new connection within `deadline`: one [`Stream`], and the
/// client's (verified) certificate, if it presented one.
pub async fn tls_with_peer(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> std::io::Result<(Stream, Option<rustls_pki_types::CertificateDer<'static>>)> {
    let stream = tls_handshake(acceptor, stream, deadline).await?;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.clone().into_owned());
    Ok((Box::new(stream), peer))
}

async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let _ = stream.set_nodelay(true);
    tokio::time::timeout(deadline, acceptor.accept(stream))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {deadline:?}"),
            )
        })?
}

/// Accepts connections until `shutdown`, spawning `serve` for each on `tasks`, then closes the
/// listener and waits for every connection task to finish.
///
/// Each connection gets a [`Pending`] ticket of `admission` (shared by listeners that count
/// towards one limit) and trades it for a seat once it logs in; a connection `admission`
/// refuses is closed at once, before anything is read from it (counted in the admission's
/// refusals).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    admission: Arc<Admission>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr, Pending) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("{protocol} listener: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match admission.arrive(peer.ip()) {
            Ok(pending) => {
                tasks.spawn(serve(stream, peer, pending));
            }
            Err(refusal) => {
                tracing::debug!(%peer, "{protocol}: connection refused: {refusal}");
                drop(stream);
            }
        }
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// How a connection sizes its read buffer: a quiet client (most gateway clients, most of the
/// time) keeps `initial` bytes; one sending bursts reads `chunk`s (a whole client write is then
/// one batch for the log), and gives the big buffer back once it is quiet again and drained.
#[derive(Debug, Clone, Copy)]
pub struct ReadBuffer {
    /// The buffer of a new or quiet connection.
    pub initial: usize,
    /// Room made before each read while the client sends bursts.
    pub chunk: usize,
}

/// A quiet connection's buffer is topped up when less room than this is left.
const MIN_READ_ROOM: usize = 64;

impl ReadBuffer {
    /// Whether a read of `n` bytes into `room` bytes of room was part of a burst: it filled
    /// the room, or was not small.
    pub fn is_burst(&self, n: usize, room: usize) -> bool {
        n >= room || n >= self.initial
    }

    /// Sizes `buf` before a read, `burst` being what [`ReadBuffer::is_burst`] said of the last
    /// one. (Payloads decoded earlier may still share the old buffer: growing allocates.)
    pub fn prepare(&self, buf: &mut bytes::BytesMut, burst: bool) {
        let room = buf.capacity() - buf.len();
        if burst {
            if room < self.chunk / 4 {
                buf.reserve(self.chunk);
            }
        } else if buf.is_empty() && buf.capacity() > 4 * self.initial {
            *buf = bytes::BytesMut::with_capacity(self.initial);
        } else if room < MIN_READ_ROOM {
            buf.reserve(self.initial);
        }
    }
}

/// Reads what the client sent into `buf`, returning the bytes read and the room there was.
///
/// An empty, unallocated `buf` (a quiet connection) waits without a buffer: once the stream
/// says bytes may be there ([`ClientRead`]: plain TCP waits for the socket's
/// readiness, other streams are always ready), a small one (`policy`'s initial size) is taken for the
/// read, and given back if the read found nothing. (On `Pending` a stream has put nothing into
/// the buffer, plain TCP, TLS or WebSocket alike.)
pub fn read_some<'a, R: ClientRead + ?Sized>(
    reader: &'a mut R,
    buf: &'a mut bytes::BytesMut,
    policy: &'a ReadBuffer,
    burst: bool,
) -> impl Future<Output = std::io::Result<(usize, usize)>> + 'a {
    // Not an `async fn`: it would keep its arguments beside the closure's copies of them,
    // in every waiting connection's task.
    std::future::poll_fn(move |cx| poll_read_some(reader, buf, policy, burst, cx))
}

/// [`read_some`] as a poll function, for a connection that polls its waits itself.
pub fn poll_read_some<R: ClientRead + ?Sized>(
    reader: &mut R,
    buf: &mut bytes::BytesMut,
    policy: &ReadBuffer,
    burst: bool,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<(usize, usize)>> {
    let unbuffered = buf.capacity() == 0;
    if unbuffered {
        std::task::ready!(reader.poll_read_ready(cx))?;
        policy.prepare(buf, burst);
    }
    let room = buf.capacity() - buf.len();
    match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *reader), cx, buf) {
        Poll::Ready(read) => Poll::Ready(read.map(|n| (n, room))),
        Poll::Pending => {
            if unbuffered && buf.is_empty() {
                *buf = bytes::BytesMut::new();
            }
            Poll::Pending
        }
    }
}

/// Writes what is left in `out` and shuts the socket down, giving up after `deadline` (a client
/// that stopped reading must not hold a closing connection open).
pub async fn flush_and_close<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut bytes::BytesMut,
    deadline: Duration,
) {
    use tokio::io::AsyncWriteExt;
    let flush = async {
        while !out.is_empty() {
            if writer.write_buf(out).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    };
    let _ = tokio::time::timeout(deadline, flush).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{ClientRead, ReadBuffer, ReadHalf, Stream, read_some};
    use bytes::BytesMut;
    use tokio::io::AsyncWriteExt;

    const POLICY: ReadBuffer = ReadBuffer {
        initial: 512,
        chunk: 64 << 10,
    };

    /// Prepares `buf` as a connection does, reads `n` bytes into it and consumes them all;
    /// returns whether the read was a burst.
    fn read_round(buf: &mut BytesMut, burst: bool, n: usize) -> bool {
        POLICY.prepare(buf, burst);
        let room = buf.capacity() - buf.len();
        let n = n.min(room);
        buf.extend_from_slice(&vec![b'x'; n]);
        let _decoded = buf.split();
        POLICY.is_burst(n, room)
    }

    #[test]
    fn a_quiet_connection_keeps_a_small_read_buffer_and_a_busy_one_reads_big_chunks() {
        // Logged in, then a small packet now and then: never more than `initial`. (A NATS
        // connection used to reserve 64 KiB after its first read, an MQTT one 8 KiB once its
        // first 512 bytes were used up, and keep them for good.)
        let mut buf = BytesMut::with_capacity(POLICY.initial);
        let mut burst = false;
        for _ in 0..200 {
            burst = read_round(&mut buf, burst, 40);
            assert!(!burst);
            assert!(buf.capacity() <= POLICY.initial, "{}", buf.capacity());
        }
        // A burst fills the small buffer: the next reads get a chunk of room.
        burst = read_round(&mut buf, burst, usize::MAX);
        assert!(burst);
        burst = read_round(&mut buf, burst, 1000);
        assert!(
            burst && buf.capacity() >= POLICY.chunk / 2,
            "{}",
            buf.capacity()
        );
        // Quiet again: the drained big buffer is given back.
        burst = read_round(&mut buf, burst, 6);
        assert!(!burst);
        read_round(&mut buf, burst, 6);
        assert!(buf.capacity() <= POLICY.initial, "{}", buf.capacity());
    }

    #[test]
    fn a_packet_larger_than_the_buffer_still_fits_in_the_end() {
        // 100 KB arriving in pieces, none consumed (one packet): the buffer grows to hold it.
        let mut buf = BytesMut::with_capacity(POLICY.initial);
        let mut burst = false;
        while buf.len() < 100_000 {
            POLICY.prepare(&mut buf, burst);
            let room = buf.capacity() - buf.len();
            assert!(room > 0, "no room to read into at {} bytes", buf.len());
            let n = room.min(100_000 - buf.len());
            buf.extend_from_slice(&vec![b'x'; n]);
            burst = POLICY.is_burst(n, room);
        }
    }

    /// Reads into an empty, unallocated buffer for `wait` (nothing arrives), then returns the
    /// buffer's capacity.
    async fn capacity_while_waiting<R: ClientRead + ?Sized>(
        reader: &mut R,
        wait: Duration,
    ) -> usize {
        let mut buf = BytesMut::new();
        let read = tokio::time::timeout(wait, read_some(reader, &mut buf, &POLICY, false)).await;
        assert!(read.is_err(), "nothing was sent: {read:?}");
        buf.capacity()
    }

    /// One read into an empty, unallocated buffer: the bytes read, and the buffer.
    async fn read_fresh<R: ClientRead + ?Sized>(reader: &mut R) -> (usize, usize, BytesMut) {
        let mut buf = BytesMut::new();
        let (n, room) = read_some(reader, &mut buf, &POLICY, false).await.unwrap();
        (n, room, buf)
    }

    /// A connection accepted from a limited listener has the limit: the connections inherit
    /// it, one call per listener.
    #[tokio::test]
    async fn accepted_connections_inherit_the_unsent_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        super::limit_unsent(&listener, 16 << 10).unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let limit = socket2::SockRef::from(&stream).tcp_notsent_lowat().unwrap();
        assert_eq!(limit, 16 << 10);
    }

    /// A connection accepted from a listener with a fixed receive buffer has it, as `ss` shows
    /// it, however fast its client sends: the kernel's autotuning no longer grows it.
    #[tokio::test]
    async fn accepted_connections_inherit_the_fixed_receive_buffer() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let granted = super::fix_receive_buffer(&listener, 128 << 10).unwrap();
        assert_eq!(granted, 128 << 10);
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        // Bytes read as fast as they come: what makes autotuning grow a buffer.
        let sender = tokio::spawn(async move {
            let chunk = vec![7u8; 64 << 10];
            for _ in 0..256 {
                client.write_all(&chunk).await.unwrap();
            }
        });
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < 256 * (64 << 10) {
            got += tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                .await
                .unwrap();
        }
        sender.await.unwrap();
        let size = socket2::SockRef::from(&stream).recv_buffer_size().unwrap();
        assert_eq!(size, 128 << 10);
    }

    #[tokio::test]
    async fn a_quiet_tcp_connection_waits_for_bytes_without_a_read_buffer() {
        // A fresh tokio socket starts out "readable": the first poll reads, finds nothing and
        // gives the buffer back.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (mut reader, _writer) = super::plain(stream);

        // Waiting (an idle client): no buffer. (A read into it reserved 64 bytes at least.)
        let wait = Duration::from_millis(50);
        assert_eq!(capacity_while_waiting(&mut reader, wait).await, 0);

        // Bytes arrive: a small buffer is taken and they are read.
        client.write_all(b"\xc0\x00").await.unwrap();
        let (n, room, buf) = read_fresh(&mut reader).await;
        assert_eq!((n, &buf[..]), (2, &b"\xc0\x00"[..]));
        assert_eq!(room, POLICY.initial);

        // The end is seen without a buffer too.
        drop(client);
        assert_eq!(read_fresh(&mut reader).await.0, 0);
    }

    /// The same through one [`Stream`] (how MQTT serves plain TCP, where two halves were an
    /// `Arc` of the socket and a box each): a quiet one holds no buffer, and reads, writes and
    /// the end all go through the one box.
    #[tokio::test]
    async fn a_quiet_tcp_stream_waits_for_bytes_without_a_read_buffer_too() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream: Stream = super::plain_stream(stream);
        let wait = Duration::from_millis(50);
        assert_eq!(capacity_while_waiting(&mut stream, wait).await, 0);
        client.write_all(b"\xc0\x00").await.unwrap();
        let (n, room, buf) = read_fresh(&mut stream).await;
        assert_eq!((n, &buf[..]), (2, &b"\xc0\x00"[..]));
        assert_eq!(room, POLICY.initial);
        // Written through the same box.
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"\xd0\x00")
            .await
            .unwrap();
        let mut got = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut client, &mut got)
            .await
            .unwrap();
        assert_eq!(&got, b"\xd0\x00");
        drop(client);
        assert_eq!(read_fresh(&mut stream).await.0, 0);
    }

    #[tokio::test]
    async fn a_quiet_pipe_connection_holds_no_read_buffer_either() {
        // TLS and WebSocket connections are served through such halves.
        let (mut client, server) = tokio::io::duplex(64);
        let (reader, _writer) = tokio::io::split(server);
        let mut reader: ReadHalf = Box::new(reader);
        let wait = Duration::from_millis(20);
        assert_eq!(capacity_while_waiting(&mut reader, wait).await, 0);
        client.write_all(b"\xc0\x00").await.unwrap();
        assert_eq!(read_fresh(&mut reader).await.0, 2);
    }
}
