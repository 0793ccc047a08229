//! Plots written as PNG files: line charts and ROC curves.
//!
//! Charts are drawn by `plotters` into an in-memory RGB buffer and saved with
//! the `image` crate. Text needs a TrueType font, read at run time (nothing is
//! bundled and plotters is not allowed to look up system fonts itself); it is
//! searched in this order:
//!
//! 1. the file named by the `FEWSHOT_FONT` environment variable, when set
//!    (a failure to use it is an error; there is no silent fallback);
//! 2. `/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`;
//! 3. any `*.ttf` under `/usr/share/fonts`, in sorted path order.
//!
//! The font is loaded once per process; installing `fonts-dejavu-core`
//! satisfies step 2.

use std::ffi::OsStr;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::stats::RocPoint;

/// Width of every chart, in pixels.
const WIDTH: u32 = 800;
/// Height of every chart, in pixels.
const HEIGHT: u32 = 600;
/// Font family name the font is registered under (and that plotters uses by
/// default for axis and legend labels).
const FAMILY: &str = "sans-serif";
/// Environment variable naming a `.ttf` file to use.
const FONT_ENV: &str = "FEWSHOT_FONT";
/// The preferred system font.
const DEJAVU: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Folder searched for any `.ttf` when DejaVu Sans is missing.
const FONT_DIR: &str = "/usr/share/fonts";
/// Smallest x drawn on a log-scale axis; smaller values (including 0) are
/// clamped to it.
const LOG_X_MIN: f64 = 1e-4;
/// Line colours, cycled through by series index.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// One named curve of (x, y) points.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend label of the curve.
    pub name: &'a str,
    /// Points in drawing order; non-finite points are skipped.
    pub points: &'a [(f64, f64)],
}

/// Line chart with a title, axis labels and a legend, saved as an 800x600 PNG.
///
/// With `log_x` the x axis is logarithmic and x values below `1e-4` (zero
/// included) are drawn at `1e-4`. Points with a NaN or infinite coordinate are
/// skipped. Empty `series` (or series without points) are allowed: the chart
/// is drawn with empty axes over `0..1` (`1e-4..1` with `log_x`). Data
/// spanning nearly the whole `f64` range is an error.
///
/// The PNG is written to a temporary file next to `path` and renamed into
/// place, so a failure never leaves a partial file at `path`. Fails when no
/// font can be found (see the module docs) or the file cannot be written.
pub fn line_chart_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    log_x: bool,
) -> anyhow::Result<()> {
    let curves: Vec<Curve> = series
        .iter()
        .map(|s| Curve {
            name: s.name.to_string(),
            points: s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| if log_x { (x.max(LOG_X_MIN), y) } else { (x, y) })
                .collect(),
        })
        .collect();
    let all = || curves.iter().flat_map(|c| c.points.iter());
    let (x_lo, x_hi) = extent(all().map(|p| p.0));
    let (y_lo, y_hi) = extent(all().map(|p| p.1));
    let y_range = padded(y_lo, y_hi, 0.05, (0.0, 1.0));
    let spec = ChartSpec {
        title,
        x_label,
        y_label,
        curves: &curves,
        y_range,
        x_markers: &[],
    };
    let x_range = if log_x {
        match (x_lo, x_hi) {
            (Some(lo), Some(hi)) if hi > lo => lo..hi,
            (Some(lo), Some(_)) => lo..lo * 10.0,
            _ => LOG_X_MIN..1.0,
        }
    } else {
        padded(x_lo, x_hi, 0.0, (0.0, 1.0))
    };
    // Values near f64::MAX would give an infinite span once padded.
    let finite = |r: &Range<f64>| r.start.is_finite() && r.end.is_finite() && r.end > r.start;
    if !finite(&x_range) || !finite(&spec.y_range) {
        bail!(
            "cannot draw chart {}: the data range is too large to plot",
            path.display()
        );
    }
    let buf = if log_x {
        render(
            &spec,
            log_range(x_range.start, x_range.end),
            &format_log_tick,
        )
    } else {
        render(&spec, x_range, &format_tick)
    }
    .with_context(|| format!("cannot draw chart {}", path.display()))?;
    save_png(path, buf)
}

/// The last component of a model's name (a path), short enough for a title.
pub fn file_label(name: &str) -> &str {
    std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(name)
}

