//! Query → top-k retrieval grids for image data, written as plain SVG, every image framed blue
//! (query), green (correct neighbour) or red (incorrect one). Pixel features (the digits) are
//! drawn as grids of grey rectangles; items that come from image files (feature files written
//! by `simlearn embed`, whose `<stem>_paths.txt` names each row's image) are drawn as PNG
//! thumbnails embedded as `data:` URIs, so the SVG stays self-contained.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;

use simlearn_eval::Matrix;

/// One neighbour in a grid row.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCell {
    /// Row of the item in the pixel matrix.
    pub item: usize,
    /// Text under the image (its label).
    pub caption: String,
    /// Whether the neighbour counts as relevant to the query (green frame) or not (red).
    pub correct: bool,
}

/// One query and its retrieved neighbours, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct GridRow {
    /// Row of the query in the pixel matrix.
    pub query: usize,
    /// First text line under the query (its label).
    pub caption: String,
    /// Second text line under the query (its per-query metric).
    pub note: String,
    /// Retrieved neighbours, rank 1 first.
    pub neighbours: Vec<GridCell>,
}

/// Frame colours; the test suite looks for them.
pub const QUERY_COLOUR: &str = "#1f77b4";
/// Frame of a relevant neighbour.
pub const CORRECT_COLOUR: &str = "#2ca02c";
/// Frame of an irrelevant neighbour.
pub const INCORRECT_COLOUR: &str = "#d62728";

/// Drawn size of every image, pixels.
pub const CELL: usize = 56;
/// Frame stroke width.
const FRAME: usize = 3;
const GAP: usize = 10;
/// Gap between the query and its first neighbour, wider so the query stands apart.
const QUERY_GAP: usize = 26;
const CAPTION: usize = 30;
const TITLE: usize = 28;

