//! Where a face placed in a scene gets another door decision than the photo
//! alone, and why: the protocol of `tests/face_door.rs` (20 ORL people
//! enrolled from one photo, 180 genuine and 20 stranger probes, each shown
//! alone and pasted 150-400 px high at a random place in a black 640×480
//! frame), with per probe the nearest distance alone, placed, and placed but
//! aligned by the photo's own landmarks mapped into the scene (so the
//! resampling alone differs), and the landmark shift in eye distances.
//! Then the agreement for each way of finding the landmarks: as before
//! (one cell's landmarks, one refine pass), with a second refine pass
//! centred on the first's face and averaged with it, with the candidates'
//! landmarks voted, and both (the default: second pass at 96×96; or at
//! 128×128).
//!
//! `cargo run --release -p fewshot-firmware --example off_centre [MODEL] [PROBES_PER_PERSON]`
//! (default `models/face-distilled.onnx`, and 9 probes a person, photos 2-10, as the test).
use std::path::PathBuf;

use anyhow::{Context, Result};
use fewshot_firmware::core::detect::Face;
use fewshot_firmware::core::{DetectConfig, Distance, Frame, PixelFormat};
use fewshot_firmware::detect::{
    FaceDetector, InputSizes, DEFAULT_DETECTOR, DEFAULT_SIZES, VOTE_IOU,
};
use fewshot_firmware::encoder::OnnxEncoder;

#[path = "../tests/common/mod.rs"]
mod common;
use common::Lcg;

fn nearest(gallery: &[Vec<f32>], e: &[f32], d: Distance) -> (usize, f32) {
    gallery
        .iter()
        .enumerate()
        .map(|(i, g)| (i, d.between(g, e)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
}

fn main() -> Result<()> {
    let data = common::data_dir();
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/face-distilled.onnx")
    });
    let per_person: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(9);
    anyhow::ensure!(
        (1..=9).contains(&per_person),
        "PROBES_PER_PERSON {per_person}: expected 1 to 9 (ORL has 10 photos a person, the first is enrolled)"
    );
    let encoder = OnnxEncoder::load(&model)?;
    let config = encoder.door_config(None)?;
    let threshold = config
        .gallery_thresholds
        .map_or(config.threshold, |g| g.for_gallery(20));
    let dist = encoder.distance();
    println!(
        "{}: threshold for 20 people {threshold:.4}",
        model.display()
    );
    let orl = |p: u32, n: u32| data.join(format!("faces/orl/s{p}/{n}.pgm"));
    let load = |path: &PathBuf| -> Result<image::RgbImage> {
        Ok(image::open(path)
            .with_context(|| path.display().to_string())?
            .into_rgb8())
    };
    let mut probes: Vec<(PathBuf, Option<usize>)> = vec![];
    for p in 1..=20u32 {
        for n in 2..2 + per_person {
            probes.push((orl(p, n), Some(p as usize - 1)));
        }
    }
    for p in 21..=40u32 {
        probes.push((orl(p, 1), None));
    }
    let again = |again| {
        Some(InputSizes {
            again,
            ..DEFAULT_SIZES
        })
    };
    for (vote, sizes) in [
        (None, again(None)),
        (None, again(Some((96, 96)))),
        (Some(VOTE_IOU), again(None)),
        (Some(VOTE_IOU), again(Some((96, 96)))),
        (Some(VOTE_IOU), again(Some((128, 128)))),
    ] {
        let mut det = FaceDetector::load(&data.join(DEFAULT_DETECTOR), sizes)?;
        det.set_config(DetectConfig {
            vote_iou: vote,
            ..det.config()
        });
        let embed = |img: &image::RgbImage| -> Result<Option<(Face, Vec<f32>)>> {
            let (w, h) = (img.width() as usize, img.height() as usize);
            let f = Frame::new(w, h, PixelFormat::Rgb8, img.as_raw())?;
            let Some(face) = det.find_face(&f)?.1 else {
                return Ok(None);
            };
            let e = encoder.embed_face(&f, &face.landmarks)?;
            Ok(Some((face, e)))
        };
        let gallery: Vec<Vec<f32>> = (1..=20)
            .map(|p| Ok(embed(&load(&orl(p, 1))?)?.context("no face")?.1))
            .collect::<Result<_>>()?;
        let mut rng = Lcg(7);
        let (mut same, mut same_mapped, mut total) = (0, 0, 0);
        let (mut shift_sum, mut dd_sum, mut dd_mapped_sum) = (0.0f32, 0.0f32, 0.0f32);
        for (i, (probe, who)) in probes.iter().enumerate() {
            let img = load(probe)?;
            let (fa, ea) = embed(&img)?.context("no face alone")?;
            let height = 150 + rng.next(250);
            let width = height * 92 / 112;
            let (x, y) = (rng.next(640 - width), rng.next(480 - height.min(479)));
            let mut canvas = image::RgbImage::from_pixel(640, 480, image::Rgb([0, 0, 0]));
            let w = (img.width() as f32 * height as f32 / img.height() as f32).round() as u32;
            let small =
                image::imageops::resize(&img, w, height, image::imageops::FilterType::Triangle);
            image::imageops::overlay(&mut canvas, &small, i64::from(x), i64::from(y));
            let (fp, ep) = embed(&canvas)?.context("no face placed")?;
            let s = height as f32 / img.height() as f32;
            let mapped = fa
                .landmarks
                .map(|[px, py]| [px * s + x as f32, py * s + y as f32]);
            let frame = Frame::new(640, 480, PixelFormat::Rgb8, canvas.as_raw())?;
            let em = encoder.embed_face(&frame, &mapped)?;
            let eyes = fa.eye_distance();
            let shift = fp
                .landmarks
                .iter()
                .zip(&mapped)
                .map(|(q, r)| (q[0] - r[0]).hypot(q[1] - r[1]) / (eyes * s))
                .fold(0.0f32, f32::max);
            let decide = |e: &[f32]| {
                let (id, d) = nearest(&gallery, e, dist);
                ((d <= threshold).then_some(id), d)
            };
            let ((da, a), (dp, p), (dm, m)) = (decide(&ea), decide(&ep), decide(&em));
            total += 1;
            same += usize::from(da == dp);
            same_mapped += usize::from(da == dm);
            shift_sum += shift;
            dd_sum += (a - p).abs();
            dd_mapped_sum += (a - m).abs();
            if da != dp || da != dm {
                println!(
                    "  probe {i:3} {} ({}): alone {a:.4} {da:?}, placed {p:.4} {dp:?}, mapped {m:.4} {dm:?}, shift {shift:.3}, height {height}",
                    probe.display(),
                    if who.is_some() { "genuine" } else { "stranger" }
                );
            }
        }
        let n = total as f32;
        println!(
            "vote {vote:?}, second refine {:?}: same decision {same} of {total} (mapped landmarks: {same_mapped}); mean landmark shift {:.3} eye distances; mean |Δd| {:.4} (mapped {:.4})",
            sizes.and_then(|s| s.again),
            shift_sum / n,
            dd_sum / n,
            dd_mapped_sum / n
        );
    }
    Ok(())
}
