//! The detector's decoding with landmark voting, on outputs written by hand
//! (the plain decoding is checked against onnxruntime and numpy in
//! `firmware/tests/detect.rs`, voting too).
use fewshot_core::detect::{decode, DetectConfig, Face, Letterbox, StrideOutputs};

/// A 16×16 input at stride 8 (2×2 cells): cell 0 scores 0.9 with every
/// landmark at (4, 4), cell 1 scores 0.6 with every landmark at (10, 2); both
/// boxes 16 px square, centred on their cells, so they overlap by IoU 1/3.
fn decode_two_cells(vote_iou: Option<f32>) -> Vec<Face> {
    let cls = [0.9, 0.6, 0.0, 0.0];
    let obj = [0.9, 0.6, 0.0, 0.0];
    let size = 2f32.ln();
    let bbox = [[0.5, 0.5, size, size]; 4].concat();
    let kps: Vec<f32> = [0.5f32, 0.25, 0.0, 0.0]
        .iter()
        .flat_map(|&k| [k; 10])
        .collect();
    let outputs = [StrideOutputs {
        stride: 8,
        cls: &cls,
        obj: &obj,
        bbox: &bbox,
        kps: &kps,
    }];
    let config = DetectConfig {
        score_threshold: 0.5,
        nms_iou: 0.3,
        vote_iou,
    };
    let mut faces = heapless::Vec::<Face, 8>::new();
    decode(
        &Letterbox::fit(16, 16, 16, 16),
        &outputs,
        &config,
        &mut faces,
    )
    .unwrap();
    faces.to_vec()
}

fn close(a: [f32; 2], b: [f32; 2]) -> bool {
    (a[0] - b[0]).abs() < 1e-5 && (a[1] - b[1]).abs() < 1e-5
}

#[test]
fn without_voting_the_best_cell_keeps_its_own_landmarks() {
    let faces = decode_two_cells(None);
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!((faces[0].score - 0.9).abs() < 1e-6);
    assert!(faces[0].landmarks.iter().all(|&p| close(p, [4.0, 4.0])));
}

#[test]
fn voting_weighs_the_suppressed_cell_by_its_score() {
    // (0.9 · (4, 4) + 0.6 · (10, 2)) / 1.5 = (6.4, 3.2); the box is the best cell's.
    let faces = decode_two_cells(Some(0.3));
    assert_eq!(faces.len(), 1, "{faces:?}");
    assert!(
        faces[0].landmarks.iter().all(|&p| close(p, [6.4, 3.2])),
        "{faces:?}"
    );
    assert_eq!(faces[0].bbox, decode_two_cells(None)[0].bbox);
    // Cells overlapping less than the vote's IoU do not count.
    let faces = decode_two_cells(Some(0.5));
    assert!(faces[0].landmarks.iter().all(|&p| close(p, [4.0, 4.0])));
}
