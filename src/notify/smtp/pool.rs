//! Connections to the relay: opened with `TCP_NODELAY`, spoken over by lettre, kept for reuse.
//!
//! lettre's own transport opens its sockets with Nagle's algorithm on and writes a message's
//! body and its `\r\n.\r\n` terminator in two writes, so the terminator waits for the relay's
//! delayed ACK of the body: 42–49 ms on every message, measured with `strace` against aiosmtpd
//! (benches/REPORT.md). lettre has no hook to set the option, so this module opens the TCP
//! connection (and, for `smtps`, the TLS session) itself and hands the stream to lettre's
//! [`AsyncSmtpConnection`], which still does all of SMTP: the greeting, EHLO, STARTTLS, AUTH
//! and the message. The pool keeps what lettre's kept: at most `max_idle` idle connections, each
//! checked with NOOP before reuse and closed once idle for `idle_timeout`.
//!
//! A send cut off by the caller's deadline drops its connection with the future (it is never
//! parked), so a relay's late reply cannot be read as the answer to the next message.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How the connection is protected, with what each mode needs to do it.
pub(super) enum Protection {
    Plain,
    /// STARTTLS after the greeting; `required`: fail rather than go on in clear text.
    StartTls {
        parameters: TlsParameters,
        required: bool,
    },
    /// TLS from the first byte.
    Implicit {
        connector: TlsConnector,
        server_name: ServerName<'static>,
    },
}

/// Where and how to connect.
pub(super) struct Relay {
    pub host: String,
    pub port: u16,
    pub protection: Protection,
    pub hello: ClientId,
    pub credentials: Option<Credentials>,
    pub connect_timeout: Duration,
}

/// Why a send failed: what lettre said, or what happened before lettre had a stream.
pub(super) enum SendError {
    Smtp(lettre::transport::smtp::Error),
    Connect(String),
}

impl From<lettre::transport::smtp::Error> for SendError {
    fn from(error: lettre::transport::smtp::Error) -> Self {
        Self::Smtp(error)
    }
}

struct Parked {
    connection: AsyncSmtpConnection,
    since: Instant,
}

/// Idle connections to one relay.
pub(super) struct Pool {
    relay: Relay,
    idle: Mutex<Vec<Parked>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    /// Starts the reaper that closes connections idle for longer than `idle_timeout`; it ends
    /// by itself once the pool is dropped. Must be called inside the tokio runtime.
    pub fn start(relay: Relay, max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        let pool = Arc::new(Self {
            relay,
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
        });
        tokio::spawn(reap(Arc::downgrade(&pool), idle_timeout));
        pool
    }

    /// Hands one message to the relay over an idle connection or a new one.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let mut connection = self.checkout().await?;
        let sent = connection.send(envelope, message).await;
        self.checkin(connection).await;
        sent.map(drop).map_err(SendError::Smtp)
    }

    /// A connection that answered NOOP: an idle one, or a new one.
    pub async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let parked = self.lock().pop();
            let Some(Parked {
                mut connection,
                since,
            }) = parked
            else {
                return self.connect().await;
            };
            if since.elapsed() < self.idle_timeout && connection.test_connected().await {
                return Ok(connection);
            }
            connection.abort().await;
        }
    }

    /// Parks a connection for the next message, or closes it if it broke or the pool is full.
    pub async fn checkin(&self, mut connection: AsyncSmtpConnection) {
        if !connection.has_broken() {
            let mut idle = self.lock();
            if idle.len() < self.max_idle {
                idle.push(Parked {
                    connection,
                    since: Instant::now(),
                });
                return;
            }
        }
        connection.abort().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let relay = &self.relay;
        let tcp = tcp_connect(&relay.host, relay.port, relay.connect_timeout).await?;
        let mut connection = match &relay.protection {
            Protection::Implicit {
                connector,
                server_name,
            } => {
                let tls = tokio::time::timeout(
                    relay.connect_timeout,
                    connector.connect(server_name.clone(), tcp),
                )
                .await
                .map_err(|_| SendError::Connect("TLS handshake timed out".into()))?
                .map_err(|error| SendError::Connect(format!("TLS failed: {error}")))?;
                AsyncSmtpConnection::connect_with_transport(Box::new(Tls(tls)), &relay.hello)
                    .await?
            }
            Protection::Plain | Protection::StartTls { .. } => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &relay.hello).await?
            }
        };
        if let Protection::StartTls {
            parameters,
            required,
        } = &relay.protection
            && (*required || connection.can_starttls())
        {
            connection
                .starttls(parameters.clone(), &relay.hello)
                .await?;
        }
        if let Some(credentials) = &relay.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(connection)
    }
}

/// Every address the name resolves to, in order, each within `timeout`; `TCP_NODELAY` on the
/// one that answers.
async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, SendError> {
    let addresses = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| SendError::Connect("name lookup timed out".into()))?
        .map_err(|error| SendError::Connect(format!("name lookup failed: {error}")))?;
    let mut last = SendError::Connect("the name resolved to no address".into());
    for address in addresses {
        match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true).map_err(|error| {
                    SendError::Connect(format!("setting TCP_NODELAY failed: {error}"))
                })?;
                return Ok(stream);
            }
            Ok(Err(error)) => last = SendError::Connect(format!("connection failed: {error}")),
            Err(_) => last = SendError::Connect("connection timed out".into()),
        }
    }
    Err(last)
}

/// Closes the connections that stayed idle too long, every `period`, until the pool is gone.
async fn reap(pool: Weak<Pool>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else { return };
        let stale: Vec<Parked> = {
            let mut idle = pool.lock();
            let (stale, fresh) = idle
                .drain(..)
                .partition(|parked| parked.since.elapsed() >= pool.idle_timeout);
            *idle = fresh;
            stale
        };
        drop(pool);
        for mut parked in stale {
            parked.connection.abort().await;
        }
    }
}

/// A TLS session over TCP, as the stream lettre speaks SMTP over (`smtps`).
struct Tls(TlsStream<TcpStream>);

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tls")
    }
}

impl AsyncTokioStream for Tls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
