//! SVG charts of a run: throughput and latency over time with the fault windows shaded,
//! availability by side of each fault, and the distribution of staleness.
//!
//! Everything is drawn with plotters' SVG backend, which writes text as `<text>` elements and
//! leaves the fonts to whoever views the file, so rendering needs no system fonts. Every chart
//! is rendered into a string first and written in one go, so a failed render leaves no
//! half-written file and write errors carry the path.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::coord::combinators::LogCoord;
use plotters::coord::ranged1d::{AsRangedCoord, DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::RelativeSize;

use crate::history::{History, Kind, Outcome};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const FONT: &str = "sans-serif";
// plotters writes an SVG font-size of about 0.8 times these.
const TITLE_SIZE: u32 = 26;
const LABEL_SIZE: u32 = 16;
const SMALL_SIZE: u32 = 15;
/// Width of the legend column to the right of each plot; legends live outside the plots so
/// they never hide a line, a bar or a fault label.
const LEGEND_MIN_W: u32 = 170;
/// Headroom above the highest throughput, so the fault labels at the top of the panel sit
/// above the lines.
const HEADROOM: f64 = 1.3;
/// More bins than this would only make the SVG heavy: one bin per second up to an hour.
const MAX_BINS: usize = 3600;
/// Points kept per CDF line; beyond this a step line is indistinguishable at chart size.
const MAX_CDF_POINTS: usize = 2000;
/// Latencies and staleness below this (ms) are drawn at it: a log axis has no zero.
const LOG_FLOOR_MS: f64 = 0.01;

// Colour-blind-friendly (Okabe–Ito) first, then the Tableau ones for many series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(120, 120, 120),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(188, 189, 34),
];
const MAJORITY: RGBColor = RGBColor(0, 114, 178);
const MINORITY: RGBColor = RGBColor(230, 159, 0);
const AXIS_GREY: RGBColor = RGBColor(110, 110, 110);

/// The operation groups of the timeline, in legend order.
const GROUPS: [(&str, RGBColor); 3] = [("writes", PALETTE[0]), ("heartbeats", PALETTE[2]), ("reads", PALETTE[1])];

fn group(kind: Kind) -> usize {
    // Exhaustive on purpose: a new kind must be placed in a group, not silently dropped.
    match kind {
        Kind::Register | Kind::Cancel => 0,
        Kind::Renew => 1,
        Kind::Read | Kind::ReadLinearizable | Kind::ReadAll | Kind::ReadDelta => 2,
    }
}

fn fault_colour(fault: &str) -> RGBColor {
    match fault {
        "kill" => RGBColor(214, 39, 40),
        "pause" => RGBColor(148, 103, 189),
        "partition" => RGBColor(140, 86, 75),
        _ => RGBColor(127, 127, 127),
    }
}

