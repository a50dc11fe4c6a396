//! The stream under a connection, and how a WebSocket session gets it
//! back from hyper.
//!
//! A connection is served by hyper's HTTP/1 or HTTP/2 connection, chosen
//! here from its first bytes (the HTTP/2 client preface, RFC 9113 §3.4,
//! means HTTP/2 with prior knowledge; anything else HTTP/1). hyper hands
//! an upgraded connection over as [`hyper::upgrade::Upgraded`], a boxed
//! stream behind two buffers; [`take`] takes the accepted socket back out
//! of it (with the bytes hyper had read past the request), so that a
//! WebSocket session reads and writes its TCP or TLS stream directly
//! (callgrind, scenario M2: ~0.35k instructions per round trip were the
//! layers of the upgraded stream).

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::conn::Watched;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An accepted connection's stream: TCP, or TLS over TCP.
pub trait Accepted: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The stream as a [`Socket`].
    fn into_socket(self) -> Socket;
}

impl Accepted for TcpStream {
    fn into_socket(self) -> Socket {
        Socket::Tcp(self)
    }
}

impl Accepted for TlsStream<TcpStream> {
    fn into_socket(self) -> Socket {
        Socket::Tls(Box::new(self))
    }
}

/// The stream under a WebSocket session: the accepted TCP or TLS stream,
/// or (should hyper hand over a stream [`take`] does not know) hyper's
/// upgraded stream itself.
pub enum Socket {
    /// A plain TCP connection.
    Tcp(TcpStream),
    /// A TLS connection (boxed: rustls's state is kilobytes).
    Tls(Box<TlsStream<TcpStream>>),
    /// hyper's upgraded stream.
    Upgraded(TokioIo<Upgraded>),
}

/// How an upgrade takes its connection's stream back from hyper: returns
/// the stream and the bytes already read from it past the request (the
/// first frames of a client that did not wait for the 101).
pub type Take = fn(Upgraded) -> (Socket, Bytes);

/// [`Take`] for a connection served over `I` (see [`serve`]).
pub fn take<I: Accepted>(upgraded: Upgraded) -> (Socket, Bytes) {
    match upgraded.downcast::<TokioIo<Watched<I>>>() {
        Ok(parts) => {
            let (io, head) = parts.io.into_inner().into_parts();
            let read = if head.is_empty() {
                parts.read_buf
            } else {
                let mut b = BytesMut::from(&head[..]);
                b.extend_from_slice(&parts.read_buf);
                b.freeze()
            };
            (io.into_socket(), read)
        }
        Err(upgraded) => (Socket::Upgraded(TokioIo::new(upgraded)), Bytes::new()),
    }
}

/// Reads the start of a connection, up to the length of the HTTP/2
/// preface or the first byte that differs from it, and puts what it read
/// back in front of the stream. Returns whether the client speaks HTTP/2
/// with prior knowledge. Errors: the stream's.
pub async fn sniff<I: AsyncRead + Unpin>(io: &mut Watched<I>) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    let mut n = 0;
    while n < buf.len() {
        let got = io.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
        if buf[..n] != PREFACE[..n] {
            break;
        }
    }
    io.unread(Bytes::copy_from_slice(&buf[..n]));
    Ok(n == PREFACE.len() && buf == *PREFACE)
}

/// `$e` on the stream of whichever kind `$s` is.
macro_rules! each {
    ($s:expr, $io:ident => $e:expr) => {
        match $s {
            Socket::Tcp($io) => $e,
            Socket::Tls($io) => $e,
            Socket::Upgraded($io) => $e,
        }
    };
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, io => io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// The bytes read to tell HTTP/1 from HTTP/2 are read again, in order.
    #[tokio::test]
    async fn sniffing_puts_the_bytes_back() {
        for (sent, h2) in [
            (&b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"[..], false),
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04"[..], true),
            (&b"PRI * HTTP/1.1\r\n\r\n"[..], false),
            (&b"PR"[..], false),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            client.write_all(sent).await.unwrap();
            drop(client);
            let watch = super::super::conn::Watch::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(1),
            );
            let mut io = Watched::new(server, watch);
            let is_h2 = sniff(&mut io).await.unwrap();
            assert_eq!(is_h2, h2, "{sent:?}");
            let mut again = Vec::new();
            io.read_to_end(&mut again).await.unwrap();
            assert_eq!(again, sent);
        }
    }
}
