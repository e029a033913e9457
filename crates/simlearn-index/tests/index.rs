//! The index artifact: exact search against brute force, save/load bit-for-bit, refusal of
//! corrupted files, appends, and HNSW recall.

use std::path::Path;

use simlearn_eval::knn::exact_score;
use simlearn_eval::{Matrix, Similarity};
use simlearn_index::{BuildOptions, HnswParams, Index, Kind, Storage};

fn noop(_: usize, _: usize) {}

/// A small LCG so the fixtures need no RNG crate and are the same everywhere.
fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

/// Rows with many exact ties: small integer coordinates, and rows 10..20 repeat rows 0..10.
fn tied_rows() -> Matrix {
    let d = 4;
    let mut data: Vec<f32> = lcg(7, 10 * d).iter().map(|v| (v * 3.0).round()).collect();
    data.extend_from_within(0..10 * d);
    data.extend(lcg(8, 20 * d).iter().map(|v| (v * 2.0).round()));
    // A zero row (cosine 0 with everything).
    data.extend([0.0; 4]);
    Matrix::new(data.len() / d, d, data).unwrap()
}

fn brute(
    g: &Matrix,
    q: &[f32],
    sim: Similarity,
    k: usize,
    exclude: Option<usize>,
) -> Vec<(usize, f32)> {
    let mut s: Vec<(usize, f64)> = (0..g.rows())
        .filter(|&i| Some(i) != exclude)
        .map(|i| (i, exact_score(sim, q, g.row(i))))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.into_iter().take(k).map(|(i, v)| (i, v as f32)).collect()
}

#[test]
fn exact_search_equals_brute_force_with_ties_and_duplicates() {
    let g = tied_rows();
    for sim in [Similarity::Cosine, Similarity::Dot, Similarity::SqEuclidean] {
        let opts = BuildOptions {
            similarity: sim,
            ..BuildOptions::default()
        };
        let idx = Index::build(g.clone(), None, None, &opts, &noop).unwrap();
        let queries = Matrix::new(6, 4, {
            let mut q: Vec<f32> = g.row(3).to_vec();
            q.extend(g.row(12));
            q.extend(lcg(9, 16).iter().map(|v| (v * 3.0).round()));
            q
        })
        .unwrap();
        for k in [1, 5, 17, g.rows()] {
            let res = idx.search(&queries, k).unwrap();
            for (qi, hits) in res.iter().enumerate() {
                let want = brute(&g, queries.row(qi), sim, k, None);
                let got: Vec<(usize, f32)> =
                    hits.iter().map(|h| (h.id as usize, h.score)).collect();
                assert_eq!(got, want, "{sim:?} k={k} query {qi}");
            }
        }
        // By id: the item itself is left out, its exact duplicate (row 3 + 10) is kept first
        // among equals.
        for id in [3i64, 13, 40] {
            let hits = idx.search_id(id, 8).unwrap();
            let want = brute(&g, g.row(id as usize), sim, 8, Some(id as usize));
            let got: Vec<(usize, f32)> = hits.iter().map(|h| (h.id as usize, h.score)).collect();
            assert_eq!(got, want, "{sim:?} id {id}");
            assert!(hits.iter().all(|h| h.id != id));
        }
        if sim == Similarity::SqEuclidean {
            let hits = idx.search_id(3, 1).unwrap();
            assert_eq!(
                (hits[0].id, hits[0].score),
                (13, 0.0),
                "the duplicate is the nearest"
            );
        }
    }
}