/// Throughput and latency over the run, with every fault window shaded.
///
/// The upper panel shows successful operations per second for three groups: writes
/// (`Register`, `Cancel`), heartbeats (`Renew`) and reads (`Read`, `ReadLinearizable`,
/// `ReadAll`, `ReadDelta`), binned by completion time. The lower panel shows, per group and
/// per second, the p50 (solid) and p99 (dashed) latency of successful operations in ms on a
/// log axis, binned by invocation time. Each fault is a translucent band from its start to its
/// heal (or to the end of the chart when it was not healed inside the run), labelled with its
/// `what`.
pub fn timeline(path: &Path, title: &str, h: &History) -> Result<()> {
    let duration_s = run_seconds(h);
    let bins = Bins::new(duration_s);

    let mut counts = [vec![0u64; bins.n], vec![0u64; bins.n], vec![0u64; bins.n]];
    let mut latencies: [Vec<Vec<f64>>; 3] =
        [vec![Vec::new(); bins.n], vec![Vec::new(); bins.n], vec![Vec::new(); bins.n]];
    for op in h.ops.iter().filter(|op| op.outcome == Outcome::Ok) {
        let g = group(op.kind);
        // Throughput counts an operation when it is served; latency is charged to when it
        // was sent, so a request stuck through a fault shows up inside the fault's band.
        counts[g][bins.index(secs(op.complete))] += 1;
        let ms = op.complete.saturating_sub(op.invoke) as f64 / 1000.0;
        latencies[g][bins.index(secs(op.invoke))].push(ms.max(LOG_FLOOR_MS));
    }

    let rates: Vec<Vec<(f64, f64)>> = counts
        .iter()
        .map(|c| c.iter().enumerate().map(|(i, &n)| (bins.centre(i), n as f64 / bins.width)).collect())
        .collect();
    let mut p50: Vec<Vec<Option<f64>>> = Vec::new();
    let mut p99: Vec<Vec<Option<f64>>> = Vec::new();
    for per_bin in &mut latencies {
        let (a, b): (Vec<_>, Vec<_>) = per_bin
            .iter_mut()
            .map(|l| {
                l.sort_by(f64::total_cmp);
                (percentile(l, 0.50), percentile(l, 0.99))
            })
            .unzip();
        p50.push(a);
        p99.push(b);
    }

    let faults: Vec<Band> = h
        .faults
        .iter()
        .map(|f| {
            let start = secs(f.start).min(duration_s);
            // A heal at or before the start means the fault was still on when the run ended.
            let end = if f.heal > f.start { secs(f.heal).min(duration_s) } else { duration_s };
            Band { start, end, what: f.what.clone(), colour: fault_colour(&f.fault) }
        })
        .collect();

    let max_rate = rates.iter().flatten().map(|&(_, r)| r).fold(0.0, f64::max);
    let y_max = (max_rate * HEADROOM).max(1.0);
    let (lat_lo, lat_hi) = decades(latencies.iter().flatten().flatten().copied(), (0.1, 1000.0));

    let mut fault_kinds: Vec<&str> = Vec::new();
    for f in &h.faults {
        if !fault_kinds.contains(&f.fault.as_str()) {
            fault_kinds.push(&f.fault);
        }
    }
    let mut upper_legend: Vec<LegendEntry> =
        GROUPS.iter().map(|&(name, colour)| LegendEntry::new(name, colour, Mark::Line)).collect();
    upper_legend
        .extend(fault_kinds.iter().map(|k| LegendEntry::new(format!("fault: {k}"), fault_colour(k), Mark::Band)));
    let mut lower_legend = Vec::new();
    for &(name, colour) in &GROUPS {
        lower_legend.push(LegendEntry::new(format!("{name} p50"), colour, Mark::Line));
        lower_legend.push(LegendEntry::new(format!("{name} p99"), colour, Mark::Dashed));
    }
    let legend_w = legend_width(upper_legend.iter().chain(&lower_legend));

    render(path, (1200, 820), |root| {
        let area = root.titled(title, (FONT, TITLE_SIZE))?;
        let (upper, lower) = area.split_vertically(RelativeSize::Height(0.55));
        let (upper_plot, upper_key) = split_legend(&upper, legend_w);
        let (lower_plot, lower_key) = split_legend(&lower, legend_w);

        let x_fmt = |v: &f64| fmt_num(*v);
        let mut chart = ChartBuilder::on(&upper_plot)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration_s, 0.0..y_max)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| fmt_num(*v))
            .y_desc("successful ops/s")
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .draw()?;
        shade_faults(chart.plotting_area(), &faults, 0.0, y_max)?;
        label_faults(&chart, &faults, y_max)?;
        for (g, points) in rates.iter().enumerate() {
            let style = GROUPS[g].1.stroke_width(2);
            draw_runs(chart.plotting_area(), std::slice::from_ref(points), style, false)?;
        }
        if h.ops.is_empty() {
            no_data(chart.plotting_area(), (duration_s / 2.0, y_max / 2.0))?;
        }
        draw_legend(&upper_key, "throughput", &upper_legend)?;

        let mut chart = ChartBuilder::on(&lower_plot)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..duration_s, log_axis(lat_lo, lat_hi))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.08))
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| fmt_num(*v))
            .x_desc("seconds since the start of the run")
            .y_desc("latency (ms, log)")
            .label_style((FONT, LABEL_SIZE))
            .axis_desc_style((FONT, LABEL_SIZE))
            .draw()?;
        shade_faults(chart.plotting_area(), &faults, lat_lo, lat_hi)?;
        for g in 0..GROUPS.len() {
            let colour = GROUPS[g].1;
            let runs_p50 = runs(&p50[g], &bins);
            let runs_p99 = runs(&p99[g], &bins);
            draw_runs(chart.plotting_area(), &runs_p50, colour.stroke_width(2), false)?;
            draw_runs(chart.plotting_area(), &runs_p99, colour.stroke_width(2), true)?;
        }
        draw_legend(&lower_key, "latency", &lower_legend)?;
        Ok(())
    })
}

