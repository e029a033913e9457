//! HNSW build time, recall@k against exact ground truth, and queries/s at 1 and 2 threads, of
//! a `simlearn-index` HNSW index (usearch underneath, exact re-scoring on top): the Rust half
//! of `bench/ann_vs_faiss.py`, which runs faiss `IndexHNSWFlat` on the same files and
//! parameters and prints both side by side.
//!
//! ```text
//! cargo bench -p simlearn-index --bench ann --no-run   # then run the printed binary:
//! ann --base B.npy --queries Q.npy --gt GT.npy --k 10 --m 32 --ef-construction 200 \
//!     --ef-search 32,64,128,256 --threads 1,2
//! ```
//! `GT.npy` holds the exact top-k row numbers of every query, flattened (i64, queries × k).
//! Prints one JSON object. Peak memory is the process's VmHWM (Linux).

use std::path::PathBuf;
use std::time::Instant;

use simlearn_eval::io::{read_class_labels, read_embeddings};
use simlearn_eval::Similarity;
use simlearn_index::{BuildOptions, HnswParams, Index, Kind};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|x| x.trim().parse().expect("a number"))
        .collect()
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if arg(&args, "--base").is_none() {
        // `cargo bench` without arguments: nothing to measure.
        eprintln!("usage: ann --base B.npy --queries Q.npy --gt GT.npy [--k 10] [--m 32] [--ef-construction 200] [--ef-search 32,64,128,256] [--threads 1,2]");
        return;
    }
    let path = |n: &str| PathBuf::from(arg(&args, n).unwrap_or_else(|| panic!("{n} is required")));
    let k: usize = arg(&args, "--k").map_or(10, |s| s.parse().unwrap());
    let m: usize = arg(&args, "--m").map_or(32, |s| s.parse().unwrap());
    let efc: usize = arg(&args, "--ef-construction").map_or(200, |s| s.parse().unwrap());
    let efs = list(&arg(&args, "--ef-search").unwrap_or("32,64,128,256".into()));
    let threads = list(&arg(&args, "--threads").unwrap_or("1,2".into()));
    let build_threads: usize = arg(&args, "--build-threads").map_or(2, |s| s.parse().unwrap());

    let base = read_embeddings(&path("--base"), None).unwrap();
    let queries = read_embeddings(&path("--queries"), None).unwrap();
    let gt = read_class_labels(&path("--gt")).unwrap();
    assert_eq!(
        gt.len(),
        queries.rows() * k,
        "GT.npy must hold queries × k ids"
    );
    let (n, dim) = (base.rows(), base.cols());

    let opts = BuildOptions {
        kind: Kind::Hnsw,
        similarity: Similarity::Cosine,
        hnsw: HnswParams {
            m,
            ef_construction: efc,
            ef_search: efs[0],
        },
        ..BuildOptions::default()
    };
    let pool = |t: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
    };
    let started = Instant::now();
    let mut index = pool(build_threads)
        .install(|| Index::build(base, None, None, &opts, &|_, _| {}))
        .unwrap();
    let build_s = started.elapsed().as_secs_f64();
    let graph_mb = index.graph_memory() as f64 / 1e6;

    let mut rows = Vec::new();
    for &ef in &efs {
        index.set_ef_search(ef);
        let mut recall = f64::NAN;
        let mut qps = serde_json::Map::new();
        for &t in &threads {
            let p = pool(t);
            // One untimed pass warms caches and the graph's thread contexts.
            let _ = p.install(|| index.search(&queries, k)).unwrap();
            let started = Instant::now();
            let hits = p.install(|| index.search(&queries, k)).unwrap();
            let s = started.elapsed().as_secs_f64();
            qps.insert(format!("{t}"), serde_json::json!(queries.rows() as f64 / s));
            let found: usize = hits
                .iter()
                .enumerate()
                .map(|(q, h)| {
                    let want = &gt[q * k..(q + 1) * k];
                    h.iter().filter(|x| want.contains(&x.id)).count()
                })
                .sum();
            recall = found as f64 / gt.len() as f64;
        }
        rows.push(serde_json::json!({"ef_search": ef, "recall": recall, "qps": qps}));
    }
    let out = serde_json::json!({
        "library": "simlearn-index (usearch HNSW + exact re-scoring)",
        "n": n, "dim": dim, "queries": queries.rows(), "k": k,
        "m": m, "ef_construction": efc, "build_threads": build_threads,
        "build_s": build_s, "graph_mb": graph_mb,
        "search": rows,
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{}", serde_json::to_string(&out).unwrap());
}