/// ROC curve(s) saved as an 800x600 PNG: x = FAR on a log scale over
/// `1e-4..1`, y = TAR over `0..1`, one legend entry per curve, and dashed
/// guide lines at FAR `1e-3` and `1e-2`.
///
/// FAR values below `1e-4` (the `far = 0` points) are drawn at `1e-4`.
/// Writing and errors are as in [`line_chart_png`].
pub fn roc_png(path: &Path, title: &str, curves: &[(&str, &[RocPoint])]) -> anyhow::Result<()> {
    let curves: Vec<Curve> = curves
        .iter()
        .map(|&(name, points)| Curve {
            name: name.to_string(),
            points: points
                .iter()
                .filter(|p| p.far.is_finite() && p.tar.is_finite())
                .map(|p| (p.far.max(LOG_X_MIN), p.tar))
                .collect(),
        })
        .collect();
    let spec = ChartSpec {
        title,
        x_label: "false accept rate (FAR)",
        y_label: "true accept rate (TAR)",
        curves: &curves,
        y_range: 0.0..1.0,
        x_markers: &[1e-3, 1e-2],
    };
    let buf = render(&spec, log_range(LOG_X_MIN, 1.0), &format_log_tick)
        .with_context(|| format!("cannot draw ROC chart {}", path.display()))?;
    save_png(path, buf)
}

/// A curve ready to draw: finite points, already clamped for the axes.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Everything about a chart except its x coordinate type.
struct ChartSpec<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    curves: &'a [Curve],
    y_range: Range<f64>,
    /// x positions of vertical dashed guide lines.
    x_markers: &'a [f64],
}

/// Smallest and largest of the values (None for no values).
fn extent(values: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>) {
    values.fold((None, None), |(lo, hi), v| {
        (
            Some(lo.map_or(v, |l: f64| l.min(v))),
            Some(hi.map_or(v, |h: f64| h.max(v))),
        )
    })
}

/// A linear axis range covering `lo..hi` plus `pad` (a fraction of the span)
/// on each side; a single value gets a unit-wide range around it, and no
/// values give `default`.
fn padded(lo: Option<f64>, hi: Option<f64>, pad: f64, default: (f64, f64)) -> Range<f64> {
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let p = (hi - lo) * pad;
            (lo - p)..(hi + p)
        }
        (Some(v), Some(_)) => (v - 0.5)..(v + 0.5),
        _ => default.0..default.1,
    }
}

/// A log-scale axis over `lo..hi`, widened by a hair at both ends: plotters
/// computes decade ticks as `10^k` with rounding error, and a tick landing a
/// fraction outside the range (e.g. at exactly `1e-4`) would lose its label.
fn log_range(lo: f64, hi: f64) -> LogCoord<f64> {
    (lo * (1.0 - 1e-9)..(hi * (1.0 + 1e-9)).min(f64::MAX))
        .log_scale()
        .into()
}

/// Tick label on a linear axis: no more digits than needed.
fn format_tick(v: &f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Tick label on a log axis: `1e-3`, `1e0`, ...
fn format_log_tick(v: &f64) -> String {
    format!("{v:.0e}")
}

/// The legend corner that covers the fewest data points, so the legend hides
/// as little of the curves as possible (ties prefer lower right).
fn legend_corner(
    curves: &[Curve],
    to_unit_x: impl Fn(f64) -> f64,
    y_range: &Range<f64>,
) -> SeriesLabelPosition {
    let to_unit_y = |y: f64| (y - y_range.start) / (y_range.end - y_range.start);
    let corners = [
        (SeriesLabelPosition::LowerRight, true, false),
        (SeriesLabelPosition::UpperRight, true, true),
        (SeriesLabelPosition::LowerLeft, false, false),
        (SeriesLabelPosition::UpperLeft, false, true),
    ];
    let count = |right: bool, upper: bool| {
        curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|&&(x, y)| {
                let (ux, uy) = (to_unit_x(x), to_unit_y(y));
                let in_x = if right { ux >= 0.55 } else { ux <= 0.45 };
                let in_y = if upper { uy >= 0.6 } else { uy <= 0.4 };
                in_x && in_y
            })
            .count()
    };
    corners
        .into_iter()
        .min_by_key(|&(_, right, upper)| count(right, upper))
        .map_or(SeriesLabelPosition::LowerRight, |(pos, _, _)| pos)
}

