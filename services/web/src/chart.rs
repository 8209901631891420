//! Time-series charts as inline SVG, drawn by the server.
//!
//! Sales (tonnes, value, orders) and households onboarded, by day, week or month, are drawn
//! here as an `<svg>` element put straight into the page: no chart library and no JavaScript
//! reach the phone, and the chart is there as soon as the HTML is.
//!
//! What the markup promises:
//!
//! * **Accessible name.** `role="img"` with `aria-labelledby` naming the chart's `<title>` and
//!   `<desc>`. A screen reader reads that and nothing inside (an image's children are
//!   presentational), so the description should state the point of the chart, and the page
//!   must also offer the figures as a table or a CSV download (WCAG 1.1.1).
//! * **Colour.** Bars and the line are `#0b5e3c` (7.8:1 against white), negative bars
//!   `#9b2c2c` (7.5:1), text `#333333` (12.6:1), gridlines `#8c8c8c` (3.4:1): every part needed
//!   to read the chart has at least 3:1 (WCAG 1.4.11). Colour never carries meaning alone: a
//!   negative bar is also below the zero line and its tooltip carries the minus sign.
//! * **Strict CSP.** No `style` attributes and no `<style>`: only presentation attributes
//!   (`fill`, `stroke`, `font-size`, …), which `style-src 'self'` allows, and CSS classes
//!   (`chart` with `chart-kind-bars` or `chart-kind-line`, `chart-grid`, `chart-zero`, `chart-axis-y`, `chart-axis-x`, `chart-data`,
//!   `chart-bar-negative`, `chart-line`, `chart-points`, `chart-empty`) for the page's CSS to
//!   refine.
//! * **Small screens.** A `viewBox` of 480 × 240 with `width="100%"` and no fixed size: the
//!   chart scales to a 320 px screen and keeps its proportions.
//! * **Bounded size.** Up to [`DETAIL_LIMIT`] points, every bar (or point of a line) is its own
//!   element with a native tooltip (`<title>` "label: value"): about 110 bytes a point plus the
//!   label and value texts, under 50 KB for 400 points with date labels. Beyond that, bars are
//!   one `<path>` per sign and a line is one `<polyline>`, decimated to [`DETAIL_LIMIT`]
//!   columns keeping each column's minimum and maximum (what would be drawn at that width
//!   anyway): the size then no longer grows with the number of points, about 25 KB at most
//!   plus at most 8 x-axis and 5 y-axis labels, so ten years of days (3,660 points) stays
//!   well under 60 KB. There are no per-point tooltips then; the page's table has the figures.
//! * **Exact scales.** Values are `i64`; the axis is computed in `i128` (no overflow for any
//!   `i64`), and floats are used only for drawing coordinates, written with at most one
//!   decimal. The same input always gives the same bytes.

use std::fmt::Write as _;

/// One period of a series: its label as the reader reads it (already formatted by the caller,
/// e.g. with [`crate::format::date`] or [`crate::format::month`]) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// The period, as shown under the axis and in the tooltip (`01/12/2026`, `tháng 12/2026`).
    pub label: String,
    /// The figure for the period, in the series' unit (grams, đồng, a count). May be negative:
    /// a correction can make a day's net figure negative.
    pub value: i64,
}

/// How the series is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A bar per period, from the zero line: for amounts per period (sales per day).
    Bars,
    /// A line through the periods: for levels over time (households onboarded to date).
    Line,
}

/// A chart to draw.
pub struct Chart<'a> {
    /// Unique on the page: the ids of the `<title>` and `<desc>` are `{id}-title` and
    /// `{id}-desc`. Characters other than ASCII letters, digits, `-` and `_` are replaced by
    /// `-` (an id with a space would break `aria-labelledby`); an empty id becomes `chart`.
    pub id: &'a str,
    /// The chart's accessible name, e.g. "Sản lượng bán theo ngày (tấn)".
    pub title: &'a str,
    /// What the chart shows, for screen readers: the period, the unit, the trend.
    pub description: &'a str,
    /// The series, oldest period first.
    pub points: &'a [Point],
    /// Bars or a line.
    pub kind: Kind,
    /// Writes a value for the y-axis and the tooltips, e.g. `|v| format::compact(v, lang)`.
    pub format_value: &'a dyn Fn(i64) -> String,
    /// Shown in the middle of the chart when `points` is empty ("Chưa có số liệu").
    pub empty_text: &'a str,
}

/// Above this many points a series is decimated to this many columns and drawn as one shape,
/// so the SVG's size stops growing with the number of points (see the module documentation).
pub const DETAIL_LIMIT: usize = 400;

