//! A small TCP fault proxy placed between the services and PostgreSQL (their `DATABASE_URL`
//! points at it). Modes:
//!
//! - [`Mode::Pass`]: bytes flow unchanged;
//! - [`Mode::Latency`]: every chunk is held for a while before it is forwarded, both ways;
//! - [`Mode::BlackHole`]: nothing is forwarded (new connections are accepted and then get no
//!   answer), as in a network partition; data already read is held, not dropped, so when the
//!   mode changes back the connections resume, as TCP would after a partition heals;
//! - [`Mode::Down`]: every connection is reset and new ones are reset at once, as when the
//!   database is down.
//!
//! [`FaultProxy::reset_all`] resets (RST) every open connection once, as a database restart or
//! `pg_terminate_backend` does, and leaves the mode as it was. Sockets are closed with a zero
//! linger, so a close is a reset, never a polite FIN.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward unchanged.
    Pass,
    /// Hold each chunk this long before forwarding it.
    Latency(Duration),
    /// Forward nothing; hold what was read.
    BlackHole,
    /// Reset every connection, old and new.
    Down,
}

struct Shared {
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Bumped by [`FaultProxy::reset_all`]; every connection task watches it.
    resets: watch::Sender<u64>,
    connections: AtomicU64,
}

/// A running proxy; stops (and resets its connections) when dropped.
pub struct FaultProxy {
    /// The address to connect to instead of the upstream.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            mode: watch::channel(Mode::Pass).0,
            resets: watch::channel(0).0,
            connections: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FaultProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Switches the mode. [`Mode::Down`] also resets every open connection.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
        if mode == Mode::Down {
            self.reset_all();
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Resets every open connection (both sides), once.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_zero_linger();
        if *shared.mode.borrow() == Mode::Down {
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, shared.clone()));
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let mut mode = shared.mode.subscribe();
    // A black hole holds a new connection before it even reaches the upstream.
    if wait_while_black_hole(&mut mode, &mut resets).await.is_err() {
        return;
    }
    let upstream = tokio::select! {
        connected = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(shared.upstream)) => match connected {
            Ok(Ok(stream)) => stream,
            _ => return,
        },
        _ = resets.changed() => return,
    };
    let _ = upstream.set_zero_linger();
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let up = pump(client_read, upstream_write, shared.mode.subscribe());
    let down = pump(upstream_read, client_write, shared.mode.subscribe());
    // Either direction ending (or a reset) drops all four halves: with zero linger, both
    // sockets are reset.
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = resets.changed() => {}
    }
}

/// Waits while the mode is a black hole; `Err` when the connection must be reset meanwhile.
async fn wait_while_black_hole(
    mode: &mut watch::Receiver<Mode>,
    resets: &mut watch::Receiver<u64>,
) -> Result<(), ()> {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            Mode::BlackHole => {}
            Mode::Down => return Err(()),
            _ => return Ok(()),
        }
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { return Err(()) },
            _ = resets.changed() => return Err(()),
        }
    }
}

/// Copies one direction, applying the mode to every chunk.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        hold_while_black_hole(&mut mode).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        hold_while_black_hole(&mut mode).await;
        let current = *mode.borrow();
        match current {
            Mode::Latency(delay) => tokio::time::sleep(delay).await,
            Mode::Down => return Ok(()),
            Mode::Pass | Mode::BlackHole => {}
        }
        to.write_all(&buf[..n]).await?;
    }
}

async fn hold_while_black_hole(mode: &mut watch::Receiver<Mode>) {
    while *mode.borrow_and_update() == Mode::BlackHole {
        if mode.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server, then the proxy in front of it.
    async fn echo_and_proxy() -> FaultProxy {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        FaultProxy::start(upstream).await.expect("proxy")
    }

    async fn round_trip(s: &mut TcpStream, limit: Duration) -> std::io::Result<Option<Vec<u8>>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(Some(buf.to_vec())),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    #[tokio::test]
    async fn modes_behave_as_documented() {
        let proxy = echo_and_proxy().await;
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let second = Duration::from_secs(1);
        assert_eq!(
            round_trip(&mut s, second).await.expect("pass"),
            Some(b"ping".to_vec())
        );

        proxy.set(Mode::Latency(Duration::from_millis(150)));
        let started = std::time::Instant::now();
        assert!(round_trip(&mut s, second).await.expect("latency").is_some());
        assert!(started.elapsed() >= Duration::from_millis(300));

        proxy.set(Mode::BlackHole);
        assert_eq!(
            round_trip(&mut s, Duration::from_millis(300))
                .await
                .expect("black hole"),
            None
        );
        proxy.set(Mode::Pass);
        // What was held comes through once the black hole clears.
        let mut buf = [0u8; 4];
        tokio::time::timeout(second, s.read_exact(&mut buf))
            .await
            .expect("held bytes arrive")
            .expect("read");
        assert_eq!(&buf, b"ping");

        proxy.reset_all();
        let after = round_trip(&mut s, second).await;
        assert!(
            after.is_err() || after.as_ref().is_ok_and(Option::is_none),
            "{after:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(round_trip(&mut fresh, second).await.expect("new").is_some());

        proxy.set(Mode::Down);
        let mut refused = TcpStream::connect(proxy.addr).await.expect("accepted");
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(second, refused.read(&mut buf))
            .await
            .expect("answered at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        proxy.set(Mode::Pass);
        let mut back = TcpStream::connect(proxy.addr).await.expect("connect");
        assert!(round_trip(&mut back, second).await.expect("back").is_some());
        assert!(proxy.connections() >= 4);
        assert_eq!(proxy.mode(), Mode::Pass);
    }
}
