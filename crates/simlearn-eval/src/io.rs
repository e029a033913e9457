//! Readers and writers for evaluation inputs: embeddings, class labels and continuous labels.
//!
//! Formats (chosen by file extension, case-insensitive):
//! * `.npy` — NumPy format versions 1.0, 2.0 and 3.0, C order only. Floats: `f4`/`f8` in either
//!   byte order (converted to f32). Integers (labels): `i1 i2 i4 i8 u1 u2 u4 u8` in either byte
//!   order. Fortran-order arrays and other dtypes are rejected with a message naming the dtype.
//! * `.safetensors` — one tensor (selected by name, or the only tensor in the file) of dtype
//!   F32, F64, F16 or BF16, converted to f32.
//! * `.csv` / `.tsv` / `.txt` — one row per line; fields separated by `,`, a tab, or white space
//!   (decided from the first line). A first line that is not all numbers is a header and skipped;
//!   blank lines are skipped.
//!
//! Every error is a one-line [`EvalError::File`] naming the file and, where it applies, the row
//! (0-based data row) or line (1-based text line).

use crate::{EvalError, Matrix};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// Element values of a decoded `.npy` array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `f4` or `f8` data, converted to f32 (f64 values beyond the f32 range become ±∞).
    Float(Vec<f32>),
    /// Integer data of any width, widened to i64.
    Int(Vec<i64>),
}

/// A decoded `.npy` array (C order).
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The `descr` string of the header, e.g. `<f4`.
    pub descr: String,
    /// The array shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The values in C (row-major) order.
    pub data: NpyData,
}

/// Decodes a complete `.npy` file held in memory. Never panics on malformed input.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray, EvalError> {
    decode_npy(bytes, bytes.len() as u64).map_err(EvalError::Invalid)
}

/// Reads an embedding matrix (`n × d`, n ≥ 1, d ≥ 1, all values finite). `tensor` selects a
/// tensor inside a `.safetensors` file and is an error for other formats.
pub fn read_embeddings(path: &Path, tensor: Option<&str>) -> Result<Matrix, EvalError> {
    let ext = extension(path);
    if tensor.is_some() && ext != "safetensors" {
        return Err(file_err(
            path,
            "a tensor name applies only to .safetensors files",
        ));
    }
    let m = match ext.as_str() {
        "npy" => {
            let a = read_npy_file(path)?;
            let floats = match a.data {
                NpyData::Float(v) => v,
                NpyData::Int(_) => {
                    return Err(file_err(
                        path,
                        format!(
                            "embeddings must be float32 or float64, got integer dtype {}",
                            a.descr
                        ),
                    ))
                }
            };
            if a.shape.len() != 2 {
                return Err(file_err(
                    path,
                    format!(
                        "embeddings must be a 2-D array (n, d), got shape {}",
                        shape_str(&a.shape)
                    ),
                ));
            }
            Matrix::new(a.shape[0], a.shape[1], floats).map_err(|e| file_err(path, e))?
        }
        "safetensors" => read_safetensors(path, tensor)?,
        "csv" | "tsv" | "txt" => read_csv_matrix(path)?,
        _ => return Err(unknown_ext(path, ".npy, .safetensors, .csv, .tsv or .txt")),
    };
    validate_matrix(path, &m)?;
    Ok(m)
}

/// Reads class labels: `.npy` integers of any width (shape `(n,)` or `(n, 1)`), or a text file
/// with one label per line. In a text file, if every line is an integer the integers are the
/// labels; otherwise each distinct string gets an id in order of first appearance (0, 1, …).
/// For `.csv`/`.tsv` files a non-integer first line followed by integer lines is a header.
pub fn read_class_labels(path: &Path) -> Result<Vec<i64>, EvalError> {
    let mut v = read_class_labels_joint(&[path])?;
    Ok(v.pop().expect("one file"))
}

/// Reads several label files (e.g. gallery and query labels) with one shared label space: if
/// any file holds non-integer strings, every label of every file is mapped to an id in order of
/// first appearance across the files in the order given, so equal strings get equal ids.
pub fn read_class_labels_joint(paths: &[&Path]) -> Result<Vec<Vec<i64>>, EvalError> {
    let tokens = paths
        .iter()
        .map(|p| read_label_tokens(p))
        .collect::<Result<Vec<_>, _>>()?;
    if tokens.iter().all(|t| matches!(t, Labels::Ints(_))) {
        return Ok(tokens
            .into_iter()
            .map(|t| match t {
                Labels::Ints(v) => v,
                Labels::Strings(_) => unreachable!("all integer"),
            })
            .collect());
    }
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut id = |s: String| {
        let next = ids.len() as i64;
        *ids.entry(s).or_insert(next)
    };
    Ok(tokens
        .into_iter()
        .map(|t| match t {
            Labels::Ints(v) => v.into_iter().map(|x| id(x.to_string())).collect(),
            Labels::Strings(v) => v.into_iter().map(&mut id).collect(),
        })
        .collect())
}

enum Labels {
    Ints(Vec<i64>),
    Strings(Vec<String>),
}

