//! The agents' TLS connections, on rustls' unbuffered API.
//!
//! tokio-rustls keeps rustls' receive buffer (4 KiB, allocated on the first read and never given
//! back) for as long as a connection lives. Agents keep connections open for hours between bursts
//! of work; at 10,000 idle connections that buffer alone was 40 MiB holding nothing. This stream
//! owns its buffers: they are allocated when bytes arrive and freed
//! ([`TlsStream::release_buffers`]) while a connection is parked, so an idle connection keeps only
//! rustls' session state.
//!
//! The price is one copy: rustls encrypts each outgoing record into a vector of its own and the
//! unbuffered API copies it into ours (a memcpy per record; decryption costs the same as before).
//!
//! Bytes go out in the order rustls produced them: handshake records, alerts and key updates are
//! queued in the same buffer as application data, so "transmitted" (`TransmitTlsData::done`) may be
//! said as soon as they are queued.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Room for one whole record as it may arrive: 16 KiB of payload plus the largest expansion
/// TLS 1.2 allows (RFC 5246 §6.2.3) and the 5-byte header.
const RECORD_ROOM: usize = 16 * 1024 + 2048 + 5;

/// The receive buffer a connection starts with, and gets again after parking: a request head with
/// its token, or a ClientHello, fits; a larger record grows it.
const FIRST_READ: usize = 4096;

/// Reads into less room than this compact or grow the buffer first.
const MIN_READ: usize = 1024;

/// A handshake message may span records up to 64 KiB (rustls' own limit); nothing larger is kept.
const MAX_INCOMING: usize = 0x1_0000 + RECORD_ROOM;

/// Ciphertext queued beyond this waits for the socket before more is accepted: a client that does
/// not read slows the response down instead of growing the buffer.
const OUTGOING_HIGH: usize = 64 * 1024;

/// Writes smaller than this are gathered into one record with their neighbours (a response head
/// and a small body): one AEAD pass and 22 bytes of overhead instead of one per slice.
const GATHER: usize = 4096;

pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed.
    incoming: Window,
    /// Bytes arrived since the last processing: a partial record is not processed again for nothing.
    unprocessed: bool,
    /// Plaintext decrypted and not yet read.
    plain: Window,
    /// Ciphertext to send.
    outgoing: Window,
    /// Where the small slices of a vectored write are put together before they are sealed.
    gather: Vec<u8>,
    /// The client sent close_notify or closed TCP: reads report the end of input.
    read_closed: bool,
    close_queued: bool,
    /// rustls reported an error: the session is dead and nothing more is processed or sent.
    failed: bool,
    /// Free the buffers whenever a read has to wait for the client ([`TlsStream::release_while_waiting`]).
    release_when_waiting: bool,
}

/// A buffer whose bytes `start..end` are live; what is before `start` has been consumed.
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Window {
    fn live(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.end..]
    }

    fn len(&self) -> usize {
        self.end - self.start
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Moves the live bytes to the front, then grows the buffer until `need` bytes fit after them.
    fn make_room(&mut self, need: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() - self.end < need {
            let len = (self.end + need).max(self.buf.len() * 2);
            self.buf.resize(len, 0);
        }
    }

    fn release_if_empty(&mut self) {
        if self.len() == 0 {
            *self = Window::default();
        }
    }

    /// Lets rustls encode a record it prepared (handshake, alert, key update) at the end.
    fn encode(&mut self, data: &mut EncodeTlsData<'_, ServerConnectionData>) {
        loop {
            match data.encode(self.spare()) {
                Ok(n) => return self.end += n,
                Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    self.make_room(required_size)
                }
                Err(EncodeError::AlreadyEncoded) => return,
            }
        }
    }
}

/// What to do once rustls may send application data.
#[derive(Clone, Copy)]
enum Send<'a> {
    Nothing,
    Data(&'a [u8]),
    CloseNotify,
}