/// Draws the chart into a fresh RGB buffer of `WIDTH x HEIGHT`.
fn render<X>(
    spec: &ChartSpec<'_>,
    x_range: X,
    x_format: &dyn Fn(&f64) -> String,
) -> anyhow::Result<Vec<u8>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    ensure_font()?;
    let mut buf = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(spec.title, (FAMILY, 26))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range, spec.y_range.clone())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(spec.x_label)
            .y_desc(spec.y_label)
            .axis_desc_style((FAMILY, 18))
            .label_style((FAMILY, 15))
            .x_labels(6)
            .y_labels(11)
            .x_label_formatter(x_format)
            .y_label_formatter(&format_tick)
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()
            .map_err(plot_err)?;

        let grey = RGBColor(120, 120, 120);
        for &m in spec.x_markers {
            let line = [(m, spec.y_range.start), (m, spec.y_range.end)];
            chart
                .draw_series(DashedLineSeries::new(line, 6, 5, grey.stroke_width(1)))
                .map_err(plot_err)?;
        }

        for (i, curve) in spec.curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(curve.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }

        if !spec.curves.is_empty() {
            let x_px = chart.plotting_area().get_pixel_range().0;
            let to_unit_x = |x: f64| {
                let px = chart.backend_coord(&(x, spec.y_range.start)).0;
                f64::from(px - x_px.start) / f64::from((x_px.end - x_px.start).max(1))
            };
            let corner = legend_corner(spec.curves, to_unit_x, &spec.y_range);
            chart
                .configure_series_labels()
                .position(corner)
                .margin(12)
                .label_font((FAMILY, 16))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(buf)
}

/// Turns a plotters error (which may not be `Send + Sync`) into an anyhow one.
fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting failed: {e}")
}

/// Saves the RGB buffer as a PNG at `path`, through a temporary file in the
/// same folder that is renamed into place.
fn save_png(path: &Path, buf: Vec<u8>) -> anyhow::Result<()> {
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, buf)
        .ok_or_else(|| anyhow!("internal error: RGB buffer has the wrong size"))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("cannot write plot {}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = image
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(anyhow::Error::from)
        .and_then(|()| fs::rename(&tmp, path).map_err(anyhow::Error::from));
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write plot {}", path.display()))
}

/// Registers the font with plotters once per process; later calls return the
/// first outcome.
fn ensure_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match REGISTERED.get_or_init(register_system_font) {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow!("{e}")),
    }
}

/// Finds a font (see the module docs), registers it as `FAMILY` and returns
/// its path.
fn register_system_font() -> Result<PathBuf, String> {
    if let Some(var) = std::env::var_os(FONT_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(var);
        return try_register(&path)
            .map(|()| path.clone())
            .map_err(|e| format!("cannot use the font {FONT_ENV}={}: {e}", path.display()));
    }
    let mut candidates = vec![PathBuf::from(DEJAVU)];
    let mut found = Vec::new();
    collect_ttf(Path::new(FONT_DIR), &mut found, 0);
    found.sort();
    candidates.extend(found);
    for path in candidates {
        if try_register(&path).is_ok() {
            return Ok(path);
        }
    }
    Err(format!(
        "no usable TrueType font for plot text: {FONT_ENV} is not set, {DEJAVU} is missing \
         and no readable *.ttf was found under {FONT_DIR}; install fonts-dejavu-core \
         (e.g. `apt-get install fonts-dejavu-core`) or set {FONT_ENV} to a .ttf file"
    ))
}

/// Reads the font file and registers it with plotters.
fn try_register(path: &Path) -> Result<(), String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    // plotters keeps a `'static` reference to the font: the bytes live for the
    // rest of the process (this happens once, or a few times if candidate
    // files are not valid fonts).
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| "not a valid TrueType/OpenType font".to_string())
}

/// Appends every `*.ttf` file under `dir` to `out`, recursing into folders
/// (unreadable entries are skipped; symlinked folders are not followed, and
/// the depth is bounded to stay clear of loops).
fn collect_ttf(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect_ttf(&path, out, depth + 1);
        } else if path
            .extension()
            .and_then(OsStr::to_str)
            .is_some_and(|e| e.eq_ignore_ascii_case("ttf"))
        {
            out.push(path);
        }
    }
}