fn read_label_tokens(path: &Path) -> Result<Labels, EvalError> {
    let labels = if extension(path) == "npy" {
        let a = read_npy_file(path)?;
        let v = match a.data {
            NpyData::Int(v) => v,
            NpyData::Float(_) => {
                return Err(file_err(
                    path,
                    format!(
                        "class labels must be integers, got dtype {}; vector labels need --continuous-labels",
                        a.descr
                    ),
                ))
            }
        };
        let ok_shape = a.shape.len() == 1 || (a.shape.len() == 2 && a.shape[1] == 1);
        if !ok_shape {
            return Err(file_err(
                path,
                format!(
                    "class labels must have shape (n,) or (n, 1), got {}",
                    shape_str(&a.shape)
                ),
            ));
        }
        Labels::Ints(v)
    } else {
        read_text_labels(path)?
    };
    let n = match &labels {
        Labels::Ints(v) => v.len(),
        Labels::Strings(v) => v.len(),
    };
    if n == 0 {
        return Err(file_err(path, "no labels (empty file)"));
    }
    Ok(labels)
}

/// Reads an `n × d` float matrix of continuous labels from `.npy` or CSV; a 1-D `.npy` array of
/// length n becomes `n × 1`. Values must be finite.
pub fn read_float_matrix(path: &Path) -> Result<Matrix, EvalError> {
    let m = match extension(path).as_str() {
        "npy" => {
            let a = read_npy_file(path)?;
            let floats = match a.data {
                NpyData::Float(v) => v,
                // Integer-valued labels (e.g. ages in years) are valid continuous labels.
                NpyData::Int(v) => v.into_iter().map(|x| x as f32).collect(),
            };
            let (r, c) = match a.shape.as_slice() {
                [n] => (*n, 1),
                [n, d] => (*n, *d),
                s => {
                    return Err(file_err(
                        path,
                        format!(
                            "continuous labels must be 1-D (n,) or 2-D (n, d), got shape {}",
                            shape_str(s)
                        ),
                    ))
                }
            };
            Matrix::new(r, c, floats).map_err(|e| file_err(path, e))?
        }
        "csv" | "tsv" | "txt" => read_csv_matrix(path)?,
        _ => return Err(unknown_ext(path, ".npy, .csv, .tsv or .txt")),
    };
    validate_matrix(path, &m)?;
    Ok(m)
}

