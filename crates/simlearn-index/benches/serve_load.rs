//! A bounded loopback load on a running `simlearn serve`: a fixed number of `POST /search`
//! requests (JSON vectors from a query file) from C client threads, each on a fresh
//! connection; then it stops and prints latency percentiles, throughput and status counts as
//! one JSON object. `bench/serve_load.sh` starts the server, runs this at several
//! concurrencies, and reads the server's peak memory.
//!
//! ```text
//! cargo bench -p simlearn-index --bench serve_load --no-run   # then:
//! serve_load --addr 127.0.0.1:8080 --queries Q.npy --requests 2000 --concurrency 1,4,16 --k 10
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use simlearn_eval::io::read_embeddings;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One request on a fresh connection: (status, whole response) or the I/O error.
fn post(addr: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST /search HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut out = Vec::with_capacity(4096);
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let r = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[r.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(addr) = arg(&args, "--addr") else {
        eprintln!("usage: serve_load --addr HOST:PORT --queries Q.npy [--requests 2000] [--concurrency 1,4,16] [--k 10]");
        return;
    };
    let queries = read_embeddings(
        &PathBuf::from(arg(&args, "--queries").expect("--queries is required")),
        None,
    )
    .unwrap();
    let requests: usize = arg(&args, "--requests").map_or(2000, |s| s.parse().unwrap());
    let k: usize = arg(&args, "--k").map_or(10, |s| s.parse().unwrap());
    let levels: Vec<usize> = arg(&args, "--concurrency")
        .unwrap_or("1,4,16".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let bodies: Vec<String> = (0..queries.rows())
        .map(|q| serde_json::json!({"vector": queries.row(q), "k": k}).to_string())
        .collect();

    let mut rows = Vec::new();
    for &c in &levels {
        // A short untimed warm-up.
        for b in bodies.iter().take(20) {
            post(&addr, b).unwrap();
        }
        let next = AtomicUsize::new(0);
        let lat = Mutex::new(Vec::with_capacity(requests));
        let statuses = Mutex::new(std::collections::BTreeMap::<String, usize>::new());
        let started = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..c {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    let mut codes = std::collections::BTreeMap::<String, usize>::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests {
                            break;
                        }
                        let t = Instant::now();
                        let code = match post(&addr, &bodies[i % bodies.len()]) {
                            Ok(code) => code.to_string(),
                            Err(e) => format!("io: {}", e.kind()),
                        };
                        mine.push(t.elapsed().as_secs_f64() * 1e3);
                        *codes.entry(code).or_default() += 1;
                    }
                    lat.lock().unwrap().extend(mine);
                    let mut all = statuses.lock().unwrap();
                    for (k, v) in codes {
                        *all.entry(k).or_default() += v;
                    }
                });
            }
        });
        let wall = started.elapsed().as_secs_f64();
        let mut l = lat.into_inner().unwrap();
        l.sort_by(f64::total_cmp);
        let statuses = statuses.into_inner().unwrap();
        let errors: usize = statuses
            .iter()
            .filter(|(k, _)| k.as_str() != "200")
            .map(|(_, v)| v)
            .sum();
        rows.push(serde_json::json!({
            "concurrency": c,
            "requests": requests,
            "seconds": wall,
            "requests_per_s": requests as f64 / wall,
            "p50_ms": percentile(&l, 50.0),
            "p90_ms": percentile(&l, 90.0),
            "p99_ms": percentile(&l, 99.0),
            "max_ms": l.last().copied().unwrap_or(f64::NAN),
            "statuses": statuses,
            "errors": errors,
        }));
    }
    let out = serde_json::json!({
        "addr": addr, "k": k, "dim": queries.cols(), "query_vectors": queries.rows(),
        "levels": rows,
    });
    println!("{}", serde_json::to_string(&out).unwrap());
}