/// The `viewBox` width and height.
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 240.0;
/// The height of the viewBox of a chart with no data: only a line of text.
const EMPTY_HEIGHT: f64 = 80.0;
/// Space above the plot (half a label sticks out above the top gridline) and below it (the
/// x-axis labels), and to the right.
const TOP: f64 = 12.0;
const BOTTOM: f64 = 32.0;
const RIGHT: f64 = 8.0;
/// Text size in viewBox units, and a generous estimate of a character's width at that size
/// (labels are measured with it so they never overlap: the server cannot measure fonts).
const FONT_SIZE: f64 = 15.0;
const CHAR_WIDTH: f64 = FONT_SIZE * 0.6;
/// Minimum space between two x-axis labels, and the most labels drawn.
const LABEL_GAP: f64 = 8.0;
const MAX_X_LABELS: usize = 8;
/// Colours (see the module documentation for their contrast).
const DATA_COLOUR: &str = "#0b5e3c";
const NEGATIVE_COLOUR: &str = "#9b2c2c";
const TEXT_COLOUR: &str = "#333333";
const GRID_COLOUR: &str = "#8c8c8c";

/// Draws the chart as an `<svg>` element to put inline in the page.
pub fn render(chart: &Chart) -> String {
    let id = sanitise_id(chart.id);
    let kind_class = match chart.kind {
        Kind::Bars => "chart-kind-bars",
        Kind::Line => "chart-kind-line",
    };
    let height = if chart.points.is_empty() {
        EMPTY_HEIGHT
    } else {
        HEIGHT
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {kind_class}\" role=\"img\" \
         aria-labelledby=\"{id}-title {id}-desc\" viewBox=\"0 0 {} {}\" width=\"100%\" \
         preserveAspectRatio=\"xMidYMid meet\" font-family=\"system-ui, sans-serif\" \
         font-size=\"{}\">\n<title id=\"{id}-title\">{}</title>\n<desc id=\"{id}-desc\">{}</desc>\n",
        num(WIDTH),
        num(height),
        num(FONT_SIZE),
        escape(chart.title),
        escape(chart.description),
    );
    if chart.points.is_empty() {
        let _ = writeln!(
            svg,
            "<text class=\"chart-empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{TEXT_COLOUR}\">{}</text>",
            num(WIDTH / 2.0),
            num(EMPTY_HEIGHT / 2.0 + FONT_SIZE * 0.35),
            escape(chart.empty_text),
        );
    } else {
        draw(&mut svg, chart);
    }
    svg.push_str("</svg>");
    svg
}

/// The axis, the data and the labels of a chart with at least one point.
fn draw(svg: &mut String, chart: &Chart) {
    let points = chart.points;
    let (min, max) = points.iter().fold((0i64, 0i64), |(lo, hi), p| {
        (lo.min(p.value), hi.max(p.value))
    });
    let scale = Scale::new(min, max);

    // Y-axis labels, measured first: the widest decides the left margin.
    let ticks: Vec<(i128, Option<String>)> = scale
        .ticks()
        .map(|t| (t, i64::try_from(t).ok().map(chart.format_value)))
        .collect();
    let widest = ticks
        .iter()
        .filter_map(|(_, label)| label.as_ref())
        .map(|label| text_width(label))
        .fold(0.0, f64::max);
    let left = (widest + 10.0).clamp(24.0, 200.0);
    let plot = Plot {
        left,
        right: WIDTH - RIGHT,
        top: TOP,
        bottom: HEIGHT - BOTTOM,
        scale,
    };

    // Gridlines, except at zero where the zero line goes; a tick beyond i64 (only for data
    // near i64::MAX) has no label to give it, so it gets no line either.
    svg.push_str(&format!(
        "<g class=\"chart-grid\" stroke=\"{GRID_COLOUR}\" stroke-width=\"1\" stroke-dasharray=\"2 3\">"
    ));
    for (tick, label) in &ticks {
        if *tick != 0 && label.is_some() {
            let y = num(plot.y(*tick));
            let _ = write!(
                svg,
                "<line x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>",
                num(plot.left),
                num(plot.right)
            );
        }
    }
    svg.push_str("</g>\n");
    let _ = write!(
        svg,
        "<g class=\"chart-axis-y\" fill=\"{TEXT_COLOUR}\" text-anchor=\"end\">"
    );
    for (tick, label) in &ticks {
        if let Some(label) = label {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                num(plot.left - 6.0),
                num(plot.y(*tick) + FONT_SIZE * 0.35),
                escape(label)
            );
        }
    }
    svg.push_str("</g>\n");

    match (chart.kind, points.len() > DETAIL_LIMIT) {
        (Kind::Bars, false) => bars(svg, chart, &plot),
        (Kind::Bars, true) => decimated_bars(svg, points, &plot),
        (Kind::Line, false) => line(svg, chart, &plot),
        (Kind::Line, true) => decimated_line(svg, points, &plot),
    }

    // The zero line over the data, so it shows where bars meet it.
    let y0 = num(plot.y(0));
    let _ = writeln!(
        svg,
        "<line class=\"chart-zero\" x1=\"{}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"{TEXT_COLOUR}\" stroke-width=\"1.5\"/>",
        num(plot.left),
        num(plot.right)
    );
    x_labels(svg, points, &plot);
}

