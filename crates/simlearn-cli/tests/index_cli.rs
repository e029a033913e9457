//! End-to-end tests of `simlearn index build|add`, `simlearn search` and `simlearn serve`: the
//! built binary on small generated files in a temp dir.

mod common;

use common::{fails_with, json_ok, ok, simlearn};
use serde_json::Value;
use simlearn_eval::io::{write_npy_f32, write_npy_i64};
use simlearn_eval::Matrix;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const N: usize = 40;
const D: usize = 8;

fn dir(name: &str) -> PathBuf {
    common::dir("index-cli", name)
}

/// Deterministic pseudo-random rows in [-1, 1), with rows 5 and 17 and rows 9 and 30
/// exact duplicates (ties).
fn data() -> Vec<f32> {
    let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v: Vec<f32> = (0..N * D)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    for (a, b) in [(5, 17), (9, 30)] {
        let row: Vec<f32> = v[a * D..(a + 1) * D].to_vec();
        v[b * D..(b + 1) * D].copy_from_slice(&row);
    }
    v
}

fn npy(d: &Path, name: &str, rows: usize, cols: usize, data: &[f32]) -> PathBuf {
    let p = d.join(name);
    write_npy_f32(&p, &Matrix::new(rows, cols, data.to_vec()).unwrap()).unwrap();
    p
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Brute-force top-k by cosine, ties by the lower id, `skip` left out.
fn brute(v: &[f32], q: &[f32], k: usize, skip: Option<usize>) -> Vec<(i64, f64)> {
    let mut s: Vec<(i64, f64)> = (0..N)
        .filter(|&i| Some(i) != skip)
        .map(|i| (i as i64, cosine(q, &v[i * D..(i + 1) * D])))
        .collect();
    s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    s.truncate(k);
    s
}

fn hits(q: &Value) -> Vec<(i64, f64)> {
    q["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["id"].as_i64().unwrap(), h["score"].as_f64().unwrap()))
        .collect()
}

fn same(got: &[(i64, f64)], want: &[(i64, f64)], what: &str) {
    let ids: Vec<i64> = got.iter().map(|h| h.0).collect();
    let want_ids: Vec<i64> = want.iter().map(|h| h.0).collect();
    assert_eq!(ids, want_ids, "{what}");
    for (g, w) in got.iter().zip(want) {
        assert!((g.1 - w.1).abs() < 1e-5, "{what}: {g:?} vs {w:?}");
    }
}

#[test]
fn exact_and_hnsw_search_equal_brute_force() {
    let d = dir("brute");
    let v = data();
    let e = npy(&d, "e.npy", N, D, &v);
    let labels = d.join("l.npy");
    write_npy_i64(&labels, &(0..N as i64).map(|i| i % 4).collect::<Vec<_>>()).unwrap();
    // Queries: a duplicated row (ties between 5 and 17) and two fresh vectors.
    let mut qv: Vec<f32> = v[5 * D..6 * D].to_vec();
    qv.extend((0..2 * D).map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0));
    let q = npy(&d, "q.npy", 3, D, &qv);
    let k = 7;
    for kind in ["exact", "hnsw"] {
        let out = d.join(format!("idx-{kind}"));
        ok(&simlearn(&[
            &"index",
            &"build",
            &"--embeddings",
            &e,
            &"--labels",
            &labels,
            &"--kind",
            &kind,
            &"--out",
            &out,
        ]));
        assert!(out.join("manifest.json").is_file());
        for id in [0usize, 5, 9, 17, 39] {
            let r = json_ok(&simlearn(&[
                &"search",
                &"--index",
                &out,
                &"--id",
                &id.to_string(),
                &"-k",
                &k.to_string(),
                &"--json",
            ]));
            let qs = r["queries"].as_array().unwrap();
            assert_eq!(qs.len(), 1);
            let want = brute(&v, &v[id * D..(id + 1) * D], k, Some(id));
            same(&hits(&qs[0]), &want, &format!("{kind} --id {id}"));
            let h0 = &qs[0]["hits"][0];
            assert_eq!(
                h0["label"].as_i64().unwrap(),
                h0["id"].as_i64().unwrap() % 4
            );
        }
        let r = json_ok(&simlearn(&[
            &"search",
            &"--index",
            &out,
            &"--vector",
            &q,
            &"-k",
            &k.to_string(),
            &"--json",
        ]));
        let qs = r["queries"].as_array().unwrap();
        assert_eq!(qs.len(), 3);
        for (i, qj) in qs.iter().enumerate() {
            let want = brute(&v, &qv[i * D..(i + 1) * D], k, None);
            same(&hits(qj), &want, &format!("{kind} --vector row {i}"));
        }
        // The duplicated pair ties; the lower id comes first.
        assert_eq!(hits(&qs[0])[0].0, 5);
        assert_eq!(hits(&qs[0])[1].0, 17);
    }
    // The table names every column, and a threshold marks matches.
    let t = ok(&simlearn(&[
        &"search",
        &"--index",
        &d.join("idx-exact"),
        &"--id",
        &"5",
        &"-k",
        &"2",
        &"--threshold",
        &"0.99",
    ]));
    let mut lines = t.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["query", "rank", "id", "score", "label", "path", "match"]
    );
    let first = lines.next().unwrap();
    assert!(first.contains(" 17 ") && first.ends_with("match"), "{t}");
    let second = lines.next().unwrap();
    assert!(second.ends_with("no match"), "{t}");
}

