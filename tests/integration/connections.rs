//! gRPC connections are bounded in time, seen from the wire: a raw HTTP/2 client (no gRPC
//! library, so nothing answers or reconnects behind the test's back) shows that the server
//! pings an idle connection and closes it when the pings go unanswered, and that it asks even a
//! well-behaved connection to go away once it reaches its maximum age, and closes it. Without these, a client
//! could hold connections (and their stream slots) open forever, and a long-lived client would
//! never move to new replicas after a scale-out.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{spawn_app_with, Mode};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// One HTTP/2 frame's type, flags and payload.
struct Frame {
    kind: u8,
    flags: u8,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        kind,
        flags,
        0,
        0,
        0,
        0,
    ];
    out.extend_from_slice(payload);
    out
}

/// The next frame, or `None` once the server closed the connection.
async fn read_frame(tcp: &mut TcpStream) -> Option<Frame> {
    let mut header = [0u8; 9];
    tcp.read_exact(&mut header).await.ok()?;
    let len =
        (usize::from(header[0]) << 16) | (usize::from(header[1]) << 8) | usize::from(header[2]);
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: header[3],
        flags: header[4],
        payload,
    })
}

async fn open(addr: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(PREFACE).await.expect("preface");
    tcp.write_all(&frame(SETTINGS, 0, &[]))
        .await
        .expect("settings");
    tcp
}

/// Generous bounds: they only stop a broken server from hanging a test, and hold on a machine
/// busy with other builds.
const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_connection_whose_pings_go_unanswered_is_told_to_go_away() {
    // Connections live an hour here, so only keepalive can end this one: one ping unanswered
    // for the keepalive timeout, and the server sends GOAWAY, then closes the socket.
    let Some(app) = spawn_app_with(Mode::Embedded, "grpc_keepalive", |settings| {
        settings.platform.grpc_keepalive_interval_seconds = 1;
        settings.platform.grpc_keepalive_timeout_seconds = 1;
        settings.platform.grpc_max_connection_age_seconds = 3600;
    })
    .await
    else {
        return;
    };
    let mut tcp = open(&app.grpc).await;
    let silent = async {
        let mut pinged = false;
        while let Some(f) = read_frame(&mut tcp).await {
            match f.kind {
                PING if f.flags & ACK == 0 => pinged = true,
                GOAWAY => return Some(pinged),
                _ => {}
            }
        }
        None
    };
    let outcome = tokio::time::timeout(PATIENCE, silent)
        .await
        .expect("a connection whose pings go unanswered is never told to go away");
    assert_eq!(
        outcome,
        Some(true),
        "the silent connection was closed without GOAWAY (None) or without a ping first"
    );
    // Then the socket itself is closed: a peer that went silent must not hold a file
    // descriptor until the connection's maximum age (an hour here).
    let closed = async { while read_frame(&mut tcp).await.is_some() {} };
    tokio::time::timeout(PATIENCE, closed)
        .await
        .expect("the silent connection's socket stays open after GOAWAY");
    app.stop().await;
}

#[tokio::test]
async fn a_connection_at_its_maximum_age_is_told_to_go_away_then_closed() {
    let Some(app) = spawn_app_with(Mode::Embedded, "grpc_connection_age", |settings| {
        settings.platform.grpc_keepalive_interval_seconds = 1;
        settings.platform.grpc_keepalive_timeout_seconds = 5;
        settings.platform.grpc_max_connection_age_seconds = 3;
        settings.platform.grpc_request_timeout_seconds = 2;
    })
    .await
    else {
        return;
    };
    // A client that answers every ping and acknowledges the settings, yet stays: at its
    // maximum age the server sends GOAWAY, then closes it.
    let polite = async {
        let mut tcp = open(&app.grpc).await;
        let mut went_away = false;
        let mut pings = 0;
        while let Some(f) = read_frame(&mut tcp).await {
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => {
                    let _ = tcp.write_all(&frame(SETTINGS, ACK, &[])).await;
                }
                PING if f.flags & ACK == 0 => {
                    pings += 1;
                    let _ = tcp.write_all(&frame(PING, ACK, &f.payload)).await;
                }
                GOAWAY => went_away = true,
                _ => {}
            }
        }
        (went_away, pings)
    };
    let (went_away, pings) = tokio::time::timeout(PATIENCE, polite)
        .await
        .expect("a connection past its maximum age is never closed");
    assert!(went_away, "closed without GOAWAY");
    // Answered pings kept it open past the keepalive timeout: it was its age that ended it.
    assert!(pings >= 1, "the polite connection was never pinged");
    app.stop().await;
}