/// A bar per point, each with its tooltip.
fn bars(svg: &mut String, chart: &Chart, plot: &Plot) {
    let slot = plot.slot(chart.points.len());
    let width = (slot * 0.8).min(48.0);
    let _ = write!(svg, "<g class=\"chart-data\" fill=\"{DATA_COLOUR}\">");
    for (i, p) in chart.points.iter().enumerate() {
        let value = i128::from(p.value);
        let top = plot.y(value.max(0));
        let bottom = plot.y(value.min(0));
        let negative = if p.value < 0 {
            format!(" class=\"chart-bar-negative\" fill=\"{NEGATIVE_COLOUR}\"")
        } else {
            String::new()
        };
        let _ = write!(
            svg,
            "<rect{negative} x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"><title>{}</title></rect>",
            num(plot.x(i, slot) - width / 2.0),
            num(top),
            num(width),
            num(bottom - top),
            tooltip(chart, p)
        );
    }
    svg.push_str("</g>\n");
}

/// A line through the points, with a marker per point carrying its tooltip.
fn line(svg: &mut String, chart: &Chart, plot: &Plot) {
    let slot = plot.slot(chart.points.len());
    let coords: Vec<(String, String)> = chart
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| (num(plot.x(i, slot)), num(plot.y(i128::from(p.value)))))
        .collect();
    polyline(svg, coords.iter().map(|(x, y)| (x.as_str(), y.as_str())));
    let radius = num((slot * 0.35).clamp(1.0, 3.0));
    let _ = write!(svg, "<g class=\"chart-points\" fill=\"{DATA_COLOUR}\">");
    for (p, (x, y)) in chart.points.iter().zip(&coords) {
        let _ = write!(
            svg,
            "<circle cx=\"{x}\" cy=\"{y}\" r=\"{radius}\"><title>{}</title></circle>",
            tooltip(chart, p)
        );
    }
    svg.push_str("</g>\n");
}

/// The `<polyline>` of a line chart.
fn polyline<'s>(svg: &mut String, coords: impl Iterator<Item = (&'s str, &'s str)>) {
    let _ = write!(
        svg,
        "<polyline class=\"chart-line\" fill=\"none\" stroke=\"{DATA_COLOUR}\" stroke-width=\"2\" \
         stroke-linejoin=\"round\" points=\""
    );
    for (i, (x, y)) in coords.enumerate() {
        if i > 0 {
            svg.push(' ');
        }
        let _ = write!(svg, "{x},{y}");
    }
    svg.push_str("\"/>\n");
}

/// The points split into [`DETAIL_LIMIT`] consecutive columns, as index ranges.
fn columns(len: usize) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> {
    // In u128 so that `column * len` cannot overflow whatever the length.
    let bound = move |column: usize| (column as u128 * len as u128 / DETAIL_LIMIT as u128) as usize;
    (0..DETAIL_LIMIT)
        .map(move |column| (column, bound(column)..bound(column + 1)))
        .filter(|(_, range)| !range.is_empty())
}

/// Many bars: per column, one rectangle from zero to the column's largest value and one from
/// zero to its smallest, each sign in one `<path>`.
fn decimated_bars(svg: &mut String, points: &[Point], plot: &Plot) {
    let width = (plot.right - plot.left) / DETAIL_LIMIT as f64;
    let mut positive = String::new();
    let mut negative = String::new();
    for (column, range) in columns(points.len()) {
        let slice = &points[range];
        let high = slice.iter().map(|p| p.value).max().unwrap_or(0);
        let low = slice.iter().map(|p| p.value).min().unwrap_or(0);
        let x = num(plot.left + column as f64 * width);
        let w = num(width);
        let y0 = num(plot.y(0));
        if high > 0 {
            let _ = write!(
                positive,
                "M{x} {}h{w}V{y0}h-{w}z",
                num(plot.y(i128::from(high)))
            );
        }
        if low < 0 {
            let _ = write!(
                negative,
                "M{x} {y0}h{w}V{}h-{w}z",
                num(plot.y(i128::from(low)))
            );
        }
    }
    if !positive.is_empty() {
        let _ = writeln!(
            svg,
            "<path class=\"chart-data\" fill=\"{DATA_COLOUR}\" d=\"{positive}\"/>"
        );
    }
    if !negative.is_empty() {
        let _ = writeln!(
            svg,
            "<path class=\"chart-data chart-bar-negative\" fill=\"{NEGATIVE_COLOUR}\" d=\"{negative}\"/>"
        );
    }
}

