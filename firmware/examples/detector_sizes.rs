//! How the detector's input sizes trade misses, landmark stability and
//! time: 120 ORL and 45 Yale photos, each pasted at a random place and
//! height (`MIN`-`MAX` px) into a black 640×480 frame; per configuration, the
//! faces missed (in the photo or the frame), how far `find_face`'s landmarks
//! in the frame are from the photo's own (mapped back; the largest of the
//! five, in eye distances), and `find_face`'s mean time on the frames.
//!
//! `cargo run --release -p fewshot-firmware --example detector_sizes [MIN MAX]`
//! (data from `FEWSHOT_DATA`, else `../shared/data`; heights 150-400 by default).
use std::time::Instant;

use anyhow::{Context, Result};
use fewshot_firmware::core::{Frame, PixelFormat};
use fewshot_firmware::detect::{FaceDetector, InputSizes, DEFAULT_SIZES};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Lcg;

fn main() -> Result<()> {
    let data = common::data_dir();
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("MIN and MAX: face heights in pixels"))
        .collect::<Result<_>>()?;
    let (lo, hi) = match args[..] {
        [] => (150, 400),
        [lo, hi] if lo < hi && hi < 480 => (lo, hi),
        _ => anyhow::bail!("expected MIN MAX, 0 < MIN < MAX < 480"),
    };
    let sizes = |scan, rescan, refine| {
        Some(InputSizes {
            scan,
            rescan,
            refine,
            again: None,
        })
    };
    let configs = [
        ("320x320 file", None),
        ("default", Some(DEFAULT_SIZES)),
        (
            "default, no second refine",
            Some(InputSizes {
                again: None,
                ..DEFAULT_SIZES
            }),
        ),
        (
            "160x128/160",
            sizes((160, 128), Some((320, 256)), (160, 160)),
        ),
        (
            "192x160/128",
            sizes((192, 160), Some((320, 256)), (128, 128)),
        ),
        ("160x128/96", sizes((160, 128), Some((320, 256)), (96, 96))),
        ("128x96/128", sizes((128, 96), None, (128, 128))),
        ("160x128/128 no rescan", sizes((160, 128), None, (128, 128))),
    ];
    let mut photos = vec![];
    for p in 1..=40 {
        for n in 1..=3 {
            photos.push(data.join(format!("faces/orl/s{p}/{n}.pgm")));
        }
    }
    let yale = data.join("faces/yale");
    let mut people: Vec<_> = std::fs::read_dir(&yale)
        .with_context(|| format!("{}", yale.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    people.sort();
    for person in people.iter().take(15) {
        let mut shots: Vec<_> = std::fs::read_dir(person)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        shots.sort();
        photos.extend(shots.into_iter().take(3));
    }
    println!(
        "faces {lo}-{hi} px high in 640x480, {} photos",
        photos.len()
    );
    println!("| sizes (scan/refine) | missed | landmark shift / eye distance: mean, median, 90th pct | find_face |");
    println!("| --- | --- | --- | --- |");
    for (name, sizes) in configs {
        let file = match sizes {
            None => "models/yunet_s_320_320.onnx",
            Some(_) => "models/yunet_s_dynamic.onnx",
        };
        let det = FaceDetector::load(&data.join(file), sizes)?;
        let mut rng = Lcg(7);
        let (mut missed, mut shifts, mut seconds) = (0, vec![], 0.0);
        for photo in &photos {
            let img = image::open(photo)
                .with_context(|| format!("{}", photo.display()))?
                .into_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            let alone = det
                .find_face(&Frame::new(w, h, PixelFormat::Rgb8, img.as_raw())?)?
                .1;
            let height = lo + rng.next(hi - lo);
            let width = (img.width() as f32 * height as f32 / img.height() as f32).round() as u32;
            let (x, y) = (rng.next(640 - width.min(639)), rng.next(480 - height));
            let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([0, 0, 0]));
            let small =
                image::imageops::resize(&img, width, height, image::imageops::FilterType::Triangle);
            image::imageops::overlay(&mut canvas, &small, i64::from(x), i64::from(y));
            let frame = Frame::new(640, 480, PixelFormat::Rgb8, canvas.as_raw())?;
            let t = Instant::now();
            let placed = det.find_face(&frame)?.1;
            seconds += t.elapsed().as_secs_f64();
            let (Some(a), Some(p)) = (alone, placed) else {
                missed += 1;
                continue;
            };
            let s = height as f32 / img.height() as f32;
            let eyes = a.eye_distance();
            let shift = a
                .landmarks
                .iter()
                .zip(&p.landmarks)
                .map(|(q, r)| {
                    let back = [(r[0] - x as f32) / s, (r[1] - y as f32) / s];
                    (back[0] - q[0]).hypot(back[1] - q[1]) / eyes
                })
                .fold(0.0f32, f32::max);
            shifts.push(shift);
        }
        shifts.sort_by(f32::total_cmp);
        let at = |q: f32| shifts.get((q * shifts.len() as f32) as usize).copied();
        let mean = shifts.iter().sum::<f32>() / shifts.len().max(1) as f32;
        println!(
            "| {name} ({}) | {missed} | {mean:.3}, {:.3}, {:.3} | {:.1} ms |",
            det.input_sizes(),
            at(0.5).unwrap_or(f32::NAN),
            at(0.9).unwrap_or(f32::NAN),
            seconds / photos.len() as f64 * 1e3
        );
    }
    Ok(())
}
