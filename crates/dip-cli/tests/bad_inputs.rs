//! The bad-input corpus: every case runs the `dip` binary on one broken (or merely unusual)
//! input and checks the outcome.
//!
//! A refused input must end with exit code 2 and exactly one stderr line `error: ...` that names
//! the offending file (or key) and the problem, with no panic. Unusual but valid inputs (16-bit,
//! paletted, alpha, gray stored as RGB) must work. No case may change an input file.
//!
//! The fixtures are either generated here (images, built byte by byte where they must be
//! malformed; checkpoints, from a real run then damaged or edited) or committed under `tests/bad_inputs/` (settings files, sweep plans, and inputs the
//! fuzzers found); `docs/RELIABILITY.md` lists every case with its expected message.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dip::fit::FitState;

/// How a case must end.
enum Expect {
    /// Exit code 2 and one `error:` line containing every needle (case-insensitive).
    Refused(&'static [&'static str]),
    /// Success, with every needle (case-insensitive) somewhere in stderr (for notes).
    Works(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    expect: Expect,
}

use Expect::{Refused, Works};

const CASES: &[Case] = &[
    // ---- image files: broken ----
    Case {
        name: "png-truncated",
        args: &["denoise", "png-truncated.png", "-o", "out.png"],
        expect: Refused(&["png-truncated.png", "truncated"]),
    },
    Case {
        name: "png-signature-only",
        args: &["denoise", "png-signature-only.png", "-o", "out.png"],
        expect: Refused(&["png-signature-only.png", "truncated"]),
    },
    Case {
        name: "png-corrupt-data",
        args: &["denoise", "png-corrupt-data.png", "-o", "out.png"],
        expect: Refused(&["png-corrupt-data.png", "corrupt"]),
    },
    Case {
        name: "png-bad-crc",
        args: &["denoise", "png-bad-crc.png", "-o", "out.png"],
        expect: Refused(&["png-bad-crc.png", "corrupt"]),
    },
    Case {
        name: "jpeg-truncated",
        args: &["denoise", "jpeg-truncated.jpg", "-o", "out.png"],
        expect: Refused(&["jpeg-truncated.jpg", "truncated"]),
    },
    Case {
        name: "jpeg-soi-only",
        args: &["denoise", "jpeg-soi-only.jpg", "-o", "out.png"],
        expect: Refused(&["jpeg-soi-only.jpg", "not an image"]),
    },
    Case {
        name: "jpeg-corrupt-header",
        args: &["denoise", "jpeg-corrupt-header.jpg", "-o", "out.png"],
        expect: Refused(&["jpeg-corrupt-header.jpg", "corrupt"]),
    },
    Case {
        name: "empty-file",
        args: &["denoise", "empty.png", "-o", "out.png"],
        expect: Refused(&["empty.png", "empty file"]),
    },
    Case {
        name: "text-named-jpg",
        args: &["denoise", "text.jpg", "-o", "out.png"],
        expect: Refused(&["text.jpg", "not an image"]),
    },
    Case {
        name: "folder-as-image",
        args: &["denoise", "folder.png", "-o", "out.png"],
        expect: Refused(&["folder.png", "is a folder"]),
    },
    // ---- image files: sizes ----
    Case {
        name: "png-0x0",
        args: &["denoise", "png-0x0.png", "-o", "out.png"],
        expect: Refused(&["png-0x0.png", "invalid image dimensions"]),
    },
    Case {
        name: "png-0x16",
        args: &["denoise", "png-0x16.png", "-o", "out.png"],
        expect: Refused(&["png-0x16.png", "invalid image dimensions"]),
    },
    Case {
        name: "png-1x32",
        args: &["denoise", "png-1x32.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&[]),
    },
    Case {
        name: "png-32x1",
        args: &["denoise", "png-32x1.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&[]),
    },
    Case {
        name: "png-no-pixel-data",
        args: &["denoise", "png-no-data.png", "-o", "out.png"],
        expect: Refused(&["png-no-data.png", "corrupt", "IDAT", "missing"]),
    },
    Case {
        name: "png-100000x100000",
        args: &["denoise", "png-huge.png", "-o", "out.png"],
        expect: Refused(&["png-huge.png", "too large", "100000x100000"]),
    },
    Case {
        name: "jpeg-65000x65000",
        args: &["denoise", "jpeg-huge.jpg", "-o", "out.png"],
        expect: Refused(&["jpeg-huge.jpg", "too large", "65000x65000"]),
    },
    Case {
        name: "bmp-100000x100000",
        args: &["denoise", "bmp-huge.bmp", "-o", "out.png"],
        expect: Refused(&["bmp-huge.bmp", "too large", "100000"]),
    },
    // ---- image files: unusual but valid ----
    Case {
        name: "png-16bit-rgb",
        args: &["denoise", "rgb16.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&[]),
    },
    Case {
        name: "png-paletted",
        args: &["denoise", "paletted.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&[]),
    },
    Case {
        name: "png-gray-stored-as-rgb",
        args: &[
            "denoise",
            "gray-as-rgb.png",
            "-o",
            "out.png",
            "--iters",
            "1",
        ],
        expect: Works(&[]),
    },
    Case {
        name: "png-rgba",
        args: &["denoise", "rgba.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&["rgba.png has an alpha channel; it was dropped"]),
    },
    Case {
        name: "png-gray-alpha",
        args: &["denoise", "gray-alpha.png", "-o", "out.png", "--iters", "1"],
        expect: Works(&["gray-alpha.png has an alpha channel; it was dropped"]),
    },
    // ---- inpainting masks ----
    Case {
        name: "mask-wrong-size",
        args: &[
            "inpaint",
            "rgb32.png",
            "--mask",
            "mask16.png",
            "-o",
            "out.png",
        ],
        expect: Refused(&["mask16.png", "16x16", "32x32", "same size"]),
    },
    Case {
        name: "mask-all-black",
        args: &[
            "inpaint",
            "rgb32.png",
            "--mask",
            "mask-black.png",
            "-o",
            "out.png",
        ],
        expect: Refused(&["mask-black.png", "no known pixel"]),
    },
    Case {
        name: "mask-truncated",
        args: &[
            "inpaint",
            "rgb32.png",
            "--mask",
            "png-truncated.png",
            "-o",
            "out.png",
        ],
        expect: Refused(&["png-truncated.png", "truncated"]),
    },
    // ---- deblurring PSFs ----
    Case {
        name: "psf-zero-sum",
        args: &[
            "deblur",
            "rgb32.png",
            "--psf",
            "psf-black.png",
            "-o",
            "out.png",
        ],
        expect: Refused(&["psf-black.png", "sum to zero"]),
    },
    Case {
        name: "psf-even-size",
        args: &[
            "deblur",
            "rgb32.png",
            "--psf",
            "psf-even.png",
            "-o",
            "out.png",
        ],
        expect: Refused(&["psf-even.png", "odd side", "4x4"]),
    },
    Case {
        name: "psf-nan-sigma",
        args: &[
            "deblur",
            "rgb32.png",
            "--psf",
            "gaussian:nan",
            "-o",
            "out.png",
        ],
        expect: Refused(&["gaussian:nan", "sigma must be positive"]),
    },
    Case {
        name: "psf-missing-file",
        args: &["deblur", "rgb32.png", "--psf", "nope.png", "-o", "out.png"],
        expect: Refused(&["nope.png", "no such file"]),
    },
    // ---- settings files (--config) ----
    Case {
        name: "config-wrong-type",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-wrong-type.toml",
        ],
        expect: Refused(&["config-wrong-type.toml", "fit.iters", "invalid type"]),
    },
    Case {
        name: "config-negative-iters",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-negative-iters.toml",
        ],
        expect: Refused(&["config-negative-iters.toml", "fit.iters", "-5"]),
    },
    Case {
        name: "config-nan-lr",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-nan-lr.toml",
        ],
        expect: Refused(&["config-nan-lr.toml", "fit.lr", "positive", "nan"]),
    },
    Case {
        name: "config-negative-lr",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-negative-lr.toml",
        ],
        expect: Refused(&["config-negative-lr.toml", "fit.lr", "positive", "-0.01"]),
    },
    Case {
        name: "config-ema-out-of-range",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-ema-one.toml",
        ],
        expect: Refused(&["config-ema-one.toml", "fit.ema", "[0, 1)"]),
    },
    Case {
        name: "config-unknown-key",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-unknown-key.toml",
        ],
        expect: Refused(&["config-unknown-key.toml", "learning_rate", "unknown"]),
    },
    Case {
        name: "config-unknown-section",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-unknown-section.toml",
        ],
        expect: Refused(&["config-unknown-section.toml", "network", "unknown"]),
    },
    Case {
        name: "config-zero-scales",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-zero-scales.toml",
        ],
        expect: Refused(&["config-zero-scales.toml", "net.scales", "at least 1"]),
    },
    Case {
        name: "config-empty-gaussian-sigma",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--iters",
            "1",
            "--config",
            "config-empty-sigma.toml",
        ],
        expect: Works(&[]),
    },
    Case {
        name: "config-not-toml",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "config-not-toml.toml",
        ],
        expect: Refused(&["config-not-toml.toml", "not valid toml", "line 2"]),
    },
    Case {
        name: "config-missing",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--config",
            "nope.toml",
        ],
        expect: Refused(&["nope.toml", "cannot read"]),
    },
    Case {
        name: "set-nan-lr",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "out.png",
            "--set",
            "fit.lr=nan",
        ],
        expect: Refused(&["lr", "positive", "nan"]),
    },
    // ---- outputs ----
    Case {
        name: "output-is-input",
        args: &["denoise", "rgb32.png", "-o", "rgb32.png", "--force"],
        expect: Refused(&["rgb32.png", "is the input file"]),
    },
    Case {
        name: "output-is-input-by-another-name",
        args: &[
            "denoise",
            "rgb32.png",
            "-o",
            "./sub/../rgb32.png",
            "--force",
        ],
        expect: Refused(&["rgb32.png", "is the input file"]),
    },
    Case {
        name: "mask-out-is-the-mask",
        args: &[
            "inpaint",
            "rgb32.png",
            "--mask",
            "mask32.png",
            "--mask-out",
            "mask32.png",
            "-o",
            "out.png",
            "--force",
        ],
        expect: Refused(&["mask32.png", "input"]),
    },
    // ---- sweep plans ----
    Case {
        name: "plan-huge-seed-count",
        args: &[
            "sweep",
            "run",
            "plan-huge-seeds.toml",
            "-o",
            "res",
            "--list",
        ],
        expect: Refused(&["plan-huge-seeds.toml", "seeds", "too many"]),
    },
    Case {
        name: "plan-huge-grid",
        args: &["sweep", "run", "plan-huge-grid.toml", "-o", "res", "--list"],
        expect: Refused(&["plan-huge-grid.toml", "too many", "cells"]),
    },
    Case {
        name: "plan-unknown-key",
        args: &[
            "sweep",
            "run",
            "plan-unknown-key.toml",
            "-o",
            "res",
            "--list",
        ],
        expect: Refused(&["plan-unknown-key.toml", "line 3", "colour"]),
    },
    Case {
        name: "plan-bad-level",
        args: &["sweep", "run", "plan-bad-level.toml", "-o", "res", "--list"],
        expect: Refused(&["plan-bad-level.toml", "inpaint", "(0, 1]", "1.5"]),
    },
    // ---- checkpoints (dip resume) ----
    Case {
        name: "resume-missing-file",
        args: &["resume", "nope.ckpt"],
        expect: Refused(&["nope.ckpt", "no such checkpoint"]),
    },
    Case {
        name: "resume-missing-folder",
        args: &["resume", "no-such-run/"],
        expect: Refused(&["no-such-run", "no such checkpoint"]),
    },
    Case {
        name: "resume-folder-without-checkpoint",
        args: &["resume", "sub"],
        expect: Refused(&["sub", "no checkpoint (.ckpt) in this folder"]),
    },
    Case {
        name: "resume-folder-with-two-checkpoints",
        args: &["resume", "two-runs"],
        expect: Refused(&["two-runs", "2 checkpoints", "a.ckpt", "b.ckpt", "name one"]),
    },
    Case {
        name: "resume-truncated",
        args: &["resume", "ckpt-truncated.ckpt"],
        expect: Refused(&["ckpt-truncated.ckpt", "truncated"]),
    },
    Case {
        name: "resume-empty-file",
        args: &["resume", "ckpt-empty.ckpt"],
        expect: Refused(&["ckpt-empty.ckpt", "not a dip checkpoint"]),
    },
    Case {
        name: "resume-wrong-signature",
        args: &["resume", "ckpt-png.ckpt"],
        expect: Refused(&["ckpt-png.ckpt", "not a dip checkpoint", "wrong signature"]),
    },
    Case {
        name: "resume-corrupt-header",
        args: &["resume", "ckpt-bad-header.ckpt"],
        expect: Refused(&["ckpt-bad-header.ckpt", "header is corrupt"]),
    },
    Case {
        name: "resume-flipped-byte",
        args: &["resume", "ckpt-flipped.ckpt"],
        expect: Refused(&["ckpt-flipped.ckpt", "corrupt", "checksum does not match"]),
    },
    Case {
        name: "resume-other-network",
        args: &["resume", "ckpt-other-network.ckpt"],
        expect: Refused(&[
            "ckpt-other-network.ckpt",
            "decoder-64 network",
            "builds a skip network",
        ]),
    },
    Case {
        name: "resume-other-network-size",
        args: &["resume", "ckpt-other-size.ckpt"],
        expect: Refused(&["ckpt-other-size.ckpt", "another network", "parameters"]),
    },
    Case {
        name: "resume-other-image",
        args: &["resume", "ckpt-other-image.ckpt"],
        expect: Refused(&["ckpt-other-image.ckpt", "another network or image"]),
    },
    Case {
        name: "resume-other-command",
        args: &["resume", "ckpt-other-command.ckpt"],
        expect: Refused(&[
            "ckpt-other-command.ckpt",
            "dip inpaint",
            "not `dip denoise`",
        ]),
    },
    Case {
        name: "resume-past-the-last-step",
        args: &["resume", "ckpt-past-end.ckpt"],
        expect: Refused(&["ckpt-past-end.ckpt", "not before the last step"]),
    },
    Case {
        name: "resume-no-command-line",
        args: &["resume", "ckpt-no-argv.ckpt"],
        expect: Refused(&["ckpt-no-argv.ckpt", "does not record its command line"]),
    },
    Case {
        name: "resume-run-folder-gone",
        args: &["resume", "ckpt-folder-gone.ckpt"],
        expect: Refused(&["ckpt-folder-gone.ckpt", "cannot go to the run's folder"]),
    },
];