/// Availability by side of each fault, as horizontal bars.
///
/// Each row (`label`, majority, minority) becomes one group: a bar for the fraction of
/// operations served on the majority side and one for the minority side, on a 0–100 % axis,
/// with the value written at the end of the bar. `None` means the side saw no operations: no
/// bar is drawn and the row says "no ops", so it cannot be mistaken for 0 %.
pub fn availability(path: &Path, title: &str, rows: &[(String, Option<f64>, Option<f64>)]) -> Result<()> {
    let n = rows.len();
    // Rows are drawn top to bottom in the given order, so row i sits at y = n - 1 - i.
    let y_of = |i: usize| (n - 1 - i) as f64;
    let y_top = n.max(1) as f64 - 0.5;
    let key_points: Vec<f64> = (0..n).map(y_of).collect();
    let row_label = |v: &f64| {
        let r = v.round();
        if (v - r).abs() > 1e-6 || r < 0.0 || r as usize >= n {
            return String::new();
        }
        rows[n - 1 - r as usize].0.clone()
    };
    let longest = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let label_w = (longest as u32 * 9 + 24).clamp(60, 460);

    let legend = [
        LegendEntry::new("majority side", MAJORITY, Mark::Bar),
        LegendEntry::new("minority side", MINORITY, Mark::Bar),
    ];
    let legend_w = legend_width(legend.iter());
    let height = (130 + 64 * n as u32).clamp(240, 4000);

    render(path, (1000 + label_w, height), |root| {
        let area = root.titled(title, (FONT, TITLE_SIZE))?;
        let (plot, key) = split_legend(&area, legend_w);
        let mut chart =
            ChartBuilder::on(&plot).margin(10).x_label_area_size(40).y_label_area_size(label_w).build_cartesian_2d(
                // Past 100 % so that "100.0%" fits after a full bar.
                linear_axis(0.0..1.16, vec![0.0, 0.25, 0.5, 0.75, 1.0]),
                linear_axis(-0.5..y_top, key_points.clone()),
            )?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(BLACK.mix(0.1))
            .x_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .y_label_formatter(&row_label)
            .x_desc("operations served")
            .label_style((FONT, LABEL_SIZE + 1))
            .axis_desc_style((FONT, LABEL_SIZE))
            .draw()?;

        let area = chart.plotting_area();
        let value_style =
            TextStyle::from((FONT, SMALL_SIZE).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        let none_style = value_style.color(&AXIS_GREY);
        for (i, (_, majority, minority)) in rows.iter().enumerate() {
            let y = y_of(i);
            for (value, colour, lo, hi) in
                [(*majority, MAJORITY, y + 0.04, y + 0.38), (*minority, MINORITY, y - 0.38, y - 0.04)]
            {
                let mid = (lo + hi) / 2.0;
                match value.filter(|v| v.is_finite()) {
                    Some(v) => {
                        let v = v.clamp(0.0, 1.0);
                        area.draw(&Rectangle::new([(0.0, lo), (v, hi)], colour.filled()))?;
                        area.draw(&(EmptyElement::at((v, mid)) + Text::new(fmt_pct(v), (4, 0), value_style.clone())))?;
                    }
                    None => {
                        area.draw(&(EmptyElement::at((0.0, mid)) + Text::new("no ops", (4, 0), none_style.clone())))?;
                    }
                }
            }
        }
        if rows.is_empty() {
            no_data(area, (0.58, 0.0))?;
        }
        draw_legend(&key, "side", &legend)?;
        Ok(())
    })
}

/// Staleness distribution: one empirical CDF per series.
///
/// Each series is (label, staleness samples in ms, in any order). The x axis is staleness in
/// ms, logarithmic when the samples span more than two decades; the y axis is the fraction of
/// that series' stale reads at or below x. The legend gives each series' count, median and
/// maximum, or "(none)" for a series without samples.
pub fn staleness(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> Result<()> {
    let curves: Vec<Curve> = series
        .iter()
        .enumerate()
        .map(|(i, (label, samples))| {
            let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).map(|v| v.max(0.0)).collect();
            sorted.sort_by(f64::total_cmp);
            let legend = match (percentile(&sorted, 0.5), sorted.last()) {
                (Some(p50), Some(max)) => {
                    format!("{label} (n={}, p50 {} ms, max {} ms)", sorted.len(), fmt_num(p50), fmt_num(*max))
                }
                _ => format!("{label} (none)"),
            };
            Curve { legend, colour: PALETTE[i % PALETTE.len()], sorted }
        })
        .collect();

    let all = || curves.iter().flat_map(|c| c.sorted.iter().copied());
    let max = all().fold(0.0, f64::max);
    let min_positive = all().filter(|&v| v > 0.0).fold(f64::INFINITY, f64::min);
    let wide = min_positive.is_finite() && max / min_positive.max(LOG_FLOOR_MS) >= 100.0;

    let legend: Vec<LegendEntry> =
        curves.iter().map(|c| LegendEntry::new(c.legend.clone(), c.colour, Mark::Line)).collect();
    let legend_w = legend_width(legend.iter());

    render(path, (900 + legend_w, 560), |root| {
        let area = root.titled(title, (FONT, TITLE_SIZE))?;
        let (plot, key) = split_legend(&area, legend_w);
        if wide {
            // Zeros would drag a log axis down to the floor; they are drawn at its left edge.
            let (lo, hi) = decades(all().filter(|&v| v > 0.0), (0.1, 1000.0));
            let x = log_axis(lo, hi);
            draw_cdfs(&plot, x, lo, hi, "staleness (ms, log)", &curves)?;
        } else {
            let hi = nice_ceiling(max * 1.05).max(1.0);
            draw_cdfs(&plot, 0.0..hi, 0.0, hi, "staleness (ms)", &curves)?;
        }
        draw_legend(&key, "series", &legend)?;
        Ok(())
    })
}

/// An axis ticked exactly at the given points: bar rows need a tick (and so a label) at every
/// row centre and nowhere else, and a log axis should label every decade, including the lowest,
/// which plotters' own log ticks can miss to rounding. (plotters' `with_key_points` would do,
/// but it loses the value formatter that drawing the mesh requires.)
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

fn linear_axis(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Ticked<RangedCoordf64> {
    Ticked { inner: range.into(), ticks }
}

/// A log axis from one power of ten to another (as [`decades`] gives), ticked at each decade.
fn log_axis(lo: f64, hi: f64) -> Ticked<LogCoord<f64>> {
    let (first, last) = (lo.log10().round() as i32, hi.log10().round() as i32);
    Ticked { inner: (lo..hi).log_scale().into(), ticks: (first..=last).map(|e| 10f64.powi(e)).collect() }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

struct Curve {
    legend: String,
    colour: RGBColor,
    sorted: Vec<f64>,
}

/// Draws the CDF panel; generic over the x axis so the linear and log cases share it.
fn draw_cdfs<X>(plot: &Area, x_range: X, x_lo: f64, x_hi: f64, x_desc: &str, curves: &[Curve]) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(plot)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, 0.0..1.0)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(BLACK.mix(0.08))
        .x_label_formatter(&|v| fmt_num(*v))
        .y_label_formatter(&|v| fmt_num(*v))
        .x_desc(x_desc)
        .y_desc("fraction of stale reads ≤ x")
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, LABEL_SIZE))
        .draw()?;
    let area = chart.plotting_area();
    for curve in curves {
        let points = ecdf_steps(&curve.sorted, x_lo, x_hi);
        draw_runs(area, &[points], curve.colour.stroke_width(2), false)?;
    }
    if curves.iter().all(|c| c.sorted.is_empty()) {
        no_data(area, ((x_lo + x_hi) / 2.0, 0.5))?;
    }
    Ok(())
}

