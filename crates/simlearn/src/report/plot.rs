//! The report's charts, drawn with `plotters`' SVG backend (text stays `<text>` elements, so
//! no font files are read).

use std::collections::BTreeSet;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::stats::Histogram;
use super::ReportError;
use crate::train::EpochRecord;
use simlearn_eval::verification::Verification;

/// Tableau 10, the matplotlib default cycle: distinct in colour and for most colour blindness.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points in drawing order; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub colour: RGBColor,
    /// Drawn thin and pale (a reference line rather than a result).
    pub faint: bool,
}

/// Validation metrics drawn in the training-curve figure when present (the full set is in the
/// results table): one per family, so the legend stays readable.
const CURVE_METRICS: [&str; 10] = [
    "precision_at_1",
    "recall_at_1",
    "recall_at_4",
    "r_precision",
    "map_at_r",
    "mrr",
    "ndcg_at_10",
    "ndcg_at_100",
    "mean_label_distance_at_1",
    "mean_label_distance_at_10",
];

const PANEL_W: u32 = 420;
const PANEL_H: u32 = 330;
const TITLE_H: u32 = 30;

fn plot_err<E: std::fmt::Display>(e: E) -> ReportError {
    ReportError::Plot(e.to_string())
}

/// Tick labels: scientific notation for very small or large magnitudes (learning rates), three
/// significant decimals otherwise.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn integer_tick(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{:.0}", v)
    } else {
        String::new()
    }
}

/// `[lo, hi]` of the finite values with 6 % padding; a flat series gets a band around it.
fn padded_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return None;
    }
    let pad = if hi > lo {
        0.06 * (hi - lo)
    } else {
        (0.1 * hi.abs()).max(1e-3)
    };
    Some((lo - pad, hi + pad))
}

fn no_data(area: &DrawingArea<SVGBackend<'_>, Shift>, caption: &str) -> Result<(), ReportError> {
    area.draw(&Text::new(
        format!("{caption}: no data"),
        (24, 40),
        ("sans-serif", 15).into_font().color(&BLACK),
    ))
    .map_err(plot_err)
}