/// Many points on a line: per column, the smallest and the largest value, in the order they
/// occur, so every peak and trough is still drawn.
fn decimated_line(svg: &mut String, points: &[Point], plot: &Plot) {
    let slot = plot.slot(points.len());
    let mut kept: Vec<usize> = Vec::with_capacity(2 * DETAIL_LIMIT);
    for (_, range) in columns(points.len()) {
        let start = range.start;
        let slice = &points[range];
        // First occurrence of the minimum and of the maximum, in index order.
        let low = slice
            .iter()
            .enumerate()
            .min_by_key(|&(i, p)| (p.value, i))
            .map(|(i, _)| start + i);
        let high = slice
            .iter()
            .enumerate()
            .max_by_key(|&(i, p)| (p.value, std::cmp::Reverse(i)))
            .map(|(i, _)| start + i);
        let (Some(low), Some(high)) = (low, high) else {
            continue;
        };
        kept.push(low.min(high));
        if low != high {
            kept.push(low.max(high));
        }
    }
    let coords: Vec<(String, String)> = kept
        .iter()
        .map(|&i| {
            (
                num(plot.x(i, slot)),
                num(plot.y(i128::from(points[i].value))),
            )
        })
        .collect();
    polyline(svg, coords.iter().map(|(x, y)| (x.as_str(), y.as_str())));
}

/// The x-axis labels: every `step`-th period, with the smallest step that leaves at most
/// [`MAX_X_LABELS`] labels and a gap between any two of them (widths are estimated).
fn x_labels(svg: &mut String, points: &[Point], plot: &Plot) {
    let n = points.len();
    let slot = plot.slot(n);
    let place = |step: usize| -> Option<Vec<(usize, f64)>> {
        let mut placed = Vec::new();
        let mut previous_right = f64::NEG_INFINITY;
        for i in (0..n).step_by(step) {
            let half = text_width(&points[i].label) / 2.0;
            // Kept inside the viewBox: the first and last labels would stick out otherwise.
            let x = plot.x(i, slot).max(half).min(WIDTH - half);
            if x - half < previous_right + LABEL_GAP {
                return None;
            }
            previous_right = x + half;
            placed.push((i, x));
        }
        Some(placed)
    };
    let mut step = n.div_ceil(MAX_X_LABELS).max(1);
    let placed = loop {
        if step >= n {
            // One label always fits (or is as good as it gets).
            break place(n.max(1)).unwrap_or_default();
        }
        if let Some(placed) = place(step) {
            break placed;
        }
        step += 1;
    };
    let _ = write!(
        svg,
        "<g class=\"chart-axis-x\" fill=\"{TEXT_COLOUR}\" text-anchor=\"middle\">"
    );
    let y = num(plot.bottom + FONT_SIZE + 8.0);
    for (i, x) in placed {
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{y}\">{}</text>",
            num(x),
            escape(&points[i].label)
        );
    }
    svg.push_str("</g>\n");
}

/// `label: value`, escaped, for a native tooltip.
fn tooltip(chart: &Chart, p: &Point) -> String {
    escape(&format!("{}: {}", p.label, (chart.format_value)(p.value)))
}

/// The value axis: from `low` to `high` (both multiples of `step`, zero between them).
struct Scale {
    low: i128,
    high: i128,
    step: i128,
}

