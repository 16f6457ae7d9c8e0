//! Write and read throughput of one frame through a heap region, for 64 B to 1 MiB
//! frames, next to a plain memcpy of the same bytes measured in the same run.
//! `python3 benches/criterion_ratios.py` prints the ratios from criterion's estimates.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmring_core::{FrameMeta, Geometry, ReaderOptions, RegionReader, RegionWriter, StartPosition, Word};
use std::hint::black_box;

const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("frame_{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut dst = vec![0u8; size];
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            })
        });
        // The smallest ring this frame fits (max frame = capacity / 2 - 32), as in
        // `copyratio`: a bigger ring only adds cache misses. CRC off: the copies are measured.
        let capacity = (2 * (size + 32) + 1).next_power_of_two().max(4096);
        let g = Geometry::new(capacity, size).unwrap();
        let words: Vec<Word> = (0..g.file_len() / 8).map(|_| Word::new(0)).collect();
        let mut writer = RegionWriter::format(&words[..], g, 0).unwrap();
        writer.set_crc(false);
        group.bench_function(BenchmarkId::new("write", size), |b| {
            b.iter(|| black_box(writer.write(black_box(&src), FrameMeta::keyframe(1)).unwrap()))
        });
        let options = ReaderOptions {
            start: StartPosition::Latest,
            verify_crc: false,
            resync_at_keyframe: false,
            ..Default::default()
        };
        let mut reader = RegionReader::new(&words[..], options).unwrap();
        group.bench_function(BenchmarkId::new("write_read", size), |b| {
            b.iter(|| {
                writer.write(black_box(&src), FrameMeta::keyframe(1)).unwrap();
                black_box(reader.try_read(&mut dst).unwrap().unwrap());
            })
        });
        let mut crc_writer = RegionWriter::format(&words[..], g, 0).unwrap();
        let crc_options = ReaderOptions {
            verify_crc: true,
            ..options
        };
        let mut crc_reader = RegionReader::new(&words[..], crc_options).unwrap();
        group.bench_function(BenchmarkId::new("write_read_crc", size), |b| {
            b.iter(|| {
                crc_writer.write(black_box(&src), FrameMeta::keyframe(1)).unwrap();
                black_box(crc_reader.try_read(&mut dst).unwrap().unwrap());
            })
        });
        group.finish();
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