// ---------------------------------------------------------------------------------------------
// Fixtures

/// The committed part of the corpus.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs")
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

/// A colour picture with edges, 8-bit RGB.
fn rgb(w: u32, h: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w.max(1)) as u8,
            (y * 255 / h.max(1)) as u8,
            if (x / 4 + y / 4) % 2 == 0 { 40 } else { 200 },
        ])
    }))
}

fn gray(w: u32, h: u32, v: impl Fn(u32, u32) -> u8) -> image::DynamicImage {
    image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([v(x, y)])
    }))
}

fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    let mut typed = kind.to_vec();
    typed.extend_from_slice(body);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32fast::hash(&typed).to_be_bytes());
    out
}

/// A well-formed PNG signature and header declaring a `w × h` 8-bit RGB image, then `idat` as
/// the pixel data if given, then IEND.
fn png_with_header(w: u32, h: u32, idat: Option<&[u8]>) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    if let Some(data) = idat {
        out.extend(png_chunk(b"IDAT", data));
    }
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// Offset of the body of the first chunk of type `kind` in a PNG.
fn png_chunk_body(png: &[u8], kind: &[u8; 4]) -> usize {
    png.windows(4).position(|w| w == kind).unwrap() + 4
}

/// A real JPEG whose frame header (SOF0) is changed to declare `w × h`.
fn jpeg_with_size(w: u16, h: u16) -> Vec<u8> {
    let mut jpg = jpeg_bytes(rgb(16, 16));
    let sof = jpg.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    // FFC0, length (2), precision (1), height (2), width (2).
    jpg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpg
}

