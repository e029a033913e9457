//! Query → top-k retrieval grids for image data, written as plain SVG: every image is a grid of
//! grey rectangles, framed blue (query), green (correct neighbour) or red (incorrect one).

use std::fmt::Write as _;

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
const CELL: usize = 56;
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
        draw_image(&mut svg, pixels, row.query, shape, qx, y);
        frame(&mut svg, qx, y, QUERY_COLOUR, "query");
        text(&mut svg, GAP, y + CELL + 14, 10, &row.caption);
        text(&mut svg, GAP, y + CELL + 26, 10, &row.note);
        for (i, n) in row.neighbours.iter().enumerate() {
            let x = first_x + i * (cell + GAP) + FRAME;
            draw_image(&mut svg, pixels, n.item, shape, x, y);
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
