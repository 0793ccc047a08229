//! Tests of `fewshot_host::plot`: the PNGs decode, have the right size and
//! are not blank; errors name the path.

use std::path::Path;

use fewshot_host::plot::{line_chart_png, roc_png, Series};
use fewshot_host::stats::{open_set_roc, verification_roc};

/// Decodes the PNG at `path` and checks it is an 800x600 image with more than
/// one colour; returns the number of distinct colours.
fn check_png(path: &Path) -> usize {
    let bytes = std::fs::read(path).expect("PNG written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .expect("decodable PNG")
        .to_rgb8();
    assert_eq!(img.dimensions(), (800, 600));
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 1, "image is a single colour");
    colours.len()
}

/// The files left in `dir` (to check no temporary file stays behind).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn roc_png_writes_a_decodable_800x600_png() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("roc.png");
    let genuine: Vec<f32> = (0..200).map(|i| (i % 50) as f32 / 50.0).collect();
    let impostor: Vec<f32> = (0..2000).map(|i| 0.6 + (i % 97) as f32 / 97.0).collect();
    let verification = verification_roc(&genuine, &impostor);
    let door_genuine: Vec<(f32, bool)> = genuine.iter().map(|&d| (d, d < 0.9)).collect();
    let door = open_set_roc(&door_genuine, &impostor);
    roc_png(
        &path,
        "ROC: 5-way 1-shot",
        &[("verification", &verification), ("open set", &door)],
    )
    .expect("ROC written");
    // Lines in two colours, text, grid: far more than a handful of colours.
    assert!(check_png(&path) > 10);
    assert_eq!(files_in(dir.path()), ["roc.png"]);
}

#[test]
fn roc_png_overwrites_an_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("roc.png");
    std::fs::write(&path, b"old").expect("write");
    let roc = verification_roc(&[0.1, 0.2], &[0.3, 0.05]);
    roc_png(&path, "ROC", &[("model", &roc)]).expect("ROC written");
    check_png(&path);
    assert_eq!(files_in(dir.path()), ["roc.png"]);
}

#[test]
fn missing_directory_gives_an_error_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-dir").join("roc.png");
    let roc = verification_roc(&[0.1, 0.2], &[0.3, 0.4]);
    let err = roc_png(&path, "ROC", &[("model", &roc)]).expect_err("directory is missing");
    let message = format!("{err:#}");
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the path: {message}"
    );
    assert!(!path.exists());
    assert_eq!(files_in(dir.path()), Vec::<String>::new());

    let err = line_chart_png(&path, "t", "x", "y", &[], false).expect_err("directory is missing");
    assert!(format!("{err:#}").contains(&path.display().to_string()));
}

#[test]
fn line_chart_png_linear_and_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loss: Vec<(f64, f64)> = (0..50)
        .map(|i| (f64::from(i), 2.0 * (-f64::from(i) / 10.0).exp()))
        .collect();
    let acc: Vec<(f64, f64)> = (0..50)
        .map(|i| (f64::from(i), 1.0 - (-f64::from(i) / 8.0).exp()))
        .collect();
    let series = [
        Series {
            name: "train loss",
            points: &loss,
        },
        Series {
            name: "val accuracy",
            points: &acc,
        },
    ];
    let linear = dir.path().join("linear.png");
    line_chart_png(&linear, "Training", "epoch", "value", &series, false).expect("written");
    assert!(check_png(&linear) > 10);

    // Log x with zeros (clamped to 1e-4) and a non-finite point (skipped).
    let pts = [
        (0.0, 0.1),
        (1e-3, 0.5),
        (f64::NAN, 0.7),
        (0.1, 0.9),
        (1.0, 1.0),
    ];
    let log = dir.path().join("log.png");
    line_chart_png(
        &log,
        "Log x",
        "FAR",
        "TAR",
        &[Series {
            name: "curve",
            points: &pts,
        }],
        true,
    )
    .expect("written");
    assert!(check_png(&log) > 10);
}

#[test]
fn line_chart_png_with_no_data_draws_empty_axes() {
    // Documented choice: empty series (or series without points) still give a
    // chart, with empty axes.
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.png");
    line_chart_png(&empty, "Nothing yet", "x", "y", &[], false).expect("written");
    check_png(&empty);
    let no_points = dir.path().join("no-points.png");
    line_chart_png(
        &no_points,
        "Nothing yet",
        "x",
        "y",
        &[Series {
            name: "empty",
            points: &[],
        }],
        true,
    )
    .expect("written");
    check_png(&no_points);
    // A single point gives a non-degenerate range.
    let single = dir.path().join("single.png");
    line_chart_png(
        &single,
        "One point",
        "x",
        "y",
        &[Series {
            name: "one",
            points: &[(3.0, 3.0)],
        }],
        false,
    )
    .expect("written");
    check_png(&single);
}

#[test]
fn line_chart_png_rejects_a_range_too_large_to_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("huge.png");
    let pts = [(-f64::MAX, 0.0), (f64::MAX, 1.0)];
    let err = line_chart_png(
        &path,
        "huge",
        "x",
        "y",
        &[Series {
            name: "huge",
            points: &pts,
        }],
        false,
    )
    .expect_err("span overflows f64");
    let message = format!("{err:#}");
    assert!(message.contains("too large"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(!path.exists());
}

#[test]
fn keep_a_sample_for_inspection() {
    // Writes sample charts when FEWSHOT_PLOT_SAMPLES names a folder, so a person
    // can look at them; does nothing otherwise.
    let Some(dir) = std::env::var_os("FEWSHOT_PLOT_SAMPLES") else {
        return;
    };
    let dir = Path::new(&dir);
    let genuine: Vec<f32> = (0..500)
        .map(|i| 0.2 + 0.6 * ((i * 37) % 500) as f32 / 500.0)
        .collect();
    let impostor: Vec<f32> = (0..20000)
        .map(|i| 0.55 + 0.6 * ((i * 7919) % 20000) as f32 / 20000.0)
        .collect();
    let a = verification_roc(&genuine, &impostor);
    let shifted: Vec<f32> = genuine.iter().map(|g| g + 0.15).collect();
    let b = verification_roc(&shifted, &impostor);
    roc_png(
        &dir.join("roc.png"),
        "ROC on 5-way 1-shot episodes",
        &[("protonet", &a), ("baseline", &b)],
    )
    .expect("written");
    let loss: Vec<(f64, f64)> = (0..50)
        .map(|i| (f64::from(i), 2.0 * (-f64::from(i) / 10.0).exp()))
        .collect();
    let acc: Vec<(f64, f64)> = (0..50)
        .map(|i| (f64::from(i), 1.0 - (-f64::from(i) / 8.0).exp()))
        .collect();
    line_chart_png(
        &dir.join("line.png"),
        "Training",
        "epoch",
        "loss / accuracy",
        &[
            Series {
                name: "train loss",
                points: &loss,
            },
            Series {
                name: "val accuracy",
                points: &acc,
            },
        ],
        false,
    )
    .expect("written");
    let pts = [(0.0, 0.1), (1e-3, 0.5), (0.02, 0.7), (0.1, 0.9), (1.0, 1.0)];
    line_chart_png(
        &dir.join("log.png"),
        "Log x",
        "FAR",
        "TAR",
        &[Series {
            name: "curve",
            points: &pts,
        }],
        true,
    )
    .expect("written");
    line_chart_png(&dir.join("empty.png"), "Nothing yet", "x", "y", &[], false).expect("written");
}