/// A BMP header (BITMAPINFOHEADER, 24-bit) declaring `w × h`, with no pixel data.
fn bmp_header_only(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie, as a broken file's is)
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

/// A paletted PNG (colour type 3, 4 colours), written by the `png` encoder directly since
/// `image` never writes palettes.
fn paletted_png(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    let palette = [0u8, 0, 0, 255, 0, 0, 0, 255, 0, 255, 255, 255];
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        raw.extend((0..w).map(|x| ((x / 4 + y / 4) % 4) as u8));
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"PLTE", &palette));
    out.extend(png_chunk(b"IDAT", &zlib_stored(&raw)));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

/// `data` as a zlib stream of stored (uncompressed) blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = data.chunks(65535).collect();
    for (i, b) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let n = b.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(b);
    }
    let (mut a, mut s) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65521;
        s = (s + a) % 65521;
    }
    out.extend_from_slice(&((s << 16) | a).to_be_bytes());
    out
}

/// Every generated fixture: file name and bytes.
fn generated() -> Vec<(&'static str, Vec<u8>)> {
    let good_png = png_bytes(rgb(32, 32));
    let good_jpg = jpeg_bytes(rgb(32, 32));

    let truncated = good_png[..good_png.len() / 2].to_vec();
    let mut corrupt_data = good_png.clone();
    let idat = png_chunk_body(&corrupt_data, b"IDAT");
    let idat_len = u32::from_be_bytes(corrupt_data[idat - 8..idat - 4].try_into().unwrap());
    // Garbage in the compressed stream, with a correct CRC: the damage is in the data itself.
    for b in &mut corrupt_data[idat + 2..idat + idat_len as usize] {
        *b = 0xFF;
    }
    let crc = crc32fast::hash(&corrupt_data[idat - 4..idat + idat_len as usize]);
    corrupt_data[idat + idat_len as usize..idat + idat_len as usize + 4]
        .copy_from_slice(&crc.to_be_bytes());
    let mut bad_crc = good_png.clone();
    let ihdr = png_chunk_body(&bad_crc, b"IHDR");
    bad_crc[ihdr + 13] ^= 0xFF; // the first byte of the IHDR CRC

    let jpg_truncated = good_jpg[..good_jpg.len() / 2].to_vec();
    let mut jpg_corrupt = good_jpg.clone();
    let sof = jpg_corrupt
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .unwrap();
    jpg_corrupt[sof + 9] = 0; // zero colour components

    let rgb16 = image::DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(32, 32, |x, y| {
        image::Rgb([
            (x * 2000) as u16,
            (y * 2000) as u16,
            ((x * y) % 65536) as u16,
        ])
    }));
    let gray_as_rgb = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 32, |x, y| {
        let v = ((x * 7 + y * 3) % 256) as u8;
        image::Rgb([v, v, v])
    }));
    let rgba = image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(32, 32, |x, y| {
        image::Rgba([(x * 8) as u8, (y * 8) as u8, 90, (x * 4 + 100) as u8])
    }));
    let gray_alpha =
        image::DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_fn(32, 32, |x, y| {
            image::LumaA([((x + y) * 4) as u8, 128])
        }));

    vec![
        ("rgb32.png", good_png.clone()),
        ("png-truncated.png", truncated),
        ("png-signature-only.png", good_png[..8].to_vec()),
        ("png-corrupt-data.png", corrupt_data),
        ("png-bad-crc.png", bad_crc),
        ("jpeg-truncated.jpg", jpg_truncated),
        ("jpeg-soi-only.jpg", vec![0xFF, 0xD8]),
        ("jpeg-corrupt-header.jpg", jpg_corrupt),
        ("empty.png", Vec::new()),
        ("text.jpg", b"this is not a picture\n".to_vec()),
        ("png-0x0.png", png_with_header(0, 0, None)),
        ("png-0x16.png", png_with_header(0, 16, None)),
        ("png-no-data.png", png_with_header(32, 32, None)),
        ("png-1x32.png", png_bytes(rgb(1, 32))),
        ("png-32x1.png", png_bytes(rgb(32, 1))),
        // A header and the start of a pixel stream, as a real file's first bytes.
        (
            "png-huge.png",
            png_with_header(100_000, 100_000, Some(&zlib_stored(&[0; 64]))),
        ),
        ("jpeg-huge.jpg", jpeg_with_size(65_000, 65_000)),
        ("bmp-huge.bmp", bmp_header_only(100_000, 100_000)),
        ("rgb16.png", png_bytes(rgb16)),
        ("paletted.png", paletted_png(32, 32)),
        ("gray-as-rgb.png", png_bytes(gray_as_rgb)),
        ("rgba.png", png_bytes(rgba)),
        ("gray-alpha.png", png_bytes(gray_alpha)),
        ("mask16.png", png_bytes(gray(16, 16, |_, _| 255))),
        (
            "mask32.png",
            png_bytes(gray(32, 32, |x, _| if x < 16 { 255 } else { 0 })),
        ),
        ("mask-black.png", png_bytes(gray(32, 32, |_, _| 0))),
        ("psf-black.png", png_bytes(gray(5, 5, |_, _| 0))),
        ("psf-even.png", png_bytes(gray(4, 4, |_, _| 255))),
    ]
}