/// A line chart in `area`. `integer_x` labels only whole x values (epochs, ranks).
fn line_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    integer_x: bool,
    legend: SeriesLabelPosition,
) -> Result<(), ReportError> {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| finite(p)).map(|p| p.1));
    let (Some(xr), Some(yr)) = (padded_range(xs.clone()), padded_range(ys)) else {
        return no_data(area, caption);
    };
    let xr = if integer_x {
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        (lo - 0.5, hi + 0.5)
    } else {
        xr
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(plot_err)?;
    let x_fmt: &dyn Fn(&f64) -> String = if integer_x { &integer_tick } else { &tick };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(x_fmt)
        .y_label_formatter(&tick)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;
    for s in series {
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(finite).collect();
        if pts.is_empty() {
            continue;
        }
        let style = if s.faint {
            s.colour.mix(0.45).stroke_width(1)
        } else {
            s.colour.stroke_width(2)
        };
        let legend_style = style;
        chart
            .draw_series(LineSeries::new(pts.clone(), style))
            .map_err(plot_err)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], legend_style));
        // Markers keep a one-epoch run (a single point) visible.
        if pts.len() <= 40 {
            chart
                .draw_series(
                    pts.iter()
                        .map(|&p| Circle::new(p, if s.faint { 2 } else { 3 }, style.filled())),
                )
                .map_err(plot_err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(legend)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(plot_err)
}

fn finish(svg: String) -> Result<String, ReportError> {
    if svg.is_empty() {
        return Err(ReportError::Plot("plotters produced an empty SVG".into()));
    }
    Ok(svg)
}

/// Training curves of one run: the mean of every loss term (and the total) per epoch, the
/// learning rate per epoch, and the validation metrics of the epochs that were validated
/// (fractions and label distances on separate axes).
pub fn training_curves_svg(title: &str, history: &[EpochRecord]) -> Result<String, ReportError> {
    let epoch = |r: &EpochRecord| (r.epoch + 1) as f64;
    let mut loss = vec![Series {
        name: "total".into(),
        points: history.iter().map(|r| (epoch(r), r.loss)).collect(),
        // Black and drawn first, so a single-term loss (term = total) shows both lines.
        colour: RGBColor(30, 30, 30),
        faint: false,
    }];
    let term_names: BTreeSet<&String> = history.iter().flat_map(|r| r.terms.keys()).collect();
    for (i, name) in term_names.iter().enumerate() {
        loss.push(Series {
            name: (*name).clone(),
            points: history
                .iter()
                .filter_map(|r| r.terms.get(*name).map(|&v| (epoch(r), v)))
                .collect(),
            colour: PALETTE[i % PALETTE.len()],
            faint: false,
        });
    }
    let lr = vec![Series {
        name: "lr".into(),
        points: history.iter().map(|r| (epoch(r), r.lr)).collect(),
        colour: PALETTE[1],
        faint: false,
    }];
    let metric_names: BTreeSet<&String> = history
        .iter()
        .filter_map(|r| r.validation.as_ref())
        .flat_map(|v| v.keys())
        .collect();
    let preferred: Vec<&String> = metric_names
        .iter()
        .copied()
        .filter(|n| CURVE_METRICS.contains(&n.as_str()))
        .collect();
    let shown = if preferred.is_empty() {
        metric_names.iter().copied().collect()
    } else {
        preferred
    };
    let metric_series = |distances: bool| -> Vec<Series> {
        shown
            .iter()
            .filter(|n| n.starts_with("mean_label_distance") == distances)
            .enumerate()
            .map(|(i, n)| Series {
                name: (*n).clone(),
                points: history
                    .iter()
                    .filter_map(|r| {
                        r.validation
                            .as_ref()
                            .and_then(|v| v.get(*n))
                            .map(|&v| (epoch(r), v))
                    })
                    .collect(),
                colour: PALETTE[i % PALETTE.len()],
                faint: false,
            })
            .collect()
    };
    let fractions = metric_series(false);
    let distances = metric_series(true);
    let panels = 3 + usize::from(!distances.is_empty());
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (PANEL_W * panels as u32, PANEL_H + TITLE_H))
            .into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let areas = body.split_evenly((1, panels));
        line_panel(
            &areas[0],
            "training loss (epoch mean)",
            "epoch",
            "loss",
            &loss,
            true,
            SeriesLabelPosition::UpperRight,
        )?;
        line_panel(
            &areas[1],
            "learning rate",
            "epoch",
            "lr",
            &lr,
            true,
            SeriesLabelPosition::UpperRight,
        )?;
        line_panel(
            &areas[2],
            "validation",
            "epoch",
            "metric",
            &fractions,
            true,
            SeriesLabelPosition::LowerRight,
        )?;
        if !distances.is_empty() {
            line_panel(
                &areas[3],
                "validation: mean label distance",
                "epoch",
                "label distance",
                &distances,
                true,
                SeriesLabelPosition::UpperRight,
            )?;
        }
        root.present().map_err(plot_err)?;
    }
    finish(svg)
}

