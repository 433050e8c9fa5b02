//! A small HTTP/1.1 load generator: many keep-alive connections, one request in flight on each,
//! latencies recorded after a warm-up. It runs as its own process (`troupe-bench loadgen`) so
//! that it can be pinned to other CPUs than troupe.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the load generator reports on stdout (one JSON object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Successful (200) responses counted after the warm-up.
    pub requests: u64,
    /// Non-200 responses or broken connections after the warm-up.
    pub errors: u64,
    /// Measured seconds (after the warm-up).
    pub seconds: f64,
    /// requests / seconds.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Runs the load and prints a [`LoadResult`] as JSON.
pub fn run(
    addr: &str,
    path: &str,
    token: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<()> {
    // One thread: the generator's CPU use stays on the CPU it is pinned to.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(drive(addr, path, token, connections, warmup, duration))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn drive(
    addr: &str,
    path: &str,
    token: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
    )
    .into_bytes();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let request = request.clone();
        let addr = addr.to_owned();
        tasks.push(tokio::spawn(async move {
            connection(&addr, &request, measure_from, end).await
        }));
    }
    let mut lat: Vec<f64> = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        lat.extend(l);
        errors += e;
    }
    let seconds = duration.as_secs_f64();
    Ok(LoadResult {
        requests: lat.len() as u64,
        errors,
        seconds,
        rps: lat.len() as f64 / seconds,
        p50_ms: crate::stats::percentile(&lat, 50.0).unwrap_or(f64::NAN),
        p99_ms: crate::stats::percentile(&lat, 99.0).unwrap_or(f64::NAN),
    })
}

async fn connection(
    addr: &str,
    request: &[u8],
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<(Vec<f64>, u64)> {
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    while Instant::now() < end {
        let mut stream = TcpStream::connect(addr).await.context("connecting")?;
        stream.set_nodelay(true)?;
        loop {
            let t0 = Instant::now();
            if t0 >= end {
                return Ok((lat, errors));
            }
            let ok = match exchange(&mut stream, request, &mut buf).await {
                Ok(status) => status == 200,
                Err(_) => {
                    if t0 >= measure_from {
                        errors += 1;
                    }
                    break; // reconnect
                }
            };
            if t0 >= measure_from {
                if ok {
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
        }
    }
    Ok((lat, errors))
}

/// Sends one request and reads one whole response; returns its status.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match length {
        Some(len) => {
            while buf.len() < header_end + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed in body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None if head.contains("transfer-encoding: chunked") => {
            while !buf.ends_with(b"0\r\n\r\n") {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed in body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
        None => {}
    }
    Ok(status)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