/// The points of an empirical CDF drawn as steps, from `(x_lo, 0)` to `(x_hi, 1)`. Values
/// below `x_lo` (zeros on a log axis) are drawn at `x_lo`. Long inputs are thinned to at most
/// [`MAX_CDF_POINTS`] ranks, always keeping the last.
fn ecdf_steps(sorted: &[f64], x_lo: f64, x_hi: f64) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    // Only the last of equal values is a corner of the step line.
    let corners: Vec<usize> = (0..n).filter(|&i| i + 1 == n || sorted[i + 1] > sorted[i]).collect();
    let stride = corners.len().div_ceil(MAX_CDF_POINTS).max(1);
    let mut kept: Vec<usize> = corners.iter().copied().step_by(stride).collect();
    if kept.last() != corners.last() {
        kept.extend(corners.last());
    }

    let mut points = vec![(x_lo, 0.0)];
    let mut below = 0.0;
    for i in kept {
        let x = sorted[i].clamp(x_lo, x_hi);
        let at_or_below = (i + 1) as f64 / n as f64;
        points.push((x, below));
        points.push((x, at_or_below));
        below = at_or_below;
    }
    points.push((x_hi, 1.0));
    points
}

/// A fault window in seconds on the chart's x axis.
struct Band {
    start: f64,
    end: f64,
    what: String,
    colour: RGBColor,
}

