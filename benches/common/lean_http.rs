//! A lean keep-alive HTTP/1.1 client for the benchmarks: on a 2-core machine every cycle the
//! load generator burns is taken from the servers it measures, so it writes pre-encoded
//! requests and parses responses with httparse, nothing more.
#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Error type of the client.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One keep-alive HTTP/1.1 connection that speaks just enough of the protocol for these
/// requests. On a small machine every cycle the client burns is taken from the server, so rather
/// than a general-purpose client (a connection task, channels and header maps per request) the
/// generator writes pre-encoded requests and parses only the response head: per request that
/// leaves little beyond the one send and one receive syscall it cannot avoid.
pub struct Conn {
    stream: Stream,
    /// Bytes read but not yet consumed; normally empty between responses.
    buf: Vec<u8>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Servers reached over TLS, by address, with the client configuration to use: the benches
/// hand addresses around, and a connection to one of these speaks TLS.
fn tls_servers() -> &'static Mutex<HashMap<SocketAddr, Arc<rustls::ClientConfig>>> {
    static SERVERS: OnceLock<Mutex<HashMap<SocketAddr, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    SERVERS.get_or_init(Default::default)
}

/// Connections to `addr` from now on use TLS with `config`.
pub fn use_tls(addr: SocketAddr, config: Arc<rustls::ClientConfig>) {
    tls_servers().lock().unwrap().insert(addr, config);
}

/// What the generator needs to know about a response.
pub struct Response {
    pub status: u16,
    /// Body bytes as they came over the wire (still compressed, chunk framing removed).
    pub body_len: u64,
    pub content_encoding: Option<String>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Largest response head accepted; Eureka responses carry a handful of headers.
pub const MAX_HEAD: usize = 16 * 1024;

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        // Small requests must leave at once; Nagle would add delayed-ACK stalls to every one.
        stream.set_nodelay(true)?;
        let tls = tls_servers().lock().unwrap().get(&addr).cloned();
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let name = rustls::pki_types::ServerName::from(addr.ip());
                let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await?;
                Stream::Tls(Box::new(tls))
            }
        };
        Ok(Conn { stream, buf: Vec::with_capacity(64 * 1024) })
    }

    pub async fn send(&mut self, mut req: &[u8]) -> std::io::Result<()> {
        let stream = match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => {
                s.write_all(req).await?;
                return s.flush().await;
            }
        };
        while !req.is_empty() {
            stream.writable().await?;
            match stream.try_write(req) {
                Ok(n) => req = &req[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends at least one byte from the socket to `buf`.
    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let stream = match &mut self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => {
                return match s.read_buf(&mut self.buf).await? {
                    0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
                    _ => Ok(()),
                };
            }
        };
        loop {
            match stream.try_read_buf(&mut self.buf) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.readable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes `n` body bytes, copying them to `sink` when given.
    async fn take(&mut self, mut n: usize, mut sink: Option<&mut Vec<u8>>) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let k = n.min(self.buf.len());
            if let Some(s) = sink.as_deref_mut() {
                s.extend_from_slice(&self.buf[..k]);
            }
            self.buf.drain(..k);
            n -= k;
        }
        Ok(())
    }

    /// Consumes one CRLF-terminated line and returns it without the CRLF.
    async fn line(&mut self) -> Result<String, BoxError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err("chunk line too long".into());
            }
            self.fill().await?;
        }
    }

    /// Reads one response, discarding the body unless `sink` is given.
    pub async fn response(&mut self, mut sink: Option<&mut Vec<u8>>) -> Result<Response, BoxError> {
        let (head_len, mut resp, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = parsed.parse(&self.buf)? {
                let mut resp = Response {
                    status: parsed.code.unwrap_or(0),
                    body_len: 0,
                    content_encoding: None,
                    close: parsed.version == Some(0),
                };
                let (mut length, mut chunked) = (None, false);
                for h in parsed.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or("").trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = Some(value.parse::<usize>()?);
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        chunked = value.to_ascii_lowercase().contains("chunked");
                    } else if h.name.eq_ignore_ascii_case("content-encoding") {
                        resp.content_encoding = Some(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        resp.close = value.eq_ignore_ascii_case("close");
                    }
                }
                break (head_len, resp, length, chunked);
            }
            if self.buf.len() > MAX_HEAD {
                return Err("response head too long".into());
            }
            self.fill().await?;
        };
        self.buf.drain(..head_len);
        if chunked {
            loop {
                let line = self.line().await?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.take(size, sink.as_deref_mut()).await?;
                self.take(2, None).await?;
                resp.body_len += size as u64;
            }
        } else if let Some(n) = length {
            self.take(n, sink).await?;
            resp.body_len = n as u64;
        } else if !(resp.status == 204 || resp.status == 304 || (100..200).contains(&resp.status)) {
            return Err("response without length framing".into());
        }
        Ok(resp)
    }

    pub async fn exchange(&mut self, req: &[u8], sink: Option<&mut Vec<u8>>) -> Result<Response, BoxError> {
        self.send(req).await?;
        self.response(sink).await
    }
}