impl Send<'_> {
    /// Room the ciphertext will take: the plaintext plus a header, tag and content type per record.
    fn room(self) -> usize {
        match self {
            Send::Nothing => 0,
            Send::Data(data) => data.len() + (data.len() / (16 * 1024) + 1) * 64,
            Send::CloseNotify => 64,
        }
    }
}

/// Where processing stopped.
#[derive(PartialEq, Eq)]
enum Rest {
    /// The handshake needs more from the client.
    Blocked,
    /// Application data may be sent; more may be read.
    Traffic,
    /// Both sides have sent close_notify.
    Closed,
}

/// Completes a TLS handshake on `tcp`; what the handshake produced (session tickets included) has
/// been sent when it returns. Bounded by the caller's handshake timeout.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut tls = TlsStream {
        tcp,
        conn,
        incoming: Window::default(),
        unprocessed: false,
        plain: Window::default(),
        outgoing: Window::default(),
        gather: Vec::new(),
        read_closed: false,
        close_queued: false,
        failed: false,
        release_when_waiting: false,
    };
    poll_fn(|cx| tls.poll_handshake(cx)).await?;
    Ok(tls)
}

impl TlsStream {
    /// The protocol the client and the proxy agreed on by ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Frees the buffers that hold nothing; the next bytes allocate them again. Called when a
    /// connection parks.
    pub fn release_buffers(&mut self) {
        self.incoming.release_if_empty();
        self.plain.release_if_empty();
        self.outgoing.release_if_empty();
        self.gather = Vec::new();
    }

