//! Nearest prototype over 1 000 enrolled identities of 64 dimensions, f32 and
//! int8; and the door's matching step (`HeapGallery::identify`: nearest
//! prototype and open-set decision) at 50, 272 and 1 000 people, for the
//! Omniglot (64-d) and face (192-d) embeddings.
//!
//! Run: `cargo bench -p fewshot-core --bench nearest`
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use fewshot_core::quant::{nearest_q8, QuantizedEmbedding};
use fewshot_core::{nearest, Distance, HeapGallery, OpenSet};

const IDENTITIES: usize = 1000;
const DIM: usize = 64;

/// Deterministic pseudo-random values in [-1, 1) (xorshift64*).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
            r as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let protos: Vec<Vec<f32>> = (0..IDENTITIES).map(|i| values(i as u64 + 1, DIM)).collect();
    let query = values(999_999, DIM);
    let q_protos: Vec<QuantizedEmbedding<DIM>> = protos
        .iter()
        .map(|p| QuantizedEmbedding::quantize(p).expect("finite"))
        .collect();
    let q_query = QuantizedEmbedding::<DIM>::quantize(&query).expect("finite");

    let mut group = c.benchmark_group("nearest_1000x64");
    for distance in [Distance::L2, Distance::Cosine] {
        group.bench_function(format!("f32_{}", distance.name()), |b| {
            b.iter(|| nearest(black_box(&query), protos.iter().map(|p| &p[..]), distance))
        });
        group.bench_function(format!("int8_{}", distance.name()), |b| {
            b.iter(|| {
                nearest_q8(
                    black_box(q_query.view()),
                    q_protos.iter().map(|p| p.view()),
                    distance,
                )
            })
        });
    }
    group.finish();
}

fn identify<const DIM: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("door_identify_{DIM}d"));
    for people in [50, 272, 1000] {
        let mut gallery = HeapGallery::<DIM>::with_capacity(1000);
        for i in 0..people {
            gallery
                .enroll("someone", &values(i as u64 + 1, DIM))
                .expect("room for everyone");
        }
        let query = values(999_999, DIM);
        let rule = OpenSet::threshold(0.5);
        for distance in [Distance::L2, Distance::Cosine] {
            group.bench_function(format!("{people}_{}", distance.name()), |b| {
                b.iter(|| gallery.identify(black_box(&query), distance, &rule))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench, identify::<64>, identify::<192>);
criterion_main!(benches);