/// The command line the checkpoint fixtures record: a short denoising of `rgb32.png` with a
/// small skip network.
fn ckpt_argv(input: &str, scales: &str, iters: usize) -> Vec<String> {
    let scales = format!("net.scales={scales}");
    let iters = iters.to_string();
    [
        "dip",
        "denoise",
        input,
        "-o",
        "out.png",
        "--iters",
        &iters,
        "--set",
        &scales,
        "--set",
        "net.down=8",
        "--set",
        "net.up=8",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// A real checkpoint: a `dip denoise` of `rgb32.png` that writes one every step, killed
/// mid-fit (the checkpoint on disk is the last whole one). Made once; its command line is then
/// set to finish two steps later in whatever folder it is resumed from.
fn real_checkpoint() -> &'static FitState {
    static STATE: OnceLock<FitState> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("rgb32.png"), png_bytes(rgb(32, 32))).unwrap();
        let ckpt = dir.path().join("out.ckpt");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dip"))
            .current_dir(dir.path())
            .args(&ckpt_argv("rgb32.png", "2", 100_000)[1..])
            .args(["--checkpoint-every", "1", "--threads", "1", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !ckpt.exists() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the fit ended before its first checkpoint"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no checkpoint appeared"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        child.kill().unwrap();
        child.wait().unwrap();
        let mut state = FitState::load(&ckpt).unwrap();
        assert!(state.step >= 1);
        assert_eq!(state.meta["network"], "skip");
        state.meta["cwd"] = "".into();
        state.meta["argv"] = ckpt_argv("rgb32.png", "2", state.step + 2).into();
        state
    })
}