/// Writes `m` as a little-endian `<f4` `.npy` file (format 1.0), atomically: the data go to a
/// temporary file in the same directory, which is then renamed over `path`.
pub fn write_npy_f32(path: &Path, m: &Matrix) -> Result<(), EvalError> {
    let mut bytes = npy_header("<f4", &[m.rows(), m.cols()]);
    bytes.reserve(m.data().len() * 4);
    for v in m.data() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// Writes `v` as a 1-D little-endian `<i8` `.npy` file (format 1.0), atomically.
pub fn write_npy_i64(path: &Path, v: &[i64]) -> Result<(), EvalError> {
    let mut bytes = npy_header("<i8", &[v.len()]);
    bytes.reserve(v.len() * 8);
    for x in v {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// The `.npy` 1.0 preamble and header for a C-order array, padded with spaces and a final
/// newline so that the data start at a multiple of 64 bytes (as NumPy writes it).
pub fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape_txt = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EvalError> {
    let name = path
        .file_name()
        .ok_or_else(|| file_err(path, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        file_err(path, format!("cannot write: {e}"))
    })
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> EvalError {
    EvalError::File {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

fn unknown_ext(path: &Path, supported: &str) -> EvalError {
    file_err(
        path,
        format!("unsupported file extension (expected {supported})"),
    )
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn shape_str(shape: &[usize]) -> String {
    format!(
        "({})",
        shape
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn validate_matrix(path: &Path, m: &Matrix) -> Result<(), EvalError> {
    if m.rows() == 0 {
        return Err(file_err(path, "no rows (empty file)"));
    }
    if m.cols() == 0 {
        return Err(file_err(path, "rows have no values (dimension 0)"));
    }
    if let Some(r) = m.first_non_finite_row() {
        return Err(file_err(
            path,
            format!("row {r} contains NaN or Inf (or a value outside the f32 range)"),
        ));
    }
    Ok(())
}

fn read_npy_file(path: &Path) -> Result<NpyArray, EvalError> {
    let f = File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let len = f
        .metadata()
        .map_err(|e| file_err(path, format!("cannot stat: {e}")))?
        .len();
    if len == 0 {
        return Err(file_err(path, "empty file"));
    }
    decode_npy(BufReader::with_capacity(1 << 20, f), len).map_err(|m| file_err(path, m))
}

/// Largest header accepted; NumPy itself refuses headers above 10,000 bytes by default.
const MAX_HEADER: usize = 1 << 20;

/// Streams a `.npy` file of `total` bytes from `r`. Sizes are checked against `total` before
/// any allocation, so a forged shape cannot request unbounded memory.
fn decode_npy<R: Read>(mut r: R, total: u64) -> Result<NpyArray, String> {
    let io = |e: std::io::Error| format!("read error: {e}");
    if total < 10 {
        return Err(format!("not a .npy file: only {total} bytes"));
    }
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(io)?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (missing \\x93NUMPY magic)".into());
    }
    let (major, minor) = (pre[6], pre[7]);
    let (hlen, pre_len) = match major {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(io)?;
            (u16::from_le_bytes(b) as usize, 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(io)?;
            (u32::from_le_bytes(b) as usize, 12u64)
        }
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    if hlen > MAX_HEADER || pre_len + hlen as u64 > total {
        return Err(format!(
            "header length {hlen} does not fit in a file of {total} bytes"
        ));
    }
    let mut hbytes = vec![0u8; hlen];
    r.read_exact(&mut hbytes).map_err(io)?;
    let htext = if major == 3 {
        String::from_utf8(hbytes).map_err(|_| "header is not valid UTF-8".to_string())?
    } else {
        // Versions 1 and 2 use latin-1; the fields we need are ASCII.
        hbytes.iter().map(|&b| b as char).collect()
    };
    let h = parse_header(&htext)?;
    if h.fortran_order {
        return Err(
            "Fortran-order arrays are not supported; save with np.ascontiguousarray(x)".into(),
        );
    }
    let kind = Dtype::parse(&h.descr)?;
    let count = h
        .shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| format!("shape {} overflows", shape_str(&h.shape)))?;
    let data_len = total - pre_len - hlen as u64;
    let need = (count as u128) * kind.size as u128;
    if need != data_len as u128 {
        return Err(format!(
            "shape {} of dtype {} needs {need} data bytes, the file has {data_len}",
            shape_str(&h.shape),
            h.descr
        ));
    }
    let data = read_elements(&mut r, count, kind).map_err(io)?;
    Ok(NpyArray {
        descr: h.descr,
        shape: h.shape,
        data,
    })
}

#[derive(Clone, Copy)]
struct Dtype {
    float: bool,
    signed: bool,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self, String> {
        let b = descr.as_bytes();
        let unsupported = || {
            format!(
                "unsupported dtype {descr:?}: expected float32/float64 ('<f4', '<f8') or integers ('<i8', '|u1', …)"
            )
        };
        if b.len() != 3 {
            return Err(unsupported());
        }
        let big_endian = match b[0] {
            b'<' => false,
            b'>' => true,
            b'|' => false,
            b'=' => cfg!(target_endian = "big"),
            _ => return Err(unsupported()),
        };
        let size = match b[2] {
            b'1' => 1,
            b'2' => 2,
            b'4' => 4,
            b'8' => 8,
            _ => return Err(unsupported()),
        };
        let (float, signed) = match b[1] {
            b'f' if size == 4 || size == 8 => (true, true),
            b'i' => (false, true),
            b'u' => (false, false),
            _ => return Err(unsupported()),
        };
        if b[0] == b'|' && size != 1 {
            return Err(unsupported());
        }
        Ok(Self {
            float,
            signed,
            size,
            big_endian,
        })
    }

    fn float(self, c: &[u8]) -> f32 {
        if self.size == 4 {
            let a: [u8; 4] = c.try_into().expect("4-byte chunk");
            if self.big_endian {
                f32::from_be_bytes(a)
            } else {
                f32::from_le_bytes(a)
            }
        } else {
            let a: [u8; 8] = c.try_into().expect("8-byte chunk");
            (if self.big_endian {
                f64::from_be_bytes(a)
            } else {
                f64::from_le_bytes(a)
            }) as f32
        }
    }

    /// The integer in `c`, or `None` for a u64 above `i64::MAX`.
    fn int(self, c: &[u8]) -> Option<i64> {
        let mut a = [0u8; 8];
        // Assemble big-endian in the low bytes, then sign- or zero-extend.
        if self.big_endian {
            a[8 - self.size..].copy_from_slice(c);
        } else {
            for (i, &x) in c.iter().enumerate() {
                a[7 - i] = x;
            }
        }
        let raw = u64::from_be_bytes(a);
        let bits = self.size * 8;
        if self.signed {
            let shift = 64 - bits;
            Some(((raw << shift) as i64) >> shift)
        } else {
            i64::try_from(raw).ok()
        }
    }
}

fn read_elements<R: Read>(r: &mut R, count: usize, t: Dtype) -> std::io::Result<NpyData> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK.min(count * t.size).max(t.size)];
    let mut left = count;
    if t.float {
        let mut out = Vec::with_capacity(count);
        while left > 0 {
            let n = left.min(buf.len() / t.size);
            let b = &mut buf[..n * t.size];
            r.read_exact(b)?;
            out.extend(b.chunks_exact(t.size).map(|c| t.float(c)));
            left -= n;
        }
        Ok(NpyData::Float(out))
    } else {
        let mut out = Vec::with_capacity(count);
        while left > 0 {
            let n = left.min(buf.len() / t.size);
            let b = &mut buf[..n * t.size];
            r.read_exact(b)?;
            for c in b.chunks_exact(t.size) {
                match t.int(c) {
                    Some(v) => out.push(v),
                    None => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("element {} exceeds the i64 range", out.len()),
                        ))
                    }
                }
            }
            left -= n;
        }
        Ok(NpyData::Int(out))
    }
}

struct Header {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses the Python dict literal of a `.npy` header, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Lexer {
        s: text.as_bytes(),
        i: 0,
    };
    let bad_short = |what: &str| {
        let t: String = text.trim_end().chars().take(120).collect();
        format!("malformed .npy header ({what}): {t}")
    };
    p.ws();
    if !p.eat(b'{') {
        return Err(bad_short("expected '{'"));
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p
            .string()
            .ok_or_else(|| bad_short("expected a quoted key"))?;
        p.ws();
        if !p.eat(b':') {
            return Err(bad_short("expected ':'"));
        }
        p.ws();
        match key.as_str() {
            "descr" => {
                descr = Some(
                    p.string()
                        .ok_or_else(|| bad_short("descr must be a string"))?,
                )
            }
            "fortran_order" => {
                fortran = Some(if p.word("True") {
                    true
                } else if p.word("False") {
                    false
                } else {
                    return Err(bad_short("fortran_order must be True or False"));
                })
            }
            "shape" => {
                shape = Some(
                    p.tuple()
                        .ok_or_else(|| bad_short("shape must be a tuple of integers"))?,
                )
            }
            _ => return Err(bad_short(&format!("unexpected key {key:?}"))),
        }
        p.ws();
        if !p.eat(b',') {
            p.ws();
            if p.eat(b'}') {
                break;
            }
            return Err(bad_short("expected ',' or '}'"));
        }
    }
    Ok(Header {
        descr: descr.ok_or_else(|| bad_short("missing 'descr'"))?,
        fortran_order: fortran.ok_or_else(|| bad_short("missing 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad_short("missing 'shape'"))?,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> Option<String> {
        let q = *self.s.get(self.i)?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == q)?;
        self.i = start + len + 1;
        Some(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }
    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Some(out);
            }
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            if self.i == start || self.i - start > 19 {
                return None;
            }
            let v: usize = std::str::from_utf8(&self.s[start..self.i])
                .ok()?
                .parse()
                .ok()?;
            // Python 2 wrote long integers with an `L` suffix.
            self.eat(b'L');
            out.push(v);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                return self.eat(b')').then_some(out);
            }
        }
    }
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        file_err(
            path,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })
}

fn read_text_labels(path: &Path) -> Result<Labels, EvalError> {
    let text = read_text(path)?;
    let mut lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .collect();
    while lines.last().is_some_and(|(_, l)| l.is_empty()) {
        lines.pop();
    }
    if let Some((ln, _)) = lines.iter().find(|(_, l)| l.is_empty()) {
        return Err(file_err(path, format!("line {ln} is empty")));
    }
    let ints: Vec<Option<i64>> = lines.iter().map(|(_, l)| l.parse::<i64>().ok()).collect();
    let is_table = matches!(extension(path).as_str(), "csv" | "tsv");
    let start =
        if is_table && ints.len() > 1 && ints[0].is_none() && ints[1..].iter().all(Option::is_some)
        {
            1
        } else {
            0
        };
    if ints[start..].iter().all(Option::is_some) {
        return Ok(Labels::Ints(
            ints[start..].iter().map(|v| v.expect("checked")).collect(),
        ));
    }
    Ok(Labels::Strings(
        lines.iter().map(|(_, l)| l.to_string()).collect(),
    ))
}

fn read_csv_matrix(path: &Path) -> Result<Matrix, EvalError> {
    let text = read_text(path)?;
    let mut data = Vec::new();
    let mut cols = None;
    let mut sep: Option<Option<char>> = None;
    let mut rows = 0usize;
    for (ln0, line) in text.lines().enumerate() {
        let ln = ln0 + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let s = *sep.get_or_insert_with(|| {
            if line.contains(',') {
                Some(',')
            } else if line.contains('\t') {
                Some('\t')
            } else {
                None
            }
        });
        let fields: Vec<&str> = match s {
            Some(c) => line.split(c).map(str::trim).collect(),
            None => line.split_whitespace().collect(),
        };
        let parsed: Vec<Result<f32, &str>> = fields
            .iter()
            .map(|f| f.parse::<f32>().map_err(|_| *f))
            .collect();
        if rows == 0 && cols.is_none() && parsed.iter().any(Result::is_err) {
            // The first non-blank line is a header unless it is all numbers.
            cols = Some(fields.len());
            continue;
        }
        if let Some(c) = cols {
            if c != fields.len() {
                return Err(file_err(
                    path,
                    format!("line {ln} has {} fields, expected {c}", fields.len()),
                ));
            }
        } else {
            cols = Some(fields.len());
        }
        for (ci, v) in parsed.into_iter().enumerate() {
            match v {
                Ok(x) if x.is_finite() => data.push(x),
                Ok(_) => {
                    return Err(file_err(
                        path,
                        format!(
                            "row {rows} (line {ln}) contains NaN or Inf (or a value outside the f32 range)"
                        ),
                    ))
                }
                Err(f) => {
                    return Err(file_err(
                        path,
                        format!("line {ln}, field {}: cannot parse {f:?} as a number", ci + 1),
                    ))
                }
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(file_err(path, "no data rows (empty file)"));
    }
    Matrix::new(rows, cols.unwrap_or(0), data).map_err(|e| file_err(path, e))
}

/// Reads one tensor of a `.safetensors` file. Only the JSON header and the selected tensor's
/// bytes are read (streamed in 1 MiB chunks), so peak memory is the output matrix, not the file.
fn read_safetensors(path: &Path, tensor: Option<&str>) -> Result<Matrix, EvalError> {
    use std::io::{Seek, SeekFrom};
    let bad = |m: String| file_err(path, format!("not a valid safetensors file: {m}"));
    let mut f = File::open(path).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let total = f
        .metadata()
        .map_err(|e| file_err(path, format!("cannot stat: {e}")))?
        .len();
    if total == 0 {
        return Err(file_err(path, "empty file"));
    }
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8)
        .map_err(|_| bad(format!("only {total} bytes")))?;
    let hlen = u64::from_le_bytes(n8);
    // The safetensors format caps headers at 100 MB.
    if hlen > 100_000_000 || 8 + hlen > total {
        return Err(bad(format!("header length {hlen} does not fit the file")));
    }
    let mut hbytes = vec![0u8; hlen as usize];
    f.read_exact(&mut hbytes)
        .map_err(|e| bad(format!("cannot read header: {e}")))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&hbytes)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let mut names: Vec<&str> = header
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__metadata__")
        .collect();
    names.sort_unstable();
    let list = || {
        let l: Vec<&str> = names.iter().take(10).copied().collect();
        format!(
            "{}{}",
            l.join(", "),
            if names.len() > 10 { ", …" } else { "" }
        )
    };
    let name = match tensor {
        Some(t) => t.to_string(),
        None if names.len() == 1 => names[0].to_string(),
        None => {
            return Err(file_err(
                path,
                format!(
                    "holds {} tensors ({}); choose one with --tensor",
                    names.len(),
                    list()
                ),
            ))
        }
    };
    let info = header
        .get(&name)
        .filter(|_| name != "__metadata__")
        .ok_or_else(|| file_err(path, format!("no tensor named {name:?} (has: {})", list())))?;
    let dtype = info["dtype"].as_str().unwrap_or("?");
    let shape: Option<Vec<usize>> = info["shape"].as_array().and_then(|a| {
        a.iter()
            .map(|v| v.as_u64().and_then(|x| usize::try_from(x).ok()))
            .collect()
    });
    let offsets: Option<Vec<u64>> = info["data_offsets"]
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_u64()).collect());
    let (shape, (start, end)) = match (shape, offsets.as_deref()) {
        (Some(s), Some(&[a, b])) if a <= b => (s, (a, b)),
        _ => {
            return Err(bad(format!(
                "tensor {name:?} has no valid shape/data_offsets"
            )))
        }
    };
    let size: usize = match dtype {
        "F32" => 4,
        "F64" => 8,
        "F16" | "BF16" => 2,
        other => {
            return Err(file_err(
                path,
                format!("tensor {name:?} has dtype {other}; expected F32, F64, F16 or BF16"),
            ))
        }
    };
    if shape.len() != 2 {
        return Err(file_err(
            path,
            format!(
                "tensor {name:?} must be 2-D (n, d), got shape {}",
                shape_str(&shape)
            ),
        ));
    }
    let count = shape[0]
        .checked_mul(shape[1])
        .ok_or_else(|| bad(format!("shape {} overflows", shape_str(&shape))))?;
    let data_start = 8 + hlen;
    if (count as u128) * size as u128 != (end - start) as u128 || data_start + end > total {
        return Err(bad(format!(
            "tensor {name:?} of shape {} and dtype {dtype} does not match its {} data bytes at offset {start}",
            shape_str(&shape),
            end - start
        )));
    }
    f.seek(SeekFrom::Start(data_start + start))
        .map_err(|e| file_err(path, format!("cannot seek: {e}")))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut vals = Vec::with_capacity(count);
    let mut buf = vec![0u8; (1 << 20) / size * size];
    let mut left = count;
    while left > 0 {
        let n = left.min(buf.len() / size);
        let b = &mut buf[..n * size];
        r.read_exact(b)
            .map_err(|e| file_err(path, format!("read error: {e}")))?;
        match dtype {
            "F32" => vals.extend(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            "F64" => vals.extend(
                b.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32),
            ),
            "F16" => vals.extend(
                b.chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
            _ => vals.extend(
                b.chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            ),
        }
        left -= n;
    }
    Matrix::new(shape[0], shape[1], vals).map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::path::PathBuf;

    /// A fresh directory under the system temp dir, unique per test.
    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("simlearn-io-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let mut b = npy_header(descr, shape);
        b.extend_from_slice(data);
        b
    }

    fn msg(e: EvalError) -> String {
        e.to_string()
    }

    #[test]
    fn header_is_numpy_compatible() {
        let h = npy_header("<f4", &[3, 4]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }"));
        assert!(text.ends_with('\n'));
        assert!(std::str::from_utf8(&npy_header("<i8", &[5])[10..])
            .unwrap()
            .contains("(5,)"));
    }

    #[test]
    fn npy_round_trip_f32_and_i64() {
        let d = tmp("rt");
        let m = Matrix::new(2, 3, vec![1.0, -2.5, 3.0, 0.0, 1e-3, 7.0]).unwrap();
        let p = d.join("e.npy");
        write_npy_f32(&p, &m).unwrap();
        assert_eq!(read_embeddings(&p, None).unwrap(), m);
        let l = d.join("l.npy");
        write_npy_i64(&l, &[5, -1, 5, i64::MAX]).unwrap();
        assert_eq!(read_class_labels(&l).unwrap(), vec![5, -1, 5, i64::MAX]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
    }

    #[test]
    fn npy_dtypes_and_byte_orders() {
        let f64s: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let a = parse_npy(&npy_bytes(">f8", &[1, 2], &f64s)).unwrap();
        assert_eq!(a.data, NpyData::Float(vec![1.5, -2.0]));
        let i16s: Vec<u8> = [-300i16, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            parse_npy(&npy_bytes("<i2", &[2], &i16s)).unwrap().data,
            NpyData::Int(vec![-300, 7])
        );
        assert_eq!(
            parse_npy(&npy_bytes("|u1", &[2], &[255, 0])).unwrap().data,
            NpyData::Int(vec![255, 0])
        );
        assert_eq!(
            parse_npy(&npy_bytes("|i1", &[2], &[255, 1])).unwrap().data,
            NpyData::Int(vec![-1, 1])
        );
        let u32s: Vec<u8> = [4_000_000_000u32]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        assert_eq!(
            parse_npy(&npy_bytes(">u4", &[1], &u32s)).unwrap().data,
            NpyData::Int(vec![4_000_000_000])
        );
        let big: Vec<u8> = u64::MAX.to_le_bytes().to_vec();
        assert!(msg(parse_npy(&npy_bytes("<u8", &[1], &big)).unwrap_err()).contains("i64 range"));
        // Version 2.0 header (u32 length).
        let h1 = npy_header("<f4", &[1]);
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&((h1.len() - 10) as u32).to_le_bytes());
        v2.extend_from_slice(&h1[10..]);
        v2.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(parse_npy(&v2).unwrap().data, NpyData::Float(vec![2.0]));
    }

    #[test]
    fn npy_rejections_are_clear() {
        let one = 1.0f32.to_le_bytes();
        let fortran = {
            let mut b = npy_header("<f4", &[1, 1]);
            let t = String::from_utf8(b[10..].to_vec())
                .unwrap()
                .replace("False", "True ");
            b.truncate(10);
            b.extend_from_slice(t.as_bytes());
            b.extend_from_slice(&one);
            b
        };
        assert!(msg(parse_npy(&fortran).unwrap_err()).contains("Fortran"));
        assert!(msg(parse_npy(&npy_bytes("<f2", &[2], &[0; 4])).unwrap_err()).contains("\"<f2\""));
        assert!(
            msg(parse_npy(&npy_bytes("<c8", &[1], &[0; 8])).unwrap_err())
                .contains("unsupported dtype")
        );
        assert!(msg(parse_npy(&npy_bytes("<f4", &[2], &one)).unwrap_err())
            .contains("needs 8 data bytes"));
        assert!(msg(parse_npy(b"hello world, not npy").unwrap_err()).contains("magic"));
        assert!(
            msg(parse_npy(&npy_bytes("<f4", &[1 << 40, 1 << 40], &one)).unwrap_err())
                .contains("overflows")
        );

        let d = tmp("rej");
        let p = d.join("x.npy");
        std::fs::write(&p, npy_bytes("<i4", &[1, 1], &[0; 4])).unwrap();
        let e = msg(read_embeddings(&p, None).unwrap_err());
        assert!(
            e.starts_with(&p.display().to_string()) && e.contains("integer dtype <i4"),
            "{e}"
        );
        std::fs::write(&p, npy_bytes("<f4", &[1], &one)).unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("2-D"));
        assert!(msg(read_class_labels(&p).unwrap_err()).contains("--continuous-labels"));
        let nan: Vec<u8> = [1.0f32, 2.0, f32::NAN, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&p, npy_bytes("<f4", &[2, 2], &nan)).unwrap();
        let e = msg(read_embeddings(&p, None).unwrap_err());
        assert!(
            e.contains("x.npy") && e.contains("row 1 contains NaN"),
            "{e}"
        );
        // f64 beyond the f32 range.
        let huge: Vec<u8> = [1e300f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy_bytes("<f8", &[1, 1], &huge)).unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("row 0"));
        std::fs::write(&p, b"").unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("empty"));
        std::fs::write(&p, npy_bytes("<f4", &[0, 3], &[])).unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("empty"));
        let q = d.join("x.bin");
        std::fs::write(&q, b"1").unwrap();
        assert!(msg(read_embeddings(&q, None).unwrap_err()).contains("extension"));
        assert!(
            msg(read_embeddings(&d.join("missing.npy"), None).unwrap_err()).contains("cannot open")
        );
    }

    #[test]
    fn csv_with_and_without_header() {
        let d = tmp("csv");
        let p = d.join("e.csv");
        std::fs::write(&p, "a,b\n1, 2\n3,4.5\n\n").unwrap();
        assert_eq!(
            read_embeddings(&p, None).unwrap(),
            Matrix::new(2, 2, vec![1.0, 2.0, 3.0, 4.5]).unwrap()
        );
        let t = d.join("e.txt");
        std::fs::write(&t, "1 2 3\n4 5 6\n").unwrap();
        assert_eq!(read_float_matrix(&t).unwrap().cols(), 3);
        std::fs::write(&p, "1,2\n3\n").unwrap();
        assert!(
            msg(read_embeddings(&p, None).unwrap_err()).contains("line 2 has 1 fields, expected 2")
        );
        std::fs::write(&p, "1,2\n3,x\n").unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("line 2, field 2"));
        std::fs::write(&p, "h1,h2\n1,2\n3,inf\n").unwrap();
        let e = msg(read_embeddings(&p, None).unwrap_err());
        assert!(e.contains("row 1 (line 3)"), "{e}");
        std::fs::write(&p, "h1,h2\n").unwrap();
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("empty"));
    }

    #[test]
    fn text_labels() {
        let d = tmp("lab");
        let p = d.join("l.txt");
        std::fs::write(&p, "7\n-3\n7\n").unwrap();
        assert_eq!(read_class_labels(&p).unwrap(), vec![7, -3, 7]);
        std::fs::write(&p, "cat\ndog\ncat\n12\n").unwrap();
        assert_eq!(read_class_labels(&p).unwrap(), vec![0, 1, 0, 2]);
        let q = d.join("q.txt");
        std::fs::write(&q, "dog\nfish\n").unwrap();
        assert_eq!(
            read_class_labels_joint(&[&p, &q]).unwrap(),
            vec![vec![0, 1, 0, 2], vec![1, 3]]
        );
        let n = d.join("n.txt");
        std::fs::write(&n, "12\n5\n").unwrap();
        assert_eq!(
            read_class_labels_joint(&[&n, &p]).unwrap(),
            vec![vec![0, 1], vec![2, 3, 2, 0]]
        );
        std::fs::write(&p, "cat\n\ndog\n").unwrap();
        assert!(msg(read_class_labels(&p).unwrap_err()).contains("line 2 is empty"));
        std::fs::write(&p, "\n\n").unwrap();
        assert!(msg(read_class_labels(&p).unwrap_err()).contains("empty"));
        let c = d.join("l.csv");
        std::fs::write(&c, "label\n4\n5\n").unwrap();
        assert_eq!(read_class_labels(&c).unwrap(), vec![4, 5]);
        let n = d.join("l.npy");
        let i32s: Vec<u8> = [1i32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&n, npy_bytes("<i4", &[3, 1], &i32s)).unwrap();
        assert_eq!(read_class_labels(&n).unwrap(), vec![1, 2, 3]);
        std::fs::write(&n, npy_bytes("<i4", &[1, 3], &i32s)).unwrap();
        assert!(msg(read_class_labels(&n).unwrap_err()).contains("(n,) or (n, 1)"));
    }

    #[test]
    fn float_matrix_from_1d_npy_and_ints() {
        let d = tmp("fm");
        let p = d.join("y.npy");
        let v: Vec<u8> = [0.5f64, 1.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, npy_bytes("<f8", &[2], &v)).unwrap();
        assert_eq!(
            read_float_matrix(&p).unwrap(),
            Matrix::new(2, 1, vec![0.5, 1.5]).unwrap()
        );
        write_npy_i64(&p, &[3, 4]).unwrap();
        assert_eq!(read_float_matrix(&p).unwrap().data(), &[3.0, 4.0]);
    }

    #[test]
    fn safetensors_dtypes_and_selection() {
        use safetensors::{serialize, tensor::TensorView, Dtype as St};
        let d = tmp("st");
        let f32b: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16b: Vec<u8> = [0.5f32, -1.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16b: Vec<u8> = [2.0f32, 3.0]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let f64b: Vec<u8> = [9.0f64].iter().flat_map(|v| v.to_le_bytes()).collect();
        let i32b = vec![0u8; 4];
        let tensors = vec![
            ("a", TensorView::new(St::F32, vec![2, 2], &f32b).unwrap()),
            ("h", TensorView::new(St::F16, vec![1, 2], &f16b).unwrap()),
            ("b", TensorView::new(St::BF16, vec![2, 1], &bf16b).unwrap()),
            ("d", TensorView::new(St::F64, vec![1, 1], &f64b).unwrap()),
            ("i", TensorView::new(St::I32, vec![1, 1], &i32b).unwrap()),
            ("v", TensorView::new(St::F32, vec![4], &f32b).unwrap()),
        ];
        let p = d.join("e.safetensors");
        std::fs::write(&p, serialize(tensors, None).unwrap()).unwrap();
        assert_eq!(
            read_embeddings(&p, Some("a")).unwrap().data(),
            &[1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(read_embeddings(&p, Some("h")).unwrap().data(), &[0.5, -1.0]);
        assert_eq!(read_embeddings(&p, Some("b")).unwrap().data(), &[2.0, 3.0]);
        assert_eq!(read_embeddings(&p, Some("d")).unwrap().data(), &[9.0]);
        assert!(msg(read_embeddings(&p, Some("i")).unwrap_err()).contains("dtype I32"));
        assert!(msg(read_embeddings(&p, Some("v")).unwrap_err()).contains("2-D"));
        assert!(
            msg(read_embeddings(&p, Some("zz")).unwrap_err()).contains("no tensor named \"zz\"")
        );
        assert!(msg(read_embeddings(&p, None).unwrap_err()).contains("--tensor"));
        let n = d.join("e.npy");
        assert!(msg(read_embeddings(&n, Some("a")).unwrap_err()).contains(".safetensors"));
        let only = d.join("one.safetensors");
        let t = vec![("emb", TensorView::new(St::F32, vec![1, 4], &f32b).unwrap())];
        std::fs::write(&only, serialize(t, None).unwrap()).unwrap();
        assert_eq!(read_embeddings(&only, None).unwrap().cols(), 4);
        // `__metadata__` is not a tensor: the only tensor is still chosen by default.
        let meta = std::collections::HashMap::from([("k".to_string(), "v".to_string())]);
        let t = vec![("emb", TensorView::new(St::F32, vec![2, 2], &f32b).unwrap())];
        std::fs::write(&only, serialize(t, Some(meta)).unwrap()).unwrap();
        assert_eq!(read_embeddings(&only, None).unwrap().rows(), 2);
        // Offsets beyond the end of the file.
        let h = r#"{"e":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&[0u8; 8]);
        std::fs::write(&only, &b).unwrap();
        assert!(msg(read_embeddings(&only, None).unwrap_err()).contains("does not match"));
        std::fs::write(&only, b"garbage").unwrap();
        assert!(msg(read_embeddings(&only, None).unwrap_err()).contains("not a valid safetensors"));
    }

    /// Deterministic fuzzing of the `.npy` parser: valid files with random mutations (bit flips,
    /// truncation, insertion, header edits) and random bytes. The parser must return, never panic,
    /// and whatever it accepts must be self-consistent.
    #[test]
    fn npy_parser_survives_mutated_input() {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
        let descrs = ["<f4", ">f8", "<i8", "|u1", "<i2", ">u4", "<f2", "|b1"];
        let mut accepted = 0;
        for it in 0..4000 {
            let descr = descrs[rng.random_range(0..descrs.len())];
            let shape: Vec<usize> = (0..rng.random_range(0..4))
                .map(|_| rng.random_range(0..5))
                .collect();
            let count: usize = shape.iter().product();
            let size = descr[2..].parse::<usize>().unwrap();
            let mut data = vec![0u8; count * size];
            rng.fill(&mut data[..]);
            let mut b = npy_bytes(descr, &shape, &data);
            match it % 6 {
                0 => {}
                1 => {
                    for _ in 0..rng.random_range(1..6) {
                        let i = rng.random_range(0..b.len());
                        b[i] ^= 1 << rng.random_range(0..8);
                    }
                }
                2 => b.truncate(rng.random_range(0..b.len())),
                3 => {
                    let i = rng.random_range(0..b.len());
                    let extra: Vec<u8> =
                        (0..rng.random_range(1..9)).map(|_| rng.random()).collect();
                    b.splice(i..i, extra);
                }
                4 => {
                    // Replace a header byte with a syntactically interesting one.
                    let pick = b"{}():,'\"0123456789LTrueFals \n";
                    let i = rng.random_range(8..b.len().min(80));
                    b[i] = pick[rng.random_range(0..pick.len())];
                }
                _ => {
                    b = (0..rng.random_range(0..200))
                        .map(|_| rng.random())
                        .collect();
                    if rng.random_bool(0.5) && b.len() >= 8 {
                        b[..8].copy_from_slice(b"\x93NUMPY\x01\x00");
                    }
                }
            }
            if let Ok(a) = parse_npy(&b) {
                accepted += 1;
                let n: usize = a.shape.iter().product();
                let len = match &a.data {
                    NpyData::Float(v) => v.len(),
                    NpyData::Int(v) => v.len(),
                };
                assert_eq!(n, len);
            }
        }
        // The unmutated sixth of the cases with supported dtypes must parse.
        assert!(accepted >= 400, "only {accepted} accepted");
    }
}
