//! The HTTP service on 127.0.0.1: every documented bad-input code, payload confinement, a
//! bounded concurrent burst without errors, metrics, and graceful shutdown.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use simlearn_eval::Matrix;
use simlearn_index::serve::{router, serve, Embedder, ServeConfig};
use simlearn_index::{BuildOptions, Index};

/// One HTTP/1.1 request on a fresh connection; returns (status, body).
fn request(addr: SocketAddr, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body and close; ignore write errors.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json(addr: SocketAddr, body: &str) -> (u16, serde_json::Value) {
    let (s, b) = request(addr, "POST", "/search", "application/json", body.as_bytes());
    (
        s,
        serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    )
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// An index of 40 rows (dim 3, labels, payload PNG files for rows 0..39, row 39 pointing
/// outside the image root) served with a body limit of 4 KiB.
fn start(embedder: Option<Embedder>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("idx/images");
    std::fs::write(dir.path().join("secret.png"), b"outside").unwrap();
    let n = 40;
    let data: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let mut paths: Vec<String> = (0..n).map(|i| format!("{i}.png")).collect();
    paths[39] = "../../secret.png".into();
    let mut idx = Index::build(
        Matrix::new(n, 3, data).unwrap(),
        Some((0..n as i64).map(|i| i % 4).collect()),
        Some(paths),
        &BuildOptions {
            image_root: Some("images".into()),
            ..BuildOptions::default()
        },
        &|_, _| {},
    )
    .unwrap();
    idx.save(&dir.path().join("idx")).unwrap();
    std::fs::create_dir_all(&root).unwrap();
    for i in 0..n - 1 {
        std::fs::write(root.join(format!("{i}.png")), b"\x89PNG fake").unwrap();
    }
    let idx = Arc::new(Index::load(&dir.path().join("idx")).unwrap());
    let cfg = ServeConfig {
        body_limit: 4096,
        concurrency: 8,
        ..ServeConfig::default()
    };
    let app = router(idx, embedder, cfg);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (atx, arx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            atx.send(l.local_addr().unwrap()).unwrap();
            serve(l, app, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = arx.recv().unwrap();
    Server {
        addr,
        stop: Some(tx),
        thread: Some(thread),
        _dir: dir,
    }
}

#[test]
fn documented_codes_for_bad_input() {
    // A stand-in model: "images" are 3 little-endian f32; anything else is undecodable.
    let embed: Embedder = Arc::new(|b: &[u8]| {
        if b.len() != 12 {
            return Err("cannot decode image: unknown format".to_string());
        }
        Ok(b.chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    });
    let srv = start(Some(embed));
    let a = srv.addr;

    let (s, v) = json(a, r#"{"vector": [0.1, 0.2, 0.3], "k": 5}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["hits"].as_array().unwrap().len(), 5);
    assert!(
        v["hits"][0]["id"].is_i64()
            && v["hits"][0]["score"].is_f64()
            && v["hits"][0]["label"].is_i64()
    );
    let (s, v) = json(a, r#"{"id": 3, "k": 4}"#);
    assert_eq!(s, 200);
    assert!(v["hits"].as_array().unwrap().iter().all(|h| h["id"] != 3));

    // 422: wrong dimension, non-finite, k out of range.
    let cases = [
        (r#"{"vector": [0.1, 0.2]}"#, "dimension"),
        (r#"{"vector": [0.1, 0.2, 1e39]}"#, "NaN or infinity"),
        (r#"{"vector": [0.1, 0.2, 0.3], "k": 0}"#, "k = 0"),
        (r#"{"vector": [0.1, 0.2, 0.3], "k": 41}"#, "out of range"),
        (r#"{"vector": []}"#, ""),
    ];
    for (body, want) in cases {
        let (s, v) = json(a, body);
        assert_eq!(s, 422, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
        assert_eq!(v["status"], 422);
    }
    // 400: not JSON, NaN (not JSON either), neither/both of vector and id, unknown fields.
    for body in [
        "{",
        r#"{"vector": [NaN, 0, 0]}"#,
        r#"{"k": 3}"#,
        r#"{"vector": [1,2,3], "id": 1}"#,
        r#"{"vec": [1,2,3]}"#,
    ] {
        let (s, v) = json(a, body);
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].is_string());
    }
    // 404: unknown id, unknown route.
    assert_eq!(json(a, r#"{"id": 999}"#).0, 404);
    assert_eq!(request(a, "GET", "/nope", "text/plain", b"").0, 404);
    // 415: neither JSON nor an image.
    assert_eq!(request(a, "POST", "/search", "text/plain", b"hello").0, 415);
    // 413: over the 4 KiB limit, with and without a JSON look.
    let big = format!(r#"{{"vector": [{}]}}"#, vec!["0.5"; 3000].join(","));
    let (s, b) = request(a, "POST", "/search", "application/json", big.as_bytes());
    assert_eq!(s, 413, "{b}");
    assert!(b.contains("limit"));
    assert_eq!(
        request(a, "POST", "/search", "image/png", &vec![0u8; 10_000]).0,
        413
    );
    // Images: a decodable one answers, an undecodable one is 422.
    let img: Vec<u8> = [0.1f32, 0.2, 0.3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (s, b) = request(a, "POST", "/search?k=3", "image/png", &img);
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["hits"].as_array().unwrap().len(), 3);
    let same = json(a, r#"{"vector": [0.1, 0.2, 0.3], "k": 3}"#).1;
    assert_eq!(
        v["hits"], same["hits"],
        "an image query embeds and searches like its vector"
    );
    let (s, b) = request(a, "POST", "/search", "image/jpeg", b"this is not an image");
    assert_eq!(s, 422, "{b}");
    assert!(b.contains("decode"));

    // Payloads: served from inside the root only.
    let (s, b) = request(a, "GET", "/items/5", "", b"");
    assert_eq!((s, b.as_str()), (200, "\u{fffd}PNG fake"));
    assert_eq!(request(a, "GET", "/items/39", "", b"").0, 403);
    assert_eq!(request(a, "GET", "/items/1000", "", b"").0, 404);
    assert_eq!(request(a, "GET", "/items/abc", "", b"").0, 400);

    let (s, b) = request(a, "GET", "/healthz", "", b"");
    assert_eq!(s, 200);
    assert!(b.contains("\"items\":40"), "{b}");
    let (s, b) = request(a, "GET", "/", "", b"");
    assert!(s == 200 && b.contains("<title>simlearn search</title>"));
    let (_, m) = request(a, "GET", "/metrics", "", b"");
    assert!(
        m.contains("simlearn_requests_total{route=\"/search\",status=\"422\"} 6"),
        "{m}"
    );
    assert!(m.contains("simlearn_request_duration_ms_count{route=\"/search\"}"));
}

#[test]
fn image_queries_without_a_model_are_refused() {
    let srv = start(None);
    let (s, b) = request(srv.addr, "POST", "/search", "image/png", b"\x89PNG");
    assert_eq!(s, 422);
    assert!(b.contains("no model"), "{b}");
}

#[test]
fn bounded_concurrent_burst_gets_no_errors_then_shuts_down() {
    let mut srv = start(None);
    let a = srv.addr;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..25 {
                    let body = format!(
                        r#"{{"vector": [{}, 0.25, -0.5], "k": 10}}"#,
                        (t * 25 + i) as f32 / 400.0
                    );
                    let (s, v) = json(a, &body);
                    assert_eq!(s, 200, "{v}");
                    assert_eq!(v["hits"].as_array().unwrap().len(), 10);
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(ok, 400);
    let (_, m) = request(a, "GET", "/metrics", "", b"");
    assert!(
        m.contains("simlearn_requests_total{route=\"/search\",status=\"200\"} 400"),
        "{m}"
    );
    // Graceful shutdown: the server future returns and the port stops answering.
    srv.stop.take().unwrap().send(()).unwrap();
    srv.thread.take().unwrap().join().unwrap();
    assert!(TcpStream::connect(a).is_err());
}