/// The checkpoint fixtures: the real one, damaged, and edited through the library (which
/// writes a right checksum) to disagree with the run that resumes it.
fn checkpoints() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(checkpoint_files)
}

fn checkpoint_files() -> Vec<(&'static str, Vec<u8>)> {
    let state = real_checkpoint();
    let good = state.to_bytes().unwrap();
    let edited = |edit: &dyn Fn(&mut FitState)| {
        let mut s = state.clone();
        edit(&mut s);
        s.to_bytes().unwrap()
    };
    let head_end = 16 + u64::from_le_bytes(good[8..16].try_into().unwrap()) as usize;
    let mut bad_header = good.clone();
    bad_header[16] = b'#';
    let mut flipped = good.clone();
    flipped[head_end + 100] ^= 0x01;
    vec![
        ("ckpt-good.ckpt", good.clone()),
        ("ckpt-truncated.ckpt", good[..good.len() / 2].to_vec()),
        ("ckpt-empty.ckpt", Vec::new()),
        ("ckpt-png.ckpt", png_bytes(rgb(8, 8))),
        ("ckpt-bad-header.ckpt", bad_header),
        ("ckpt-flipped.ckpt", flipped),
        (
            "ckpt-other-network.ckpt",
            edited(&|s| s.meta["network"] = "decoder-64".into()),
        ),
        (
            "ckpt-other-size.ckpt",
            edited(&|s| s.meta["argv"] = ckpt_argv("rgb32.png", "3", s.step + 2).into()),
        ),
        (
            "ckpt-other-image.ckpt",
            edited(&|s| s.meta["argv"] = ckpt_argv("png-32x1.png", "2", s.step + 2).into()),
        ),
        (
            "ckpt-other-command.ckpt",
            edited(&|s| s.meta["command"] = "inpaint".into()),
        ),
        (
            "ckpt-past-end.ckpt",
            edited(&|s| s.meta["argv"] = ckpt_argv("rgb32.png", "2", s.step).into()),
        ),
        (
            "ckpt-no-argv.ckpt",
            edited(&|s| s.meta["argv"] = serde_json::Value::Null),
        ),
        (
            "ckpt-folder-gone.ckpt",
            edited(&|s| s.meta["cwd"] = "moved-away".into()),
        ),
    ]
}

