//! Image decoding from bytes, then the reflection padding to the network size and its crop.
//!
//! Every input must give either an image or an error, never a panic; an image must survive
//! padding and cropping unchanged.
#![no_main]

use std::io::Cursor;

use dip::image::{crop, load_from_memory, pad_reflect_to_multiple};
use libfuzzer_sys::fuzz_target;

/// Headers claiming more pixels than this are skipped: the loader accepts up to
/// `dip::image::MAX_PIXELS` (2^28) and allocates for them before finding the data missing,
/// which only measures the allocator. The header check itself is still exercised, since
/// `load_from_memory` runs on every input that claims less.
const FUZZ_MAX_PIXELS: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    if let Ok(reader) = image::ImageReader::new(Cursor::new(data)).with_guessed_format()
        && let Ok((w, h)) = reader.into_dimensions()
        && u64::from(w) * u64::from(h) > FUZZ_MAX_PIXELS
    {
        return;
    }
    let Ok((img, info)) = load_from_memory(data, "fuzz.png") else {
        return;
    };
    assert!(img.width > 0 && img.height > 0);
    assert!(img.channels == 1 || img.channels == 3);
    assert_eq!(img.data.len(), img.width * img.height * img.channels);
    assert!(img.data.iter().all(|v| v.is_finite()));
    assert!((1..=4).contains(&info.source_channels));
    // The standard network halves the size 5 times: sides become multiples of 32.
    let (padded, pad) = pad_reflect_to_multiple(&img, 32);
    assert_eq!(padded.width % 32, 0);
    assert_eq!(padded.height % 32, 0);
    assert_eq!(crop(&padded, &pad), img);
});