    /// For connections that never park (HTTP/2: its codec holds state across requests): the
    /// buffers are freed each time a read finds nothing to read, so an idle HTTP/2 connection holds
    /// none. Costs an allocation when the client speaks again.
    pub fn release_while_waiting(&mut self) {
        self.release_when_waiting = true;
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if std::mem::take(&mut self.unprocessed) && self.process(Send::Nothing)? == Rest::Closed
            {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            // What the handshake produced goes out before waiting for the client's answer.
            ready!(self.poll_send_all(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Runs rustls over what has been received until it rests: decrypted data lands in `plain`,
    /// records rustls wants sent in `outgoing`, and `send` is encrypted once it may be.
    fn process(&mut self, send: Send<'_>) -> io::Result<Rest> {
        if self.failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the TLS session failed earlier",
            ));
        }
        match self.process_records(send) {
            Ok(rest) => Ok(rest),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn process_records(&mut self, mut send: Send<'_>) -> Result<Rest, rustls::Error> {
        let Self {
            conn,
            incoming,
            plain,
            outgoing,
            read_closed,
            ..
        } = self;
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming.live());
            let rest = match state {
                Err(e) => {
                    incoming.consume(discard);
                    return Err(e);
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plain.make_room(record.payload.len());
                        plain.spare()[..record.payload.len()].copy_from_slice(record.payload);
                        plain.end += record.payload.len();
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    outgoing.encode(&mut data);
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Queued ahead of anything written after it: as good as sent.
                    data.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    *read_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => {
                    *read_closed = true;
                    Some(Rest::Closed)
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Rest::Blocked),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    if outgoing.spare().len() < send.room() {
                        outgoing.make_room(send.room());
                    }
                    loop {
                        let sealed = match send {
                            Send::Nothing => Ok(0),
                            Send::Data(data) => traffic.encrypt(data, outgoing.spare()),
                            Send::CloseNotify => traffic.queue_close_notify(outgoing.spare()),
                        };
                        match sealed {
                            Ok(n) => break outgoing.end += n,
                            Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => outgoing.make_room(required_size),
                            Err(EncryptError::EncryptExhausted) => {
                                return Err(rustls::Error::EncryptError)
                            }
                        }
                    }
                    send = Send::Nothing;
                    Some(Rest::Traffic)
                }
                // Early data (ReadEarlyData) is not enabled in the server config, so rustls never
                // offers it; any state added later is refused rather than guessed at.
                Ok(_) => {
                    return Err(rustls::Error::General(
                        "unexpected TLS connection state".into(),
                    ))
                }
            };
            incoming.consume(discard);
            if let Some(rest) = rest {
                return Ok(rest);
            }
        }
    }

    /// After a TLS error: queues the alert rustls prepared for the client and sends it if the
    /// socket takes it at once (the connection is being dropped, nothing waits).
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        self.failed = true;
        // What was received is not looked at again: the same bad record would fail again.
        self.incoming = Window::default();
        for _ in 0..4 {
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => self.outgoing.encode(&mut data),
                Ok(ConnectionState::TransmitTlsData(data)) => data.done(),
                _ => break,
            }
        }
        let _ = self.tcp.try_write(self.outgoing.live());
        tls_error(error)
    }

    /// Reads from the socket into `incoming`. Ready(0) at the end of input.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.buf.is_empty() {
            // Parked connections wait here, without a buffer.
            ready!(self.tcp.poll_read_ready(cx))?;
            self.incoming.make_room(FIRST_READ);
        } else if self.incoming.spare().len() < MIN_READ {
            self.incoming.make_room(0);
            if self.incoming.spare().len() < MIN_READ {
                // One unfinished record (or handshake message) fills it: room for the largest.
                if self.incoming.buf.len() >= MAX_INCOMING {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a TLS handshake message larger than 64 KiB",
                    )));
                }
                self.incoming.make_room(RECORD_ROOM);
            }
        }
        let mut buf = ReadBuf::new(self.incoming.spare());
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.incoming.end += n;
        self.unprocessed |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Writes queued ciphertext until none is left.
    fn poll_send_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing.len() > 0 {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, self.outgoing.live()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Encrypts `data` once the queue has room for it.
    fn poll_seal(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<()>> {
        if self.outgoing.len() >= OUTGOING_HIGH {
            ready!(self.poll_send_all(cx))?;
        }
        match self.process(Send::Data(data))? {
            Rest::Traffic => Poll::Ready(Ok(())),
            Rest::Blocked | Rest::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain.len() > 0 {
                let n = buf.remaining().min(this.plain.len());
                buf.put_slice(&this.plain.live()[..n]);
                this.plain.consume(n);
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            if std::mem::take(&mut this.unprocessed) {
                this.process(Send::Nothing)?;
                continue;
            }
            // What rustls queued while reading (a key update's answer) leaves now if the socket
            // takes it; the next flush sends it otherwise.
            if this.outgoing.len() > 0 {
                let _ = this.poll_send_all(cx)?;
            }
            if this.release_when_waiting
                && this.incoming.len() == 0
                && this.outgoing.len() == 0
                && this.tcp.poll_read_ready(cx).is_pending()
            {
                this.release_buffers();
                return Poll::Pending;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                // TCP closed without close_notify: the end of input all the same. HTTP's own
                // framing tells a cut message from a whole one.
                this.read_closed = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = buf.len().min(OUTGOING_HIGH);
        ready!(this.poll_seal(cx, &buf[..n]))?;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut gather = std::mem::take(&mut this.gather);
        gather.clear();
        let mut large = None;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            if gather.len() + buf.len() <= GATHER {
                gather.extend_from_slice(buf);
                continue;
            }
            // A large slice goes as it is, unless something was gathered before it: that goes on
            // its own, and the caller offers the rest again.
            if gather.is_empty() {
                large = Some(&**buf);
            }
            break;
        }
        let sealed = match large {
            Some(buf) => {
                let n = buf.len().min(OUTGOING_HIGH);
                this.poll_seal(cx, &buf[..n]).map_ok(|()| n)
            }
            None if gather.is_empty() => Poll::Ready(Ok(0)),
            None => this.poll_seal(cx, &gather).map_ok(|()| gather.len()),
        };
        this.gather = gather;
        sealed
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_all(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !std::mem::replace(&mut this.close_queued, true) {
            // A connection rustls has failed has no close_notify to give; TCP closes all the same.
            let _ = this.process(Send::CloseNotify);
        }
        ready!(this.poll_send_all(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