fn shade_faults<Y>(
    area: &DrawingArea<SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[Band],
    y_lo: f64,
    y_hi: f64,
) -> Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    for f in faults {
        // A zero-length window would vanish; a sliver keeps an instant fault visible.
        let end = f.end.max(f.start);
        area.draw(&Rectangle::new([(f.start, y_lo), (end, y_hi)], f.colour.mix(0.15).filled()))?;
        area.draw(&PathElement::new(vec![(f.start, y_lo), (f.start, y_hi)], f.colour.mix(0.6)))?;
    }
    Ok(())
}

/// Writes each fault's `what` at the top of its band, stacking labels into rows so that
/// labels of nearby faults do not overprint each other.
fn label_faults(
    chart: &ChartContext<SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    faults: &[Band],
    y_max: f64,
) -> Result<()> {
    const ROWS: usize = 4;
    let area = chart.plotting_area();
    let (width_px, height_px) = area.dim_in_pixel();
    let x_range = chart.x_range();
    let span = (x_range.end - x_range.start).max(f64::EPSILON);
    let px_per_s = f64::from(width_px.max(1)) / span;
    let row_h = 18.0 / f64::from(height_px.max(1)) * y_max;

    let mut order: Vec<&Band> = faults.iter().collect();
    order.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut busy_until = [f64::NEG_INFINITY; ROWS];
    for f in order {
        let text_s = (f.what.chars().count() as f64 * 8.0 + 10.0) / px_per_s;
        // Near the right edge the label would run off the chart, so it ends at the heal.
        let right_aligned = f.start + text_s > x_range.end;
        let (from, to) = if right_aligned { (f.end - text_s, f.end) } else { (f.start, f.start + text_s) };
        let row = (0..ROWS)
            .find(|&r| busy_until[r] <= from)
            .unwrap_or_else(|| (0..ROWS).min_by(|&a, &b| busy_until[a].total_cmp(&busy_until[b])).unwrap_or(0));
        busy_until[row] = to;

        let y = y_max - row as f64 * row_h;
        let colour = RGBColor(f.colour.0 / 2, f.colour.1 / 2, f.colour.2 / 2);
        let style = TextStyle::from((FONT, SMALL_SIZE).into_font()).color(&colour);
        let label = if right_aligned {
            EmptyElement::at((f.end, y))
                + Text::new(f.what.clone(), (-4, 3), style.pos(Pos::new(HPos::Right, VPos::Top)))
        } else {
            EmptyElement::at((f.start, y))
                + Text::new(f.what.clone(), (4, 3), style.pos(Pos::new(HPos::Left, VPos::Top)))
        };
        area.draw(&label)?;
    }
    Ok(())
}

/// Draws each run of points as one line (dashed if asked); a run of a single point, which a
/// line cannot show, becomes a dot.
fn draw_runs<CT>(
    area: &DrawingArea<SVGBackend<'_>, CT>,
    runs: &[Vec<(f64, f64)>],
    style: ShapeStyle,
    dashed: bool,
) -> Result<()>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for run in runs {
        match run.as_slice() {
            [] => {}
            [point] => area.draw(&Circle::new(*point, 2, style.filled()))?,
            _ if dashed => area.draw(&DashedPathElement::new(run.clone(), 6, 4, style))?,
            _ => area.draw(&PathElement::new(run.clone(), style))?,
        }
    }
    Ok(())
}

