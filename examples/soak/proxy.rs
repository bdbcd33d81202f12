//! A TCP proxy for faults between the service and PostgreSQL: it adds latency to every chunk
//! forwarded and can cut every open connection at once (what a failing load balancer, a
//! network partition or a database fail-over looks like to a connection pool).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    latency_ms: Arc<AtomicU64>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, _) = watch::channel(0u64);
        let proxy = Self {
            port,
            latency_ms: Arc::new(AtomicU64::new(0)),
            cut,
        };
        let accepting = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let proxy = accepting.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return; // dropping `client` refuses it, as a dead upstream would
                    };
                    proxy.pipe(client, server).await;
                });
            }
        });
        Ok(proxy)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(
            u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Closes every connection open now; new ones are accepted as before.
    pub fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }

    async fn pipe(&self, client: TcpStream, server: TcpStream) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let mut cut = self.cut.subscribe();
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = forward(client_read, server_write, self.latency_ms.clone());
        let down = forward(server_read, client_write, self.latency_ms.clone());
        tokio::select! {
            _ = up => {}
            _ = down => {}
            _ = cut.changed() => {}
        }
        // Dropping the halves closes both sockets.
    }
}

async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    latency_ms: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let latency = latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