impl Scale {
    /// 3 to 5 "nice" gridline values (steps of 1, 2 or 5 × 10^k) covering `min..=max` and zero.
    fn new(min: i64, max: i64) -> Scale {
        let low = i128::from(min.min(0));
        let high = i128::from(max.max(0));
        let span = high - low;
        let floor = |v: i128, step: i128| v.div_euclid(step) * step;
        let ceil = |v: i128, step: i128| -((-v).div_euclid(step) * step);
        // The smallest nice step giving at most 4 intervals. 5 × 10^20 exceeds any i64 span,
        // so the search always ends; the last candidate is only a formal fallback.
        let mut chosen = (0, 1, 1);
        'search: for exponent in 0..=20u32 {
            for mantissa in [1i128, 2, 5] {
                let step = mantissa * 10i128.pow(exponent);
                let (l, h) = (floor(low, step), ceil(high, step));
                chosen = (l, h, step);
                if 4 * step >= span && (h - l) / step <= 4 {
                    break 'search;
                }
            }
        }
        let (mut l, mut h, step) = chosen;
        // At least 3 gridlines: extend on the side the data is on (up for all zeros).
        let intervals = (h - l) / step;
        if intervals < 2 {
            if high > 0 || low == 0 {
                h += (2 - intervals) * step;
            } else {
                l -= (2 - intervals) * step;
            }
        }
        Scale {
            low: l,
            high: h,
            step,
        }
    }

    /// The gridline values, lowest first.
    fn ticks(&self) -> impl Iterator<Item = i128> + '_ {
        let count = (self.high - self.low) / self.step;
        (0..=count).map(move |k| self.low + k * self.step)
    }
}

/// The plot area in viewBox units and the value scale mapped onto it.
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    scale: Scale,
}

impl Plot {
    /// The width given to each of `n` periods.
    fn slot(&self, n: usize) -> f64 {
        (self.right - self.left) / n.max(1) as f64
    }

    /// The centre of period `i`.
    fn x(&self, i: usize, slot: f64) -> f64 {
        self.left + (i as f64 + 0.5) * slot
    }

    /// The height of a value. The difference is taken exactly in i128 before it becomes a
    /// float, so large values keep their place relative to each other.
    fn y(&self, value: i128) -> f64 {
        let Scale { low, high, .. } = self.scale;
        let fraction = (high - value) as f64 / (high - low).max(1) as f64;
        self.top + fraction * (self.bottom - self.top)
    }
}

/// The estimated width of a text in viewBox units.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * CHAR_WIDTH
}

