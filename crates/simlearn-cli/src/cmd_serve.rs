//! `simlearn serve`: the index's HTTP search service (simlearn-index's axum service) with its
//! web page; image queries use the index's attached model.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use simlearn_index::serve::{router, serve, Embedder, ServeConfig};
use simlearn_index::Index;

use crate::cmd_search::index_model;

/// Serve an index over HTTP (POST /search, GET /items/{id}, /healthz, /metrics, a web page).
#[derive(clap::Args)]
pub struct Args {
    /// Index folder (simlearn index build).
    #[arg(long, value_name = "DIR")]
    index: PathBuf,
    /// Address to listen on (port 0: any free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Largest request body in bytes (larger: 413).
    #[arg(long, default_value_t = ServeConfig::default().body_limit)]
    body_limit: usize,
    /// Longest a search may take, in milliseconds (then 503).
    #[arg(long, default_value_t = ServeConfig::default().timeout.as_millis() as u64)]
    timeout_ms: u64,
    /// Requests handled at once.
    #[arg(long, default_value_t = ServeConfig::default().concurrency)]
    concurrency: usize,
    /// Neighbours when a request names no k.
    #[arg(long, default_value_t = ServeConfig::default().default_k)]
    default_k: usize,
    /// HNSW candidate-list size (default: the index's).
    #[arg(long, value_name = "N")]
    ef_search: Option<usize>,
    /// Worker threads of the service (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

pub fn run(args: Args) -> Result<()> {
    if args.body_limit == 0 || args.concurrency == 0 || args.default_k == 0 || args.timeout_ms == 0
    {
        bail!("--body-limit, --concurrency, --default-k and --timeout-ms must be at least 1");
    }
    let mut index = Index::load(&args.index)?;
    if let Some(ef) = args.ef_search {
        if ef == 0 {
            bail!("--ef-search must be at least 1");
        }
        index.set_ef_search(ef);
    }
    let embedder: Option<Embedder> = if index.manifest().model.is_some() {
        let model = Mutex::new(index_model(&index, &args.index)?);
        Some(Arc::new(move |bytes: &[u8]| {
            let m = model.lock().unwrap_or_else(|e| e.into_inner());
            m.embed_bytes(bytes)
        }))
    } else {
        None
    };
    let cfg = ServeConfig {
        body_limit: args.body_limit,
        timeout: Duration::from_millis(args.timeout_ms),
        concurrency: args.concurrency,
        default_k: args.default_k,
    };
    let (items, dim) = (index.len(), index.dim());
    let image_queries = embedder.is_some();
    let app = router(Arc::new(index), embedder, cfg);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        rt.worker_threads(args.threads);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("--addr {}: cannot listen", args.addr))?;
        let local = listener.local_addr()?;
        println!(
            "serving {} ({items} items, dim {dim}{}) on http://{local}/  (Ctrl-C stops)",
            args.index.display(),
            if image_queries { ", image queries" } else { "" }
        );
        std::io::stdout().flush()?;
        serve(listener, app, shutdown_signal())
            .await
            .context("the service stopped")?;
        eprintln!("stopped");
        Ok(())
    })
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