/// Histogram panels of positive-pair (green) and negative-pair (red) cosine similarity, each
/// bar the share of its pairs in the bin. `panels`: `(caption, positives, negatives)`.
pub fn similarity_histograms_svg(
    title: &str,
    panels: &[(&str, &Histogram, &Histogram)],
) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let n = panels.len().max(1) as u32;
        let root =
            SVGBackend::with_string(&mut svg, (PANEL_W * n, PANEL_H + TITLE_H)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let areas = body.split_evenly((1, panels.len().max(1)));
        for (area, (caption, pos, neg)) in areas.iter().zip(panels) {
            let top = pos
                .fractions()
                .into_iter()
                .chain(neg.fractions())
                .fold(0.0f64, f64::max)
                .max(1e-3)
                * 1.1;
            let mut chart = ChartBuilder::on(area)
                .caption(*caption, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(58)
                .build_cartesian_2d(pos.lo..pos.hi, 0.0..top)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("cosine similarity")
                .y_desc("share of pairs")
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(plot_err)?;
            for (hist, colour, name) in [
                (*neg, PALETTE[3], "negative pairs"),
                (*pos, PALETTE[2], "positive pairs"),
            ] {
                let label = format!("{name} (n={}, mean {:.3})", hist.total, hist.mean);
                let bars: Vec<Rectangle<(f64, f64)>> = hist
                    .fractions()
                    .iter()
                    .enumerate()
                    .filter(|(_, &f)| f > 0.0)
                    .map(|(b, &f)| {
                        let (x0, x1) = hist.edges(b);
                        Rectangle::new([(x0, 0.0), (x1, f)], colour.mix(0.5).filled())
                    })
                    .collect();
                chart
                    .draw_series(bars)
                    .map_err(plot_err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.mix(0.5).filled())
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .label_font(("sans-serif", 12))
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    finish(svg)
}

/// Mean retrieved label distance against rank `1..=K`, one line per series.
pub fn rank_distance_svg(title: &str, series: &[Series]) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (2 * PANEL_W, PANEL_H + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        line_panel(
            &body,
            "mean label distance of the r-th retrieved item",
            "rank r",
            "mean label distance",
            series,
            true,
            SeriesLabelPosition::MiddleRight,
        )?;
        root.present().map_err(plot_err)?;
    }
    finish(svg)
}

/// The trained (solid) and untrained (faint) curves of a verification, as `(x, y)` points.
fn verification_series(
    trained: &Verification,
    untrained: &Verification,
    point: impl Fn(f64, f64) -> (f64, f64),
) -> Vec<Series> {
    let pts = |v: &Verification| -> Vec<(f64, f64)> {
        v.roc.iter().map(|p| point(p.far, p.tar)).collect()
    };
    vec![
        Series {
            name: format!("untrained head (EER {:.3})", untrained.eer),
            points: pts(untrained),
            colour: PALETTE[7],
            faint: true,
        },
        Series {
            name: format!(
                "trained head (EER {:.3}, AUC {:.3})",
                trained.eer, trained.roc_auc
            ),
            points: pts(trained),
            colour: PALETTE[0],
            faint: false,
        },
    ]
}

/// ROC curves: true accept rate against false accept rate, trained and untrained head, with
/// the chance diagonal; the curves end at accepting nothing, `(0, 0)`.
pub fn roc_svg(
    title: &str,
    trained: &Verification,
    untrained: &Verification,
) -> Result<String, ReportError> {
    let mut series = verification_series(trained, untrained, |far, tar| (far, tar));
    for s in &mut series {
        s.points.push((0.0, 0.0));
    }
    series.insert(
        0,
        Series {
            name: "chance".into(),
            points: vec![(0.0, 0.0), (1.0, 1.0)],
            colour: PALETTE[7],
            faint: true,
        },
    );
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PANEL_W + 120, PANEL_H + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        line_panel(
            &body,
            "accept a pair when its cosine ≥ threshold",
            "false accept rate",
            "true accept rate",
            &series,
            false,
            SeriesLabelPosition::LowerRight,
        )?;
        root.present().map_err(plot_err)?;
    }
    finish(svg)
}

/// DET curves: false reject rate against false accept rate on a log axis (from the smallest
/// non-zero FAR, 1 / impostor pairs, down to its power of ten), trained and untrained head.
pub fn det_svg(
    title: &str,
    trained: &Verification,
    untrained: &Verification,
) -> Result<String, ReportError> {
    let pairs = trained.impostor_pairs.max(untrained.impostor_pairs).max(1) as f64;
    let far_min = 10f64.powf((1.0 / pairs).log10().floor()).max(1e-9);
    let series = verification_series(trained, untrained, |far, tar| (far, 1.0 - tar));
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (PANEL_W + 120, PANEL_H + 60)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let body = root.titled(title, ("sans-serif", 20)).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&body)
            .caption("lower left is better", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(58)
            .build_cartesian_2d((far_min..1.0).log_scale(), 0.0..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate (log)")
            .y_desc("false reject rate")
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for s in &series {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| x >= far_min && x.is_finite() && y.is_finite())
                .collect();
            if pts.is_empty() {
                continue;
            }
            let style = if s.faint {
                s.colour.mix(0.45).stroke_width(1)
            } else {
                s.colour.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(pts, style))
                .map_err(plot_err)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    finish(svg)
}