/// Splits per-bin values into runs of consecutive bins that have a value, so that a gap (a
/// second without a successful operation) breaks the line instead of being bridged.
fn runs(values: &[Option<f64>], bins: &Bins) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => current.push((bins.centre(i), *v)),
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Equal-width time bins over the run, about one second each.
struct Bins {
    n: usize,
    /// Seconds; dividing counts by it gives a rate even when the run is not a whole number
    /// of seconds long.
    width: f64,
}

impl Bins {
    fn new(duration_s: f64) -> Self {
        let n = (duration_s.round() as usize).clamp(1, MAX_BINS);
        Bins { n, width: duration_s / n as f64 }
    }

    fn index(&self, t_s: f64) -> usize {
        // `as` saturates, so times before the start land in the first bin.
        ((t_s / self.width) as usize).min(self.n - 1)
    }

    fn centre(&self, i: usize) -> f64 {
        (i as f64 + 0.5) * self.width
    }
}

/// The length of the run in seconds, at least one so that an empty history still has axes.
fn run_seconds(h: &History) -> f64 {
    let last_op = h.ops.iter().map(|op| op.complete.max(op.invoke)).max();
    let last_fault = h.faults.iter().map(|f| f.start).max();
    // `end` may be missing (zero) in a partial history; heals are left out because an
    // unhealed fault may carry any placeholder there.
    let end = h.end.max(last_op.unwrap_or(0)).max(last_fault.unwrap_or(0));
    secs(end).max(1.0)
}

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The powers of ten enclosing the positive values (floored at [`LOG_FLOOR_MS`]), so a log
/// axis gets a labelled tick at every decade; `default` when there are none.
fn decades(values: impl Iterator<Item = f64>, default: (f64, f64)) -> (f64, f64) {
    let (lo, hi) =
        values.map(|v| v.max(LOG_FLOOR_MS)).fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return default;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil());
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * base).find(|&c| c >= v).unwrap_or(10.0 * base)
}

/// A number as a person would write it on an axis: no trailing zeros, no "1.0".
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.001..1e6).contains(&a) {
        return format!("{v:.0e}");
    }
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn no_data<CT: CoordTranslate>(area: &DrawingArea<SVGBackend<'_>, CT>, at: CT::From) -> Result<()> {
    let style =
        TextStyle::from((FONT, TITLE_SIZE).into_font()).color(&AXIS_GREY).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new("no data", at, style))?;
    Ok(())
}

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Band,
    Bar,
}

struct LegendEntry {
    label: String,
    colour: RGBColor,
    mark: Mark,
}

impl LegendEntry {
    fn new(label: impl Into<String>, colour: RGBColor, mark: Mark) -> Self {
        LegendEntry { label: label.into(), colour, mark }
    }
}

/// Wide enough for the longest label (about 8 px a character at [`LABEL_SIZE`]), within
/// bounds.
fn legend_width<'e>(entries: impl Iterator<Item = &'e LegendEntry>) -> u32 {
    let longest = entries.map(|e| e.label.chars().count()).max().unwrap_or(0);
    (longest as u32 * 8 + 60).clamp(LEGEND_MIN_W, 480)
}

fn split_legend<'a>(area: &Area<'a>, legend_w: u32) -> (Area<'a>, Area<'a>) {
    let (w, _) = area.dim_in_pixel();
    area.split_horizontally(w.saturating_sub(legend_w))
}