#[test]
fn bad_queries_are_errors_not_panics() {
    let idx = Index::build(tied_rows(), None, None, &BuildOptions::default(), &noop).unwrap();
    let n = idx.len();
    let msg = |r: Result<Vec<Vec<simlearn_index::Hit>>, simlearn_index::IndexError>| {
        r.err().unwrap().to_string()
    };
    assert!(msg(idx.search(&Matrix::new(1, 3, vec![1.0; 3]).unwrap(), 2)).contains("dimension 3"));
    assert!(msg(idx.search(&Matrix::new(1, 4, vec![f32::NAN; 4]).unwrap(), 2)).contains("NaN"));
    assert!(msg(idx.search(&Matrix::new(1, 4, vec![1.0; 4]).unwrap(), 0)).contains("k = 0"));
    assert!(
        msg(idx.search(&Matrix::new(1, 4, vec![1.0; 4]).unwrap(), n + 1)).contains("out of range")
    );
    assert!(idx
        .search_id(n as i64 + 5, 2)
        .err()
        .unwrap()
        .to_string()
        .contains("no item with id"));
    assert!(
        idx.search_id(0, n).is_err(),
        "leaving the item out leaves n - 1"
    );
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn labelled(kind: Kind, storage: Storage) -> Index {
    let n = 300;
    let d = 16;
    let m = Matrix::new(n, d, lcg(11, n * d)).unwrap();
    let labels = (0..n as i64).map(|i| i % 7).collect();
    let paths = (0..n)
        .map(|i| format!("class{}/img{i}.png", i % 7))
        .collect();
    let opts = BuildOptions {
        kind,
        storage,
        hnsw: HnswParams {
            m: 8,
            ef_construction: 64,
            ef_search: 64,
        },
        image_root: Some("images".into()),
        ..BuildOptions::default()
    };
    Index::build(m, Some(labels), Some(paths), &opts, &noop).unwrap()
}

#[test]
fn save_load_round_trips_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.toml"), "[model]\n").unwrap();
    std::fs::write(run.join("best.safetensors"), [1u8, 2, 3, 250]).unwrap();
    for (kind, storage) in [
        (Kind::Exact, Storage::F32),
        (Kind::Hnsw, Storage::F32),
        (Kind::Hnsw, Storage::F16),
    ] {
        let mut a = labelled(kind, storage);
        a.attach_model(&run, &["config.toml", "best.safetensors"])
            .unwrap();
        let da = tmp.path().join(format!("a-{kind:?}-{storage:?}"));
        let db = tmp.path().join(format!("b-{kind:?}-{storage:?}"));
        a.save(&da).unwrap();
        let mut b = Index::load(&da).unwrap();
        assert_eq!(b.manifest(), a.manifest());
        let bits = |m: &Matrix| m.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(b.vectors()), bits(a.vectors()));
        assert_eq!(b.labels(), a.labels());
        assert_eq!(b.paths(), a.paths());
        assert_eq!(b.ids(), a.ids());
        b.save(&db).unwrap();
        let (fa, fb) = (files(&da), files(&db));
        assert_eq!(fa.len(), fb.len());
        for ((na, ca), (nb, cb)) in fa.iter().zip(&fb) {
            assert_eq!(na, nb);
            assert!(ca == cb, "{kind:?}: {na} differs after load + save");
        }
        assert_eq!(
            std::fs::read(db.join("model/best.safetensors")).unwrap(),
            [1, 2, 3, 250]
        );
        let q = a.vectors().select_rows(&[0, 5, 9]);
        assert_eq!(a.search(&q, 10).unwrap(), b.search(&q, 10).unwrap());
        // Saving over an existing index replaces its files, keeps the user's own, and leaves
        // no temp folders behind.
        std::fs::create_dir_all(da.join("images")).unwrap();
        std::fs::write(da.join("images/x.png"), b"mine").unwrap();
        b.save(&da).unwrap();
        assert_eq!(std::fs::read(da.join("images/x.png")).unwrap(), b"mine");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.iter().all(|n| !n.to_string_lossy().starts_with('.')),
            "{left:?}"
        );
    }
}