/// Escapes text for XML/HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Where the pictures of a grid's items come from.
#[derive(Debug, Clone, Copy)]
pub enum GridImages<'a> {
    /// Row `i` of the matrix is item `i`'s image, `(width, height)` grey values, row-major.
    Pixels {
        /// One image per row; every row holds at least `width · height` values.
        pixels: &'a Matrix,
        /// `(width, height)`.
        shape: (usize, usize),
    },
    /// Item `i`'s image is the `data:` URI `uris[&i]` (see [`thumbnail_data_uri`]); items
    /// without an entry are drawn as a grey placeholder with a question mark.
    Thumbnails(&'a BTreeMap<usize, String>),
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes the image file at `path`, downscales it to fit in `size × size` pixels (aspect kept;
/// smaller images are left as they are) and returns it as a `data:image/png;base64,…` URI.
/// Errors name the file.
pub fn thumbnail_data_uri(path: &Path, size: u32) -> Result<String, String> {
    let img = image::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let img = if img.width() > size || img.height() > size {
        img.thumbnail(size, size)
    } else {
        img
    };
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("{}: PNG encoding: {e}", path.display()))?;
    Ok(format!("data:image/png;base64,{}", base64(&png)))
}

/// Draws item `item` as an embedded thumbnail (or a placeholder when it has none).
fn draw_thumbnail(
    svg: &mut String,
    uris: &BTreeMap<usize, String>,
    item: usize,
    x: usize,
    y: usize,
) {
    let _ = write!(
        svg,
        r##"<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="#ffffff"/>"##
    );
    match uris.get(&item) {
        Some(uri) => {
            let _ = write!(
                svg,
                r#"<image x="{x}" y="{y}" width="{CELL}" height="{CELL}" preserveAspectRatio="xMidYMid meet" href="{}"/>"#,
                escape(uri)
            );
        }
        None => {
            let _ = write!(
                svg,
                r##"<rect class="missing" x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="#dddddd"/><text x="{}" y="{}" font-family="sans-serif" font-size="20" text-anchor="middle" fill="#888">?</text>"##,
                x + CELL / 2,
                y + CELL / 2 + 7
            );
        }
    }
}

fn draw_item(svg: &mut String, images: &GridImages<'_>, item: usize, x: usize, y: usize) {
    match images {
        GridImages::Pixels { pixels, shape } => draw_image(svg, pixels, item, *shape, x, y),
        GridImages::Thumbnails(uris) => draw_thumbnail(svg, uris, item, x, y),
    }
}

/// Draws row `item` of `pixels` (row-major `width × height` grey values) with its top-left
/// corner at `(x, y)`. Grey levels are min–max scaled per image so that any feature range
/// shows; high values are drawn dark (ink on paper, as the digits are stored).
fn draw_image(
    svg: &mut String,
    pixels: &Matrix,
    item: usize,
    shape: (usize, usize),
    x: usize,
    y: usize,
) {
    let (w, h) = shape;
    let px = CELL as f64 / w.max(h) as f64;
    let row = pixels.row(item);
    let (lo, hi) = row
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let _ = write!(
        svg,
        r##"<rect x="{x}" y="{y}" width="{CELL}" height="{CELL}" fill="#ffffff"/>"##
    );
    // One group per image scaled to pixel units keeps every rectangle short (1×1 at integer
    // coordinates), which matters for 16 × 16 images with few background pixels.
    let _ = write!(
        svg,
        r#"<g transform="translate({x} {y}) scale({})">"#,
        fmt_num(px)
    );
    for (i, &v) in row.iter().take(w * h).enumerate() {
        let ink = if v.is_finite() {
            ((v - lo) / span).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let grey = (255.0 * (1.0 - ink)).round() as u8;
        // White pixels are the background already drawn; skipping them keeps files small.
        if grey >= 250 {
            continue;
        }
        let _ = write!(
            svg,
            r##"<rect x="{}" y="{}" width="1" height="1" fill="#{grey:02x}{grey:02x}{grey:02x}"/>"##,
            i % w,
            i / w
        );
    }
    svg.push_str("</g>");
}

/// A number without trailing zeros (`7`, `3.5`).
fn fmt_num(v: f64) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn frame(svg: &mut String, x: usize, y: usize, colour: &str, class: &str) {
    let half = FRAME as f64 / 2.0;
    let _ = write!(
        svg,
        r#"<rect class="{class}" x="{:.1}" y="{:.1}" width="{}" height="{}" fill="none" stroke="{colour}" stroke-width="{FRAME}"/>"#,
        x as f64 - half,
        y as f64 - half,
        CELL + FRAME,
        CELL + FRAME
    );
}

fn text(svg: &mut String, x: usize, y: usize, size: usize, content: &str) {
    let _ = write!(
        svg,
        r##"<text x="{x}" y="{y}" font-family="sans-serif" font-size="{size}" fill="#222">{}</text>"##,
        escape(content)
    );
}

/// The SVG document of a retrieval grid: one line per query, the query on the left, then its
/// neighbours in rank order. `shape` is `(width, height)` of the images; every row of
/// `pixels` must hold at least `width · height` values.
pub fn retrieval_grid_svg(
    title: &str,
    pixels: &Matrix,
    shape: (usize, usize),
    rows: &[GridRow],
) -> String {
    retrieval_grid_svg_with(title, &GridImages::Pixels { pixels, shape }, rows)
}

/// The SVG document of a retrieval grid whose pictures come from `images`: pixel rows, or
/// embedded thumbnails of image files.
pub fn retrieval_grid_svg_with(title: &str, images: &GridImages<'_>, rows: &[GridRow]) -> String {
    let k = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0);
    let cell = CELL + FRAME;
    let first_x = GAP + cell + QUERY_GAP;
    let width = first_x + k * (cell + GAP) + GAP;
    let row_h = cell + CAPTION + GAP;
    let height = TITLE + rows.len() * row_h + GAP;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" shape-rendering="crispEdges">"#
    );
    let _ = write!(
        svg,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    text(&mut svg, GAP, 18, 14, title);
    for (r, row) in rows.iter().enumerate() {
        let y = TITLE + r * row_h + FRAME;
        let qx = GAP + FRAME;
        draw_item(&mut svg, images, row.query, qx, y);
        frame(&mut svg, qx, y, QUERY_COLOUR, "query");
        text(&mut svg, GAP, y + CELL + 14, 10, &row.caption);
        text(&mut svg, GAP, y + CELL + 26, 10, &row.note);
        for (i, n) in row.neighbours.iter().enumerate() {
            let x = first_x + i * (cell + GAP) + FRAME;
            draw_item(&mut svg, images, n.item, x, y);
            let (colour, class) = if n.correct {
                (CORRECT_COLOUR, "correct")
            } else {
                (INCORRECT_COLOUR, "incorrect")
            };
            frame(&mut svg, x, y, colour, class);
            text(
                &mut svg,
                x - FRAME,
                y + CELL + 14,
                10,
                &format!("{}. {}", i + 1, n.caption),
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
