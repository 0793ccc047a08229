//! The body of the `model_blob` fuzz target, shared with the stable seed and
//! property tests (`shared/tests/fuzz.rs`): decoding arbitrary bytes as a
//! model blob never panics, and a blob that decodes runs through the engine
//! without panicking (within a size bound that keeps each input quick).
//!
//! The first input byte picks a mode: odd means "patch the total length and a
//! valid CRC-32 onto the rest first", so the fuzzer explores the field checks
//! and the engine behind the checksum instead of stopping at it.

use fewshot_core::engine::blob::Output;
use fewshot_core::engine::{Arena, Model};

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Largest arena (bytes) and work (multiply-adds) a decoded blob may need
/// for the engine to be run on it here.
const MAX_ARENA: usize = 1 << 22;
const MAX_WORK: usize = 1 << 24;

/// Checks one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= 16 {
        let n = bytes.len();
        bytes[8..12].copy_from_slice(&(n as u32).to_le_bytes());
        let crc = CRC32.checksum(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
    }
    let Ok(model) = Model::from_bytes(&bytes) else {
        return;
    };
    let h = *model.header();
    let work: usize = model
        .layers()
        .iter()
        .map(|l| {
            // Multiply-adds: every weight at every output position (before pooling).
            let (_, hh, w) = l.out_dims();
            l.weight
                .len()
                .saturating_mul(hh.saturating_mul(w).saturating_mul(4))
        })
        .fold(0usize, usize::saturating_add)
        .saturating_add(match model.output() {
            Output::Flatten => 0,
            Output::Linear { weight, .. } => weight.len(),
        });
    if h.arena_bytes > MAX_ARENA || h.accumulator_words > MAX_ARENA || work > MAX_WORK {
        return;
    }
    let mut act = vec![0u8; h.arena_bytes];
    let mut acc = vec![0i32; h.accumulator_words];
    let mut arena = Arena::new(&mut act, &mut acc);
    let input: Vec<f32> = (0..model.input_len())
        .map(|i| f32::from(data[i % data.len()]) / 127.5 - 1.0)
        .collect();
    let mut out = vec![0f32; model.dim()];
    model
        .embed(&input, &mut arena, &mut out)
        .expect("buffers sized from the header");
}