/// A fresh folder holding every fixture, generated and committed.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in generated() {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    fs::create_dir(dir.path().join("folder.png")).unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    let ckpts = checkpoints();
    for (name, bytes) in ckpts {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    fs::create_dir(dir.path().join("two-runs")).unwrap();
    for name in ["a.ckpt", "b.ckpt"] {
        fs::write(dir.path().join("two-runs").join(name), &ckpts[0].1).unwrap();
    }
    dir
}

/// Every file in `dir` (not recursing) with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn dip(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dip"));
    cmd.current_dir(dir).args(args);
    if !args.contains(&"--threads") {
        cmd.args(["--threads", "1"]);
    }
    cmd.output().expect("the dip binary runs")
}

/// What is wrong with the outcome of `case`, if anything.
fn check(case: &Case) -> Option<String> {
    let dir = workspace();
    let before = snapshot(dir.path());
    let out = dip(dir.path(), case.args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lower = stderr.to_lowercase();
    // `DIP_PRINT_CASES=1 cargo test ... -- --nocapture` shows what every case prints.
    if std::env::var_os("DIP_PRINT_CASES").is_some() {
        println!(
            "{} | {:?} | {}",
            case.name,
            out.status.code(),
            stderr.trim()
        );
    }
    let mut problems = Vec::new();
    if lower.contains("panicked") || lower.contains("internal error") {
        problems.push("a panic".to_string());
    }
    match &case.expect {
        Refused(needles) => {
            if out.status.code() != Some(2) {
                problems.push(format!("exit status {:?}, not 2", out.status));
            }
            let lines: Vec<&str> = stderr.lines().collect();
            if lines.len() != 1 || !lines[0].starts_with("error: ") {
                problems.push("stderr is not one `error: ` line".into());
            }
            for n in *needles {
                if !lower.contains(&n.to_lowercase()) {
                    problems.push(format!("'{n}' missing from the message"));
                }
            }
            if dir.path().join("out.png").exists() {
                problems.push("out.png was written".into());
            }
        }
        Works(needles) => {
            if !out.status.success() {
                problems.push(format!("exit status {:?}, not success", out.status));
            }
            for n in *needles {
                if !lower.contains(&n.to_lowercase()) {
                    problems.push(format!("'{n}' missing from stderr"));
                }
            }
            // The result has the size of the input, the second argument.
            match (
                image::image_dimensions(dir.path().join(case.args[1])),
                image::image_dimensions(dir.path().join("out.png")),
            ) {
                (Ok(a), Ok(b)) if a == b => {}
                (a, b) => problems.push(format!("input size {a:?}, output size {b:?}")),
            }
        }
    }
    let after = snapshot(dir.path());
    for (name, bytes) in &before {
        if after.get(name) != Some(bytes) {
            problems.push(format!("input {name} was changed or removed"));
        }
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{} (dip {}): {}\n  stderr: {}",
            case.name,
            case.args.join(" "),
            problems.join("; "),
            stderr.trim()
        ))
    }
}

