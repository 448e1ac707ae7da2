//! The triangles family: deterministic, in range, and with high-frequency content that rises
//! strictly with the level.

use dip::image::Image;
use dip::synthetic::{
    DEFAULT_LEVELS, MIN_SIZE, high_frequency_fraction, triangle, triangle_family,
};

fn fractions(size: usize, levels: usize, seed: u64) -> Vec<f64> {
    triangle_family(size, levels, seed)
        .unwrap()
        .iter()
        .map(|l| high_frequency_fraction(&l.image).unwrap())
        .collect()
}

#[test]
fn high_frequency_content_rises_strictly_with_the_level() {
    for (size, seed) in [(32, 0), (64, 1), (64, 7), (128, 3), (96, 11)] {
        let f = fractions(size, DEFAULT_LEVELS, seed);
        assert_eq!(f.len(), DEFAULT_LEVELS);
        for (i, pair) in f.windows(2).enumerate() {
            assert!(
                pair[1] > pair[0] * (1.0 + 1e-3),
                "size {size}, seed {seed}: level {} has {:.6}, level {} has {:.6} (all: {f:?})",
                i + 1,
                pair[1],
                i,
                pair[0]
            );
        }
        // The range is wide: level 0 is smooth, the last level is dominated by texture.
        assert!(f[0] < 0.01, "{f:?}");
        assert!(f[DEFAULT_LEVELS - 1] > 0.05, "{f:?}");
    }
}

#[test]
fn monotone_for_many_seeds() {
    for seed in 100..120 {
        let f = fractions(64, DEFAULT_LEVELS, seed);
        assert!(f.windows(2).all(|p| p[1] > p[0]), "seed {seed}: {f:?}");
    }
}

#[test]
fn finer_level_grids_stay_monotone() {
    let f = fractions(64, 21, 5);
    assert!(f.windows(2).all(|p| p[1] > p[0]), "{f:?}");
}

#[test]
fn deterministic_and_seeded() {
    let a = triangle_family(48, 5, 42).unwrap();
    let b = triangle_family(48, 5, 42).unwrap();
    let c = triangle_family(48, 5, 43).unwrap();
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        assert_eq!(x.image.data, y.image.data);
        assert_eq!(x.t, y.t);
        assert_ne!(x.image.data, z.image.data);
    }
    // A single image at a level parameter is the family's member there.
    let single = triangle(48, a[2].t, 42).unwrap();
    assert_eq!(single.data, a[2].image.data);
}

#[test]
fn shape_range_and_parameters() {
    let fam = triangle_family(40, DEFAULT_LEVELS, 9).unwrap();
    for (i, l) in fam.iter().enumerate() {
        let img: &Image = &l.image;
        assert_eq!((img.width, img.height, img.channels), (40, 40, 3));
        assert!(
            img.data.iter().all(|v| (0.0..=1.0).contains(v)),
            "level {i} out of [0, 1]"
        );
        assert_eq!(l.level, i);
        assert!((l.t - i as f64 / (DEFAULT_LEVELS - 1) as f64).abs() < 1e-12);
    }
    assert_eq!(fam[0].t, 0.0);
    assert_eq!(fam[DEFAULT_LEVELS - 1].t, 1.0);
    // Edges sharpen over the first half, texture grows over the second.
    let w: Vec<f64> = fam.iter().map(|l| l.detail.edge_width).collect();
    assert!(w[..5].windows(2).all(|p| p[1] < p[0]), "{w:?}");
    let a: Vec<f64> = fam.iter().map(|l| l.detail.texture_amplitude).collect();
    assert!(a[..5].iter().all(|&v| v == 0.0));
    assert!(a[4..].windows(2).all(|p| p[1] > p[0]), "{a:?}");
    // The picture is a triangle on a background: two clearly different colours, not noise.
    let corner = fam[0].image.pixel(0, 0).to_vec();
    let centre = fam[0].image.pixel(20, 20).to_vec();
    let diff: f32 = corner.iter().zip(&centre).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 0.3, "corner {corner:?}, centre {centre:?}");
}

#[test]
fn measure_of_known_images() {
    // Flat: no energy besides DC.
    let flat = Image::new(16, 16, 1, vec![0.4; 256]);
    assert_eq!(high_frequency_fraction(&flat).unwrap(), 0.0);
    // A checkerboard is all Nyquist; a slow cosine is all low.
    let checker: Vec<f32> = (0..256)
        .map(|i| if (i % 16 + i / 16) % 2 == 0 { 0.8 } else { 0.2 })
        .collect();
    let f = high_frequency_fraction(&Image::new(16, 16, 1, checker)).unwrap();
    assert!((f - 1.0).abs() < 1e-12, "{f}");
    let slow: Vec<f32> = (0..256)
        .map(|i| 0.5 + 0.3 * (2.0 * std::f32::consts::PI * (i % 16) as f32 / 16.0).cos())
        .collect();
    let f = high_frequency_fraction(&Image::new(16, 16, 1, slow)).unwrap();
    assert!(f < 1e-9, "{f}");
}

#[test]
fn bad_arguments_are_errors() {
    assert!(triangle_family(MIN_SIZE - 1, 9, 0).is_err());
    assert!(triangle_family(32, 0, 0).is_err());
    assert!(triangle(32, -0.1, 0).is_err());
    assert!(triangle(32, f64::NAN, 0).is_err());
    let one = triangle_family(32, 1, 0).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].t, 0.0);
}