#[test]
fn corrupted_files_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("idx");
    labelled(Kind::Hnsw, Storage::F32).save(&dir).unwrap();
    let fresh = files(&dir);
    let restore = || {
        for (n, c) in &fresh {
            std::fs::write(dir.join(n), c).unwrap();
        }
    };
    let err = |what: &str| match Index::load(&dir) {
        Ok(_) => panic!("{what}: a corrupted index loaded"),
        Err(e) => e.to_string(),
    };
    for name in [
        "vectors.npy",
        "labels.npy",
        "ids.npy",
        "paths.txt",
        "hnsw.usearch",
    ] {
        // One flipped bit in the middle.
        let mut c = std::fs::read(dir.join(name)).unwrap();
        let mid = c.len() / 2;
        c[mid] ^= 0x10;
        std::fs::write(dir.join(name), &c).unwrap();
        let e = err(name);
        assert!(e.contains(name) && e.contains("corrupted"), "{name}: {e}");
        restore();
        // Truncated.
        std::fs::write(dir.join(name), &c[..c.len() - 1]).unwrap();
        let e = err(name);
        assert!(e.contains(name) && e.contains("bytes"), "{name}: {e}");
        restore();
        // Missing.
        std::fs::remove_file(dir.join(name)).unwrap();
        let e = err(name);
        assert!(e.contains(name), "{name}: {e}");
        restore();
    }
    Index::load(&dir).expect("restored index loads");
    let m = dir.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, &text[..text.len() / 2]).unwrap();
    assert!(err("manifest").contains("manifest.json"));
    std::fs::write(&m, text.replace("\"version\": 1", "\"version\": 99")).unwrap();
    assert!(err("version").contains("version 99"));
    std::fs::write(&m, &text).unwrap();
    // Saving refuses to replace a folder that is not an index.
    let other = tmp.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    let e = labelled(Kind::Exact, Storage::F32)
        .save(&other)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("not a simlearn index"), "{e}");
    assert_eq!(
        std::fs::read_to_string(other.join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn add_appends_like_building_at_once() {
    let n = 200;
    let d = 8;
    let all = Matrix::new(n, d, lcg(21, n * d)).unwrap();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 5).collect();
    for kind in [Kind::Exact, Kind::Hnsw] {
        let opts = BuildOptions {
            kind,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 200,
                ef_search: 200,
            },
            ..BuildOptions::default()
        };
        let whole = Index::build(all.clone(), Some(labels.clone()), None, &opts, &noop).unwrap();
        let first: Vec<usize> = (0..120).collect();
        let rest: Vec<usize> = (120..n).collect();
        let mut part = Index::build(
            all.select_rows(&first),
            Some(labels[..120].to_vec()),
            None,
            &opts,
            &noop,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        part.save(&tmp.path().join("i")).unwrap();
        let mut part = Index::load(&tmp.path().join("i")).unwrap();
        part.add(&all.select_rows(&rest), Some(&labels[120..]), None, &noop)
            .unwrap();
        assert_eq!(part.ids(), whole.ids());
        assert_eq!(part.labels(), whole.labels());
        assert!(
            part.add(&all.select_rows(&rest), None, None, &noop)
                .is_err(),
            "labels required"
        );
        assert!(part
            .add(
                &Matrix::new(1, 3, vec![0.0; 3]).unwrap(),
                Some(&[1]),
                None,
                &noop
            )
            .is_err());
        let q = all.select_rows(&[0, 50, 150, 199]);
        let (got, want) = (part.search(&q, 10).unwrap(), whole.search(&q, 10).unwrap());
        if kind == Kind::Exact {
            assert_eq!(got, want);
        } else {
            // usearch inserts in parallel, so two HNSW graphs of the same vectors differ and
            // either may miss a neighbour: the appended graph must still find almost all of
            // the exact top 10 (rescored hits, so every hit it returns has its exact score).
            let exact = {
                let mut o = opts.clone();
                o.kind = Kind::Exact;
                Index::build(all.clone(), Some(labels.clone()), None, &o, &noop)
                    .unwrap()
                    .search(&q, 10)
                    .unwrap()
            };
            let found: usize = got
                .iter()
                .zip(&exact)
                .map(|(g, e)| g.iter().filter(|h| e.iter().any(|x| x.id == h.id)).count())
                .sum();
            assert!(found >= 38, "appended HNSW recall {found}/40: {got:?}");
            for hits in got.iter().chain(&want) {
                assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
            }
        }
    }
}

#[test]
fn hnsw_recall_against_exact() {
    let n = 3000;
    let d = 24;
    let m = Matrix::new(n, d, lcg(31, n * d)).unwrap();
    let q = Matrix::new(100, d, lcg(32, 100 * d)).unwrap();
    let exact = Index::build(m.clone(), None, None, &BuildOptions::default(), &noop).unwrap();
    let truth = exact.search(&q, 10).unwrap();
    for storage in [Storage::F32, Storage::F16, Storage::I8] {
        let opts = BuildOptions {
            kind: Kind::Hnsw,
            storage,
            ..BuildOptions::default()
        };
        let h = Index::build(m.clone(), None, None, &opts, &noop).unwrap();
        let got = h.search(&q, 10).unwrap();
        let mut found = 0;
        for (t, g) in truth.iter().zip(&got) {
            found += g.iter().filter(|x| t.iter().any(|y| y.id == x.id)).count();
            // Scores are always the exact ones, whatever the graph stores.
            for x in g {
                let want = exact_score(
                    Similarity::Cosine,
                    q.row(truth.iter().position(|r| std::ptr::eq(r, t)).unwrap()),
                    m.row(x.id as usize),
                ) as f32;
                assert_eq!(x.score, want);
            }
        }
        let recall = found as f64 / 1000.0;
        assert!(recall >= 0.95, "{storage:?}: recall@10 {recall}");
    }
    let bad = BuildOptions {
        kind: Kind::Hnsw,
        storage: Storage::I8,
        similarity: Similarity::Dot,
        ..BuildOptions::default()
    };
    assert!(Index::build(m, None, None, &bad, &noop).is_err());
}

/// Far more concurrent callers than usearch has thread contexts (a service's blocking pool):
/// every search succeeds and equals the same search made alone. Before the graph queued its
/// callers, searches that found no free context failed.
#[test]
fn concurrent_hnsw_searches_from_many_threads_all_succeed() {
    let (n, d) = (2000, 16);
    let dir = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        kind: Kind::Hnsw,
        ..BuildOptions::default()
    };
    let mut built = Index::build(
        Matrix::new(n, d, lcg(41, n * d)).unwrap(),
        None,
        None,
        &opts,
        &noop,
    )
    .unwrap();
    built.save(dir.path()).unwrap();
    // Loaded, as `simlearn serve` has it.
    let index = Index::load(dir.path()).unwrap();
    let q = Matrix::new(64, d, lcg(42, 64 * d)).unwrap();
    let alone = index.search(&q, 10).unwrap();
    let threads = 48;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (index, q) = (&index, &q);
                s.spawn(move || {
                    (0..q.rows())
                        .map(|r| {
                            let row = (r + t) % q.rows();
                            let one = Matrix::new(1, d, q.row(row).to_vec()).unwrap();
                            (row, index.search(&one, 10))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (row, got) in h.join().unwrap() {
                let got = got.expect("a concurrent search failed");
                assert_eq!(got[0], alone[row]);
            }
        }
    });
}

/// The few-query scan (≤ `SCAN_MAX_QUERIES` queries) and the batch engine (more) give the same
/// neighbours, equal to brute force: for every similarity, on tied rows with duplicates and a
/// zero row, and on a random gallery larger than one scan chunk, with and without `search_id`'s
/// exclusion.
#[test]
fn scan_and_batch_engine_agree_with_brute_force() {
    use simlearn_index::scan::SCAN_MAX_QUERIES;
    let random = Matrix::new(9000, 20, lcg(51, 9000 * 20)).unwrap();
    for g in [tied_rows(), random] {
        let d = g.cols();
        let nq = SCAN_MAX_QUERIES + 4;
        // Queries: the first rows (exact duplicates of gallery rows), then random ones.
        let mut qd: Vec<f32> = g.data()[..4 * d].to_vec();
        qd.extend(lcg(52, (nq - 4) * d));
        let q = Matrix::new(nq, d, qd).unwrap();
        for sim in [Similarity::Cosine, Similarity::Dot, Similarity::SqEuclidean] {
            let opts = BuildOptions {
                similarity: sim,
                ..BuildOptions::default()
            };
            let index = Index::build(g.clone(), None, None, &opts, &noop).unwrap();
            let k = 7;
            let batch = index.search(&q, k).unwrap();
            for (r, batch_r) in batch.iter().enumerate() {
                let one = Matrix::new(1, d, q.row(r).to_vec()).unwrap();
                let scanned = &index.search(&one, k).unwrap()[0];
                let want = brute(&g, q.row(r), sim, k, None);
                let ids =
                    |h: &[simlearn_index::Hit]| h.iter().map(|x| x.id as usize).collect::<Vec<_>>();
                let want_ids: Vec<usize> = want.iter().map(|x| x.0).collect();
                assert_eq!(ids(scanned), want_ids, "{sim:?} query {r}: scan");
                assert_eq!(ids(batch_r), want_ids, "{sim:?} query {r}: batch");
                for (h, w) in scanned.iter().zip(&want) {
                    assert!(
                        (h.score - w.1).abs() <= 1e-5 * w.1.abs().max(1.0),
                        "{sim:?}"
                    );
                }
            }
            // search_id leaves the item out (its duplicates stay).
            let by_id = index.search_id(3, k).unwrap();
            let want: Vec<usize> = brute(&g, g.row(3), sim, k, Some(3))
                .iter()
                .map(|x| x.0)
                .collect();
            assert_eq!(
                by_id.iter().map(|x| x.id as usize).collect::<Vec<_>>(),
                want,
                "{sim:?} id 3"
            );
        }
    }
}