#[test]
fn the_corpus_is_large_and_its_names_are_unique() {
    assert!(CASES.len() >= 30, "only {} cases", CASES.len());
    let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), CASES.len(), "two cases share a name");
}

/// Every committed fixture is used by some case, so the folder cannot fill with dead files.
#[test]
fn every_committed_fixture_is_used() {
    for entry in fs::read_dir(corpus_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            CASES.iter().any(|c| c.args.contains(&name.as_str())),
            "tests/bad_inputs/{name} is used by no case"
        );
    }
}

#[test]
fn bad_inputs_are_refused_clearly_and_valid_ones_work() {
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = CASES
            .chunks(CASES.len().div_ceil(4))
            .map(|chunk| s.spawn(move || chunk.iter().filter_map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

/// The checkpoint the `resume-*` cases damage or edit is itself good: it resumes and finishes.
#[test]
fn the_checkpoint_fixture_resumes() {
    let dir = workspace();
    let out = dip(dir.path(), &["resume", "ckpt-good.ckpt"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming from"), "{stderr}");
    assert_eq!(
        image::image_dimensions(dir.path().join("out.png")).unwrap(),
        (32, 32)
    );
}

/// Permission bits do not stop root, so this case only means something for other users.
#[test]
fn unwritable_output_folder() {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = workspace();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        if fs::write(ro.join("probe"), b"").is_ok() {
            eprintln!("skipped: permissions do not apply to this user (root)");
            return;
        }
        let out = dip(dir.path(), &["denoise", "rgb32.png", "-o", "ro/out.png"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("ro/out.png") && stderr.contains("not writable"),
            "{stderr}"
        );
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}