fn draw_legend(area: &Area, heading: &str, entries: &[LegendEntry]) -> Result<()> {
    let heading_style = TextStyle::from((FONT, LABEL_SIZE + 1).into_font().style(FontStyle::Bold))
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let label_style =
        TextStyle::from((FONT, LABEL_SIZE).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
    let x = 8;
    area.draw(&Text::new(heading.to_string(), (x, 22), heading_style))?;
    for (i, e) in entries.iter().enumerate() {
        let y = 46 + 22 * i as i32;
        match e.mark {
            Mark::Line => {
                area.draw(&PathElement::new(vec![(x, y), (x + 28, y)], e.colour.stroke_width(2)))?;
            }
            Mark::Dashed => {
                for (a, b) in [(x, x + 8), (x + 12, x + 20), (x + 24, x + 28)] {
                    area.draw(&PathElement::new(vec![(a, y), (b, y)], e.colour.stroke_width(2)))?;
                }
            }
            Mark::Band => {
                area.draw(&Rectangle::new([(x, y - 7), (x + 28, y + 7)], e.colour.mix(0.15).filled()))?;
                area.draw(&PathElement::new(vec![(x, y - 7), (x, y + 7)], e.colour.mix(0.6)))?;
            }
            Mark::Bar => {
                area.draw(&Rectangle::new([(x, y - 6), (x + 28, y + 6)], e.colour.filled()))?;
            }
        }
        area.draw(&Text::new(e.label.clone(), (x + 36, y), label_style.clone()))?;
    }
    Ok(())
}

/// Renders into memory with a white background, then writes the file.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<()> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Fault, Op};

    const SECOND: u64 = 1_000_000;

    fn op(i: u64, kind: Kind, invoke: u64, latency: u64, outcome: Outcome) -> Op {
        Op {
            process: (i % 7) as u32,
            node: (i % 3) as u8,
            kind,
            key: format!("APP/i-{}", i % 5),
            value: (kind == Kind::Register).then_some(i),
            seen: None,
            listed: Vec::new(),
            invoke,
            complete: invoke + latency,
            outcome,
            status: if outcome == Outcome::Ok { 200 } else { 0 },
        }
    }

    /// 20 s, 400 operations of every kind, one "kill leader" window from 8 s to 12 s during
    /// which the minority node fails and the rest slow down.
    fn history() -> History {
        const KINDS: [Kind; 7] = [
            Kind::Register,
            Kind::Renew,
            Kind::Read,
            Kind::Renew,
            Kind::ReadLinearizable,
            Kind::ReadAll,
            Kind::ReadDelta,
        ];
        let fault = Fault {
            fault: "kill".into(),
            what: "kill leader".into(),
            minority: vec![0],
            start: 8 * SECOND,
            heal: 12 * SECOND,
        };
        let mut ops: Vec<Op> = (0..400u64)
            .map(|i| {
                let invoke = i * 50_000;
                let kind = if i % 40 == 39 { Kind::Cancel } else { KINDS[(i % 7) as usize] };
                let in_fault = (fault.start..fault.heal).contains(&invoke);
                let (latency, outcome) = match (in_fault, i % 3) {
                    (true, 0) => (2 * SECOND, Outcome::Unknown),
                    (true, _) => (150_000 + i * 100, Outcome::Ok),
                    (false, _) => (800 + (i * 37) % 9_000, Outcome::Ok),
                };
                op(i, kind, invoke, latency, outcome)
            })
            .collect();
        ops.sort_by_key(|op| op.complete);
        History { ops, faults: vec![fault], samples: Vec::new(), end: 20 * SECOND }
    }

    fn read_svg(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).expect("chart written");
        assert!(svg.starts_with("<svg"), "{} is not an SVG", path.display());
        svg
    }

    #[test]
    fn renders_the_three_charts_with_their_labels() {
        let dir = tempfile::tempdir().expect("tempdir");

        let path = dir.path().join("timeline.svg");
        timeline(&path, "raft under kill", &history()).expect("timeline");
        let svg = read_svg(&path);
        for label in [
            "raft under kill",
            "writes",
            "heartbeats",
            "reads",
            "writes p50",
            "reads p99",
            "kill leader",
            "fault: kill",
            "successful ops/s",
        ] {
            assert!(svg.contains(label), "timeline lacks {label:?}");
        }

        let path = dir.path().join("availability.svg");
        let rows = vec![
            ("raft · kill".to_string(), Some(1.0), Some(0.0)),
            ("raft · partition".to_string(), Some(0.97), None),
            ("p2p · partition".to_string(), Some(0.5), Some(0.25)),
        ];
        availability(&path, "availability", &rows).expect("availability");
        let svg = read_svg(&path);
        for label in
            ["raft · kill", "raft · partition", "p2p · partition", "majority side", "minority side", "97.0%", "no ops"]
        {
            assert!(svg.contains(label), "availability lacks {label:?}");
        }

        let path = dir.path().join("staleness.svg");
        let series = vec![
            ("p2p local".to_string(), (1..=300).map(|i| f64::from(i % 97) * 3.5).collect()),
            ("raft local".to_string(), vec![4000.0, 0.5, 12.0, 0.0, 250.0]),
            ("raft linearizable".to_string(), Vec::new()),
        ];
        staleness(&path, "staleness", &series).expect("staleness");
        let svg = read_svg(&path);
        for label in ["p2p local", "raft local", "raft linearizable (none)", "ms, log"] {
            assert!(svg.contains(label), "staleness lacks {label:?}");
        }
    }

    #[test]
    fn renders_empty_and_degenerate_inputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = |name: &str| dir.path().join(name);

        timeline(&at("t-empty.svg"), "empty", &History::default()).expect("empty timeline");
        read_svg(&at("t-empty.svg"));

        // A fault never healed (heal before start), one healed after the end, and every
        // operation failing at time zero.
        let h = History {
            ops: vec![op(1, Kind::Register, 0, 0, Outcome::Fail)],
            faults: vec![
                Fault {
                    fault: "partition".into(),
                    what: "isolate leader".into(),
                    minority: vec![2],
                    start: 0,
                    heal: 0,
                },
                Fault {
                    fault: "pause".into(),
                    what: "pause follower".into(),
                    minority: vec![1],
                    start: 500_000,
                    heal: u64::MAX,
                },
            ],
            samples: Vec::new(),
            end: 0,
        };
        timeline(&at("t-degenerate.svg"), "degenerate", &h).expect("degenerate timeline");
        assert!(read_svg(&at("t-degenerate.svg")).contains("isolate leader"));

        availability(&at("a-empty.svg"), "empty", &[]).expect("empty availability");
        read_svg(&at("a-empty.svg"));
        availability(&at("a-none.svg"), "none", &[("x".into(), None, None)]).expect("availability without operations");
        read_svg(&at("a-none.svg"));

        staleness(&at("s-empty.svg"), "empty", &[]).expect("no series");
        read_svg(&at("s-empty.svg"));
        staleness(&at("s-none.svg"), "none", &[("lonely".into(), Vec::new())]).expect("series without samples");
        assert!(read_svg(&at("s-none.svg")).contains("lonely (none)"));
        staleness(&at("s-narrow.svg"), "narrow", &[("zeros".into(), vec![0.0, 0.0, 3.0])]).expect("narrow range");
        assert!(read_svg(&at("s-narrow.svg")).contains("staleness (ms)"));
    }

    #[test]
    fn ecdf_steps_climb_to_one_and_keep_ties_together() {
        let points = ecdf_steps(&[1.0, 2.0, 2.0, 5.0], 0.0, 10.0);
        assert_eq!(points.first(), Some(&(0.0, 0.0)));
        assert_eq!(points.last(), Some(&(10.0, 1.0)));
        assert!(points.contains(&(2.0, 0.75)));
        assert!(!points.contains(&(2.0, 0.5)));

        let many: Vec<f64> = (0..100_000).map(f64::from).collect();
        let thinned = ecdf_steps(&many, 0.0, 1e5);
        assert!(thinned.len() <= 2 * MAX_CDF_POINTS + 4);
        assert!(thinned.contains(&(99_999.0, 1.0)));
    }

    #[test]
    fn helpers_handle_edges() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(decades(std::iter::empty(), (0.1, 1000.0)), (0.1, 1000.0));
        assert_eq!(decades([2.0, 300.0].into_iter(), (0.1, 1.0)), (1.0, 1000.0));
        assert_eq!(decades([10.0].into_iter(), (0.1, 1.0)), (10.0, 100.0));
        assert_eq!(fmt_num(1.0), "1");
        assert_eq!(fmt_num(0.25), "0.25");
        assert_eq!(fmt_num(1500.0), "1500");
        assert_eq!(nice_ceiling(3.2), 5.0);
        let bins = Bins::new(0.0_f64.max(1.0));
        assert_eq!((bins.n, bins.index(-1.0), bins.index(99.0)), (1, 0, 0));
    }
}