#[test]
fn add_then_search_finds_the_new_item() {
    let d = dir("add");
    let v = data();
    let e = npy(&d, "e.npy", N, D, &v);
    let paths = d.join("p.txt");
    let list: String = (0..N).map(|i| format!("img/{i}.png\n")).collect();
    std::fs::write(&paths, list).unwrap();
    let out = d.join("idx");
    ok(&simlearn(&[
        &"index",
        &"build",
        &"--embeddings",
        &e,
        &"--paths",
        &paths,
        &"--kind",
        &"hnsw",
        &"--m",
        &"8",
        &"--out",
        &out,
    ]));
    let new: Vec<f32> = (0..D).map(|i| if i == 3 { 1.0 } else { 0.01 }).collect();
    let ne = npy(&d, "new.npy", 1, D, &new);
    let np = d.join("np.txt");
    std::fs::write(&np, "img/new.png\n").unwrap();
    let s = json_ok(&simlearn(&[
        &"index",
        &"add",
        &"--index",
        &out,
        &"--embeddings",
        &ne,
        &"--paths",
        &np,
        &"--json",
    ]));
    assert_eq!(s["items"], N + 1);
    // Adding without the paths the index has is refused, naming the file.
    fails_with(
        &simlearn(&[&"index", &"add", &"--index", &out, &"--embeddings", &ne]),
        &["new.npy", "paths"],
    );
    let r = json_ok(&simlearn(&[
        &"search",
        &"--index",
        &out,
        &"--vector",
        &ne,
        &"-k",
        &"3",
        &"--json",
    ]));
    let h = &r["queries"][0]["hits"][0];
    assert_eq!(h["id"], N as i64);
    assert_eq!(h["path"], "img/new.png");
    assert!((h["score"].as_f64().unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn bad_inputs_exit_with_one_line_naming_the_file() {
    let d = dir("bad");
    let v = data();
    let e = npy(&d, "e.npy", N, D, &v);
    let out = d.join("idx");
    ok(&simlearn(&[
        &"index",
        &"build",
        &"--embeddings",
        &e,
        &"--out",
        &out,
    ]));
    let q = npy(&d, "wrongdim.npy", 1, D + 1, &[0.5; D + 1]);
    fails_with(
        &simlearn(&[&"search", &"--index", &out, &"--vector", &q]),
        &["wrongdim.npy", "dimension"],
    );
    fails_with(
        &simlearn(&[
            &"index",
            &"build",
            &"--embeddings",
            &d.join("missing.npy"),
            &"--out",
            &d.join("idx2"),
        ]),
        &["missing.npy"],
    );
    fails_with(
        &simlearn(&[&"search", &"--index", &d.join("nowhere"), &"--id", &"1"]),
        &["nowhere"],
    );
    fails_with(
        &simlearn(&[&"search", &"--index", &out, &"--id", &"1000"]),
        &["1000"],
    );
    fails_with(
        &simlearn(&[&"search", &"--index", &out, &"--id", &"1", &"-k", &"0"]),
        &["k = 0"],
    );
    // Labels of the wrong length name the labels file.
    let l = d.join("short.npy");
    write_npy_i64(&l, &[1, 2, 3]).unwrap();
    fails_with(
        &simlearn(&[
            &"index",
            &"build",
            &"--embeddings",
            &e,
            &"--labels",
            &l,
            &"--out",
            &d.join("idx3"),
        ]),
        &["short.npy", "3 labels"],
    );
    // Image queries need a model; the error names the index.
    let img = d.join("x.png");
    std::fs::write(&img, b"not really").unwrap();
    fails_with(
        &simlearn(&[&"search", &"--index", &out, &"--image", &img]),
        &["idx", "no model"],
    );
    // A corrupted index file is refused by name.
    let vp = out.join("vectors.npy");
    let mut bytes = std::fs::read(&vp).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&vp, bytes).unwrap();
    fails_with(
        &simlearn(&[&"search", &"--index", &out, &"--id", &"1"]),
        &["vectors.npy", "corrupted"],
    );
}

fn http(addr: &str, req: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status: u16 = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `simlearn serve` on a free loopback port; the child is killed when dropped.
fn start_serve(index: &Path) -> (Child, String) {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_simlearn"))
            .args(["serve", "--addr", "127.0.0.1:0", "--index"])
            .arg(index)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}

#[test]
fn serve_answers_healthz_and_search() {
    let d = dir("serve");
    let v = data();
    let e = npy(&d, "e.npy", N, D, &v);
    let out = d.join("idx");
    ok(&simlearn(&[
        &"index",
        &"build",
        &"--embeddings",
        &e,
        &"--out",
        &out,
    ]));
    let (mut child, addr) = start_serve(&out);
    let (s, h) = http(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["items"], N);
    assert_eq!(h["dim"], D);
    let q: Vec<f32> = v[3 * D..4 * D].to_vec();
    let body = serde_json::json!({"vector": q, "k": 4}).to_string();
    let (s, r) = http(
        &addr,
        &format!(
            "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(s, 200, "{r}");
    same(&hits(&r), &brute(&v, &q, 4, None), "serve /search");
    let (s, r) = http(
        &addr,
        "POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{\"vector\": [1.0]}",
    );
    assert_eq!(s, 422, "{r}");
    // SIGTERM (as Ctrl-C) stops it gracefully with a zero exit.
    #[cfg(unix)]
    {
        let pid = child.0.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = child.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

/// `classes` folders of `per_class` 40 × 40 PNGs with a colour and stripe period per class.
fn write_images(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(40, 40, |x, y| {
                let stripe = ((x + y + i as u32 * 3) / (2 + c as u32 % 4)) % 2;
                image::Rgb([
                    (c * 40 % 256) as u8,
                    if stripe == 1 { 220 } else { 30 },
                    ((c * 97 + i * 11) % 256) as u8,
                ])
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

#[test]
fn index_of_a_trained_run_answers_image_queries() {
    let d = dir("run");
    let root = d.join("images");
    write_images(&root, 8, 4);
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../simlearn/tests/fixtures/backbones/resnet18_w8.pth");
    let cfg = d.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[data]
source = "images"

[images]
layout = "folder"
root = "{root}"
size = 32
resize = 36
crop = 32
threads = 1

[backbone]
arch = "resnet18"
width = 8
weights = "{weights}"
pooling = "avg"

[model]
output_dim = 16

[loss]
name = "contrastive"

[sampler]
batch_size = 8
samples_per_class = 4

[train]
epochs = 1
seed = 3
"#,
            root = root.display(),
            weights = weights.display()
        ),
    )
    .unwrap();
    let run = d.join("run");
    ok(&simlearn(&[
        &"train",
        &"--config",
        &cfg,
        &"--out",
        &run,
        &"--json",
    ]));
    let idx = d.join("idx");
    let s = json_ok(&simlearn(&[
        &"index",
        &"build",
        &"--run",
        &run,
        &"--images",
        &root,
        &"--out",
        &idx,
        &"--json",
    ]));
    assert_eq!(s["items"], 32);
    assert_eq!(s["dim"], 16);
    assert!(idx.join("model/config.toml").is_file());
    // `simlearn embed --run` defaults to the run's preprocessing (images.resize 36 / crop 32
    // here, not embed's own 256 / 224), so its vectors are the index's, bit for bit.
    let emb = d.join("emb.npy");
    ok(&simlearn(&[
        &"embed",
        &"--run",
        &run,
        &"--images",
        &root,
        &"--out",
        &emb,
        &"--json",
    ]));
    let a = simlearn_eval::io::read_embeddings(&emb, None).unwrap();
    let b = simlearn_eval::io::read_embeddings(&idx.join("vectors.npy"), None).unwrap();
    assert_eq!(a.rows(), 32);
    let bits = |m: &Matrix| m.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    // An indexed image is its own nearest neighbour through the attached model.
    let q = root.join("class03/2.png");
    let r = json_ok(&simlearn(&[
        &"search", &"--index", &idx, &"--image", &q, &"-k", &"3", &"--json",
    ]));
    let h = &r["queries"][0]["hits"][0];
    assert_eq!(h["path"], "class03/2.png", "{r}");
    assert!((h["score"].as_f64().unwrap() - 1.0).abs() < 1e-4, "{r}");
    // The service embeds an image body with the same model.
    let (child, addr) = start_serve(&idx);
    let png = std::fs::read(&q).unwrap();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!(
            "POST /search?k=3 HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            png.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&png).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    let v: Value = serde_json::from_str(buf.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(v["hits"][0]["path"], "class03/2.png", "{v}");
    assert_eq!(v["hits"][0]["id"], h["id"]);
    drop(child);
    // An undecodable image names the file.
    let bad = d.join("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    fails_with(
        &simlearn(&[&"search", &"--index", &idx, &"--image", &bad]),
        &["bad.png", "decode"],
    );
}

#[test]
fn export_writes_every_row_to_parquet_bit_for_bit() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    let d = dir("export");
    let v = data();
    let e = npy(&d, "e.npy", N, D, &v);
    let labels = d.join("l.txt");
    std::fs::write(
        &labels,
        (0..N).map(|i| format!("{}\n", i % 7)).collect::<String>(),
    )
    .unwrap();
    let paths = d.join("p.txt");
    std::fs::write(
        &paths,
        (0..N)
            .map(|i| format!("c{}/{i}.png\n", i % 7))
            .collect::<String>(),
    )
    .unwrap();
    let idx = d.join("idx");
    ok(&simlearn(&[
        &"index",
        &"build",
        &"--embeddings",
        &e,
        &"--labels",
        &labels,
        &"--paths",
        &paths,
        &"--out",
        &idx,
    ]));
    // Ids that are not row numbers after an add: rows 40 and 41.
    let extra: Vec<f32> = (0..2 * D).map(|i| i as f32 * 0.25 - 1.0).collect();
    let ee = npy(&d, "extra.npy", 2, D, &extra);
    let el = d.join("el.txt");
    std::fs::write(&el, "3\n4\n").unwrap();
    let ep = d.join("ep.txt");
    std::fs::write(&ep, "x/a.png\nx/b.png\n").unwrap();
    ok(&simlearn(&[
        &"index",
        &"add",
        &"--index",
        &idx,
        &"--embeddings",
        &ee,
        &"--labels",
        &el,
        &"--paths",
        &ep,
    ]));
    let pq = d.join("rows.parquet");
    // Row groups of 16: the 42 rows span three.
    let s = json_ok(&simlearn(&[
        &"index",
        &"export",
        &"--index",
        &idx,
        &"--parquet",
        &pq,
        &"--row-group",
        &"16",
        &"--json",
    ]));
    assert_eq!(s["rows"], 42);
    assert_eq!(s["dim"], D);

    let file = std::fs::File::open(&pq).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    assert_eq!(builder.metadata().num_row_groups(), 3);
    let meta = builder.schema().metadata().clone();
    assert_eq!(meta["simlearn.similarity"], "cosine");
    assert_eq!(meta["simlearn.dim"], D.to_string());
    let names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["id", "vector", "label", "path"]);
    let (mut ids, mut vecs, mut labs, mut pths) = (
        Vec::<i64>::new(),
        Vec::<f32>::new(),
        Vec::<i64>::new(),
        Vec::<String>::new(),
    );
    for batch in builder.build().unwrap() {
        let b = batch.unwrap();
        ids.extend(b.column(0).as_primitive::<Int64Type>().values());
        let list = b.column(1).as_fixed_size_list();
        assert_eq!(list.value_length() as usize, D);
        vecs.extend(list.values().as_primitive::<Float32Type>().values());
        labs.extend(b.column(2).as_primitive::<Int64Type>().values());
        pths.extend(
            b.column(3)
                .as_string::<i32>()
                .iter()
                .map(|p| p.unwrap().to_string()),
        );
    }
    assert_eq!(ids, (0..42).collect::<Vec<i64>>());
    let want: Vec<u32> = v.iter().chain(&extra).map(|x| x.to_bits()).collect();
    assert_eq!(vecs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
    let mut want_l: Vec<i64> = (0..N as i64).map(|i| i % 7).collect();
    want_l.extend([3, 4]);
    assert_eq!(labs, want_l);
    assert_eq!(pths[7], "c0/7.png");
    assert_eq!(pths[41], "x/b.png");

    // Errors: a missing index names it; an unwritable destination names the file and leaves
    // nothing behind.
    fails_with(
        &simlearn(&[
            &"index",
            &"export",
            &"--index",
            &d.join("nope"),
            &"--parquet",
            &pq,
        ]),
        &["nope"],
    );
    let bad = d.join("no-such-dir").join("rows.parquet");
    fails_with(
        &simlearn(&[&"index", &"export", &"--index", &idx, &"--parquet", &bad]),
        &["rows.parquet"],
    );
    assert!(!d.join("no-such-dir").exists());
    let leftovers = std::fs::read_dir(&d)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-")
        })
        .count();
    assert_eq!(leftovers, 0);
}