/// A coordinate with at most one decimal and no trailing `.0` (and never `-0`).
fn num(v: f64) -> String {
    // `as` saturates on out-of-range and maps NaN to 0: no panic whatever the float.
    let tenths = (v * 10.0).round() as i64;
    let sign = if tenths < 0 { "-" } else { "" };
    let (whole, fraction) = (tenths.unsigned_abs() / 10, tenths.unsigned_abs() % 10);
    if fraction == 0 {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// `id` reduced to the characters safe in an XML id and in a space-separated id list.
fn sanitise_id(id: &str) -> String {
    if id.is_empty() {
        return "chart".to_string();
    }
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Text escaped for XML content and attribute values; characters XML 1.0 forbids (control
/// characters other than tab and line breaks, U+FFFE, U+FFFF) are dropped so the SVG stays
/// well formed whatever a label holds.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{self, Lang};

    fn points(values: &[i64]) -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| Point {
                label: format!("{:02}/12/2026", i % 31 + 1),
                value,
            })
            .collect()
    }

    fn chart<'a>(
        points: &'a [Point],
        kind: Kind,
        format_value: &'a dyn Fn(i64) -> String,
    ) -> Chart<'a> {
        Chart {
            id: "sales",
            title: "Sản lượng bán theo ngày (tấn)",
            description: "Tháng 12/2026, theo ngày",
            points,
            kind,
            format_value,
            empty_text: "Chưa có số liệu",
        }
    }

    fn vi(v: i64) -> String {
        format::compact(v, Lang::Vi)
    }

    /// What the well-formedness check found: every element name and attribute, every text.
    #[derive(Default)]
    struct Parsed {
        elements: Vec<String>,
        attributes: Vec<(String, String)>,
        texts: Vec<String>,
    }

    /// A small XML well-formedness check: one root element, balanced and correctly nested tags,
    /// quoted attributes without duplicates, no raw `<` in text or values, and every `&` the
    /// start of an entity. Enough for what `render` writes (no comments, CDATA or PIs).
    fn well_formed(xml: &str) -> Parsed {
        fn check_entities(text: &str) {
            assert!(!text.contains('<'), "raw < in {text:?}");
            for (i, _) in text.match_indices('&') {
                let rest = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                        .iter()
                        .any(|e| rest.starts_with(e)),
                    "bare & in {text:?}"
                );
            }
        }
        fn is_name(name: &str) -> bool {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
        }
        let mut parsed = Parsed::default();
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            if stack.is_empty() {
                assert!(text.trim().is_empty(), "text outside the root: {text:?}");
            } else {
                check_entities(text);
                parsed.texts.push(text.to_string());
            }
            rest = &rest[open + 1..];
            let close = rest.find('>').expect("unclosed tag");
            let tag = &rest[..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.strip_suffix('/').unwrap_or(tag);
            let (name, mut attrs) = body.split_once(' ').unwrap_or((body, ""));
            assert!(is_name(name), "bad element name {name:?}");
            let mut seen = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (attr, after) = attrs.split_once("=\"").expect("attribute without =\"");
                assert!(is_name(attr), "bad attribute name {attr:?}");
                let (value, after) = after.split_once('"').expect("unterminated attribute");
                check_entities(value);
                assert!(!seen.contains(&attr), "duplicate attribute {attr}");
                seen.push(attr);
                parsed
                    .attributes
                    .push((attr.to_string(), value.to_string()));
                attrs = after;
                assert!(
                    attrs.is_empty() || attrs.starts_with(' '),
                    "attributes run together"
                );
            }
            if stack.is_empty() {
                roots += 1;
            }
            parsed.elements.push(name.to_string());
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
        assert!(stack.is_empty(), "unclosed elements {stack:?}");
        assert_eq!(roots, 1);
        parsed
    }

    /// The checks every chart must pass, whatever its data.
    fn check(svg: &str) -> Parsed {
        let parsed = well_formed(svg);
        assert_eq!(parsed.elements.first().map(String::as_str), Some("svg"));
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart "));
        assert!(svg.contains(" role=\"img\" aria-labelledby=\"sales-title sales-desc\""));
        assert!(svg.contains("<title id=\"sales-title\">"));
        assert!(svg.contains("<desc id=\"sales-desc\">"));
        assert!(svg.contains(" width=\"100%\""));
        let root = &svg[..svg.find('>').unwrap()];
        assert!(!root.contains(" height="), "no fixed size: {root}");
        assert!(
            !svg.contains("style"),
            "no style attributes or elements under a strict CSP"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Coordinates have at most one decimal.
        let numeric = [
            "x", "y", "x1", "x2", "y1", "y2", "width", "height", "cx", "cy", "r", "points", "d",
        ];
        for (name, value) in &parsed.attributes {
            if name == "width" && value == "100%" {
                continue;
            }
            if numeric.contains(&name.as_str()) {
                for number in value.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                    if let Some((_, fraction)) = number.split_once('.') {
                        assert!(fraction.len() <= 1, "{name}={value}");
                    }
                }
            }
        }
        parsed
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn no_data_still_has_a_name_and_says_so() {
        let svg = render(&chart(&[], Kind::Bars, &vi));
        check(&svg);
        assert!(svg.contains("viewBox=\"0 0 480 80\""));
        assert!(svg.contains(">Chưa có số liệu</text>"));
        assert!(svg.contains("<title id=\"sales-title\">Sản lượng bán theo ngày (tấn)</title>"));
        assert!(svg.contains("<desc id=\"sales-desc\">Tháng 12/2026, theo ngày</desc>"));
        assert_eq!(count(&svg, "<rect"), 0);
        let svg = render(&chart(&[], Kind::Line, &vi));
        check(&svg);
        assert!(!svg.contains("<polyline"));
    }

    #[test]
    fn one_point() {
        let data = points(&[1_200_000]);
        let svg = render(&chart(&data, Kind::Bars, &vi));
        let parsed = check(&svg);
        assert_eq!(count(&svg, "<rect"), 1);
        assert!(svg.contains("<title>01/12/2026: 1,2\u{a0}triệu</title>"));
        // The bar is capped in width rather than filling the chart.
        assert!(parsed
            .attributes
            .iter()
            .any(|(n, v)| n == "width" && v == "48"));
        let svg = render(&chart(&data, Kind::Line, &vi));
        check(&svg);
        assert_eq!(count(&svg, "<circle"), 1);
        assert_eq!(count(&svg, "<polyline"), 1);
    }

    #[test]
    fn gridlines_are_nice_and_include_zero() {
        for (min, max, expected) in [
            (0, 0, vec![0, 1, 2]),
            (0, 1, vec![0, 1, 2]),
            (0, 3, vec![0, 1, 2, 3]),
            (0, 100, vec![0, 50, 100]),
            (0, 101, vec![0, 50, 100, 150]),
            (0, 1_234_567, vec![0, 500_000, 1_000_000, 1_500_000]),
            (-30, 100, vec![-50, 0, 50, 100]),
            (-7, 0, vec![-8, -6, -4, -2, 0]),
            (-1, 0, vec![-2, -1, 0]),
            (5, 9, vec![0, 5, 10]),
        ] {
            let scale = Scale::new(min, max);
            let ticks: Vec<i128> = scale.ticks().collect();
            assert_eq!(ticks, expected, "{min}..{max}");
        }
        for (min, max) in [
            (i64::MIN, i64::MAX),
            (0, i64::MAX),
            (i64::MIN, 0),
            (-1, i64::MAX / 2),
        ] {
            let ticks: Vec<i128> = Scale::new(min, max).ticks().collect();
            assert!((3..=5).contains(&ticks.len()), "{min}..{max}: {ticks:?}");
            assert!(ticks.contains(&0));
            assert!(
                ticks[0] <= i128::from(min.min(0)) && *ticks.last().unwrap() >= i128::from(max)
            );
        }
    }

    #[test]
    fn all_zeros() {
        let data = points(&[0, 0, 0, 0]);
        let svg = render(&chart(&data, Kind::Bars, &vi));
        check(&svg);
        assert_eq!(count(&svg, "<rect"), 4);
        assert_eq!(count(&svg, "class=\"chart-zero\""), 1);
        assert!(svg.contains("<title>01/12/2026: 0</title>"));
        check(&render(&chart(&data, Kind::Line, &vi)));
    }

    #[test]
    fn negative_correction_goes_below_the_zero_line() {
        let data = points(&[120, 80, -30, 100]);
        let svg = render(&chart(&data, Kind::Bars, &vi));
        let parsed = check(&svg);
        assert_eq!(count(&svg, "class=\"chart-bar-negative\""), 1);
        assert!(svg.contains("<title>03/12/2026: -30</title>"));
        assert!(svg.contains(">-50</text>"), "a gridline below zero: {svg}");
        // The negative bar starts at the zero line and goes down.
        let zero_y: f64 = {
            let i = svg.find("class=\"chart-zero\"").unwrap();
            let rest = &svg[i..];
            let y = rest.split("y1=\"").nth(1).unwrap();
            y[..y.find('"').unwrap()].parse().unwrap()
        };
        let negative = svg
            .split("<rect class=\"chart-bar-negative\"")
            .nth(1)
            .unwrap();
        let y: f64 = negative
            .split("y=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (y - zero_y).abs() <= 0.1,
            "bar top {y} at zero line {zero_y}"
        );
        assert!(parsed.elements.iter().filter(|e| *e == "rect").count() == 4);
        check(&render(&chart(&data, Kind::Line, &vi)));
    }

    #[test]
    fn very_large_values() {
        for values in [
            vec![i64::MAX / 2, i64::MAX / 2 - 1, 0],
            vec![i64::MAX, i64::MIN, 0, 1],
            vec![i64::MIN / 2, -(i64::MAX / 2)],
        ] {
            let data = points(&values);
            for kind in [Kind::Bars, Kind::Line] {
                let svg = render(&chart(&data, kind, &vi));
                let parsed = check(&svg);
                let y_labels = parsed.texts.iter().filter(|t| t.contains("tỷ")).count();
                assert!(y_labels >= 2, "{svg}");
            }
        }
        let data = points(&[i64::MAX / 2]);
        let svg = render(&chart(&data, Kind::Bars, &vi));
        assert!(
            svg.contains("<title>01/12/2026: 4.611.686\u{a0}nghìn tỷ</title>"),
            "{svg}"
        );
    }

    #[test]
    fn many_points_stay_small() {
        // Ten years of days, with a correction: one shape per sign, bounded size.
        let values: Vec<i64> = (0..3_660)
            .map(|i| {
                if i == 1_000 {
                    -5_000
                } else {
                    (i * 7919) % 100_000
                }
            })
            .collect();
        let data = points(&values);
        for kind in [Kind::Bars, Kind::Line] {
            let svg = render(&chart(&data, kind, &vi));
            let parsed = check(&svg);
            assert!(svg.len() < 60_000, "{kind:?}: {} bytes", svg.len());
            assert_eq!(count(&svg, "<rect"), 0);
            assert_eq!(count(&svg, "<circle"), 0);
            let x_labels = svg.split("class=\"chart-axis-x\"").nth(1).unwrap();
            assert!(count(x_labels, "<text") <= MAX_X_LABELS);
            assert!(parsed.texts.len() < 40);
        }
        let bars = render(&chart(&data, Kind::Bars, &vi));
        assert_eq!(count(&bars, "<path"), 2);
        assert!(bars.contains("chart-bar-negative"));
        // Size does not grow with the number of points past the limit.
        let more = points(&vec![99_999; 100_000]);
        assert!(render(&chart(&more, Kind::Line, &vi)).len() < 30_000);
    }

    #[test]
    fn up_to_the_detail_limit_every_point_has_a_tooltip() {
        let data = points(
            &(0..DETAIL_LIMIT as i64)
                .map(|i| i * 1_000_003)
                .collect::<Vec<_>>(),
        );
        let svg = render(&chart(&data, Kind::Bars, &vi));
        check(&svg);
        assert_eq!(count(&svg, "<rect"), DETAIL_LIMIT);
        assert!(svg.len() < 60_000, "{} bytes", svg.len());
        let svg = render(&chart(&data, Kind::Line, &vi));
        check(&svg);
        assert_eq!(count(&svg, "<circle"), DETAIL_LIMIT);
        assert!(svg.len() < 60_000, "{} bytes", svg.len());
    }

    #[test]
    fn x_labels_never_overlap() {
        let data: Vec<Point> = (0..30)
            .map(|i| Point {
                label: format!("{:02}/12/2026", i + 1),
                value: i,
            })
            .collect();
        let svg = render(&chart(&data, Kind::Bars, &vi));
        check(&svg);
        let axis = svg.split("class=\"chart-axis-x\"").nth(1).unwrap();
        let xs: Vec<f64> = axis
            .split("<text x=\"")
            .skip(1)
            .map(|t| t[..t.find('"').unwrap()].parse().unwrap())
            .collect();
        assert!((2..=MAX_X_LABELS).contains(&xs.len()), "{xs:?}");
        let width = text_width("01/12/2026");
        for pair in xs.windows(2) {
            assert!(pair[1] - pair[0] >= width + LABEL_GAP - 0.2, "{xs:?}");
        }
        assert!(xs[0] - width / 2.0 >= -0.1 && xs.last().unwrap() + width / 2.0 <= WIDTH + 0.1);
        // A label too long for two to fit: just the first.
        let long = vec![
            Point {
                label: "x".repeat(40),
                value: 1,
            },
            Point {
                label: "y".repeat(40),
                value: 2,
            },
        ];
        let svg = render(&chart(&long, Kind::Line, &vi));
        check(&svg);
        assert!(svg.contains(&"x".repeat(40)) && !svg.contains(&format!(">{}<", "y".repeat(40))));
    }

    #[test]
    fn text_is_escaped() {
        let data = vec![Point {
            label: "<script>alert('x')</script> & \"q\"".to_string(),
            value: 5,
        }];
        let mut c = chart(&data, Kind::Bars, &vi);
        c.title = "Doanh thu <b>& \"lãi\"</b> 'năm'";
        c.description = "a < b > c\u{0}\u{1b}";
        c.id = "sales chart\"><x";
        let svg = render(&c);
        well_formed(&svg);
        assert!(!svg.contains("<script") && !svg.contains("<b>"));
        assert!(
            svg.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;: 5")
        );
        assert!(svg.contains("Doanh thu &lt;b&gt;&amp; &quot;lãi&quot;&lt;/b&gt; &#39;năm&#39;"));
        assert!(svg.contains("<desc id=\"sales-chart---x-desc\">a &lt; b &gt; c</desc>"));
        assert!(svg.contains("aria-labelledby=\"sales-chart---x-title sales-chart---x-desc\""));
        // A format_value that returns markup is escaped too.
        let markup = |_: i64| "<i>".to_string();
        let svg = render(&chart(&data, Kind::Line, &markup));
        well_formed(&svg);
        assert!(!svg.contains("<i>"));
        assert!(svg.contains(">&lt;i&gt;</text>"));
        assert!(render(&Chart {
            id: "",
            ..chart(&data, Kind::Bars, &vi)
        })
        .contains("\"chart-title\""));
    }

    #[test]
    fn output_is_deterministic() {
        let values: Vec<i64> = (0..500).map(|i| (i * i * 31) % 977 - 100).collect();
        let data = points(&values);
        let en = |v: i64| format::compact(v, Lang::En);
        for kind in [Kind::Bars, Kind::Line] {
            for data in [&data[..], &data[..37], &data[..1]] {
                let a = render(&chart(data, kind, &en));
                let b = render(&chart(data, kind, &en));
                assert_eq!(a, b);
                check(&a);
            }
        }
    }

    #[test]
    fn coordinates_are_short() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(-0.04), "0");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(12.36), "12.4");
        assert_eq!(num(-1.25), "-1.3");
        assert_eq!(num(f64::NAN), "0");
        assert_eq!(num(480.0), "480");
    }
}
