//! Images in memory, and reading and writing them.
//!
//! Everything downstream (networks, metrics, noise) works on `f32` samples in \[0, 1\], stored
//! channel-last (HWC, row-major), so this module is the one place that knows about file formats,
//! bit depths and alpha. It also holds the reflection padding the networks need, because padding
//! and the crop that undoes it must agree exactly.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits,
};

use crate::error::{Error, Result};

/// The most pixels an image may have (2^28, about 16k × 16k).
///
/// Checked against the header before anything is decoded, so a file that merely *claims* to be
/// enormous is refused without allocating for it.
pub const MAX_PIXELS: u64 = 1 << 28;

/// The precision an image came from (or should be written with).
///
/// Kept with the image so that a 16-bit input is written back as 16-bit, and so that metrics can
/// be computed on what a saved file would actually contain (see [`quantize`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BitDepth {
    /// 256 levels per channel.
    Eight,
    /// 65 536 levels per channel.
    Sixteen,
}

impl BitDepth {
    /// The largest integer sample value, i.e. what 1.0 maps to.
    pub fn max_value(self) -> f32 {
        match self {
            BitDepth::Eight => 255.0,
            BitDepth::Sixteen => 65535.0,
        }
    }
}

/// A gray or RGB image with `f32` samples in \[0, 1\], channel-last.
///
/// Sample `(x, y, c)` is `data[(y * width + x) * channels + c]`. This is the same layout as the
/// network tensors, so no transposition is needed between the two.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` samples, HWC row-major, nominally in \[0, 1\].
    pub data: Vec<f32>,
    /// Precision to save with; loading sets it from the file.
    pub bit_depth: BitDepth,
}

impl Image {
    /// An 8-bit image from samples already laid out HWC.
    ///
    /// # Panics
    /// If `channels` is not 1 or 3, or `data.len() != width * height * channels`; these are
    /// programming errors, not bad input. Use [`Image::try_new`] for data from outside.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Self {
        match Self::try_new(width, height, channels, data) {
            Ok(img) => img,
            Err(e) => panic!("Image::new: {e}"),
        }
    }

    /// Like [`Image::new`], but reports a shape mismatch as an error instead of panicking.
    pub fn try_new(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(Error::invalid(format!(
                "an image has 1 or 3 channels, not {channels}"
            )));
        }
        let expected = width
            .checked_mul(height)
            .and_then(|p| p.checked_mul(channels))
            .ok_or_else(|| {
                Error::invalid(format!("image size {width}x{height}x{channels} overflows"))
            })?;
        if data.len() != expected {
            return Err(Error::invalid(format!(
                "a {width}x{height} image with {channels} channel(s) needs {expected} samples, got {}",
                data.len()
            )));
        }
        Ok(Image {
            width,
            height,
            channels,
            data,
            bit_depth: BitDepth::Eight,
        })
    }

    /// A black 8-bit image.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self::new(
            width,
            height,
            channels,
            vec![0.0; width * height * channels],
        )
    }

    /// Number of pixels (not samples): `width * height`.
    pub fn pixels(&self) -> usize {
        self.width * self.height
    }

    /// The same image marked with another bit depth; the samples are not changed.
    pub fn with_bit_depth(mut self, bit_depth: BitDepth) -> Self {
        self.bit_depth = bit_depth;
        self
    }

    /// The samples of pixel `(x, y)`.
    ///
    /// # Panics
    /// If `(x, y)` is outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> &[f32] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside {}x{}",
            self.width,
            self.height
        );
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + self.channels]
    }
}

/// What [`load`] had to change to fit the file into an [`Image`].
///
/// Returned rather than printed so the caller decides whether dropping alpha deserves a warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadInfo {
    /// The file had an alpha channel, which was discarded (not composited).
    pub dropped_alpha: bool,
    /// Channels the decoder delivered, alpha included, after palette expansion
    /// (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
    pub source_channels: usize,
    /// Precision of the samples; float files are reported (and stored) as 16-bit.
    pub bit_depth: BitDepth,
}

/// Reads an image file: PNG, JPEG, BMP or TIFF (other formats the `image` crate knows may work).
///
/// The format is recognised from the content, not the extension, so a misnamed file still loads
/// and a non-image with an image extension is reported as such. Gray stays 1 channel, colour
/// becomes 3, alpha is dropped; 16-bit files keep their precision; float TIFFs are rounded to
/// 16-bit. Every failure (missing, not an image, truncated, corrupt, zero-sized, or more than
/// [`MAX_PIXELS`]) is an [`Error::File`] naming `path`, never a panic.
pub fn load(path: &Path) -> Result<(Image, LoadInfo)> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            return Err(Error::file(path, "is a folder, not an image file"));
        }
        Ok(_) => {}
        Err(e) => return Err(Error::file(path, io_message(&e))),
    }
    let file = File::open(path).map_err(|e| Error::file(path, io_message(&e)))?;
    decode(BufReader::new(file), path)
}

/// Like [`load`], for bytes already in memory; `name` is only used in error messages.
pub fn load_from_memory(bytes: &[u8], name: &str) -> Result<(Image, LoadInfo)> {
    decode(Cursor::new(bytes), Path::new(name))
}

/// Decoder limits: generous enough for any image within [`MAX_PIXELS`] (RGBA float is the widest
/// decoded layout at 16 bytes per pixel), but still a cap on what a hostile file can make the
/// decoder allocate.
fn reader_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_PIXELS as u32);
    limits.max_image_height = Some(MAX_PIXELS as u32);
    limits.max_alloc = Some(MAX_PIXELS * 16 + (64 << 20));
    limits
}

fn decode<R: BufRead + Seek>(mut reader: R, path: &Path) -> Result<(Image, LoadInfo)> {
    let len = reader
        .seek(SeekFrom::End(0))
        .and_then(|n| reader.rewind().map(|()| n));
    match len {
        Ok(0) => return Err(Error::file(path, "empty file, not an image")),
        Ok(_) => {}
        Err(e) => return Err(Error::file(path, io_message(&e))),
    }
    let mut reader = ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| Error::file(path, io_message(&e)))?;
    if reader.format().is_none() {
        return Err(Error::file(
            path,
            "not an image, or an unknown image format",
        ));
    }
    reader.limits(reader_limits());
    // The decoder has read only the header here; check its claims before any pixel buffer exists.
    let decoder = reader
        .into_decoder()
        .map_err(|e| Error::file(path, decode_message(&e)))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::file(path, format!("image has zero size ({w}x{h})")));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(Error::file(
            path,
            format!(
                "image is too large: {w}x{h} = {pixels} pixels, the limit is {MAX_PIXELS} (2^28)"
            ),
        ));
    }
    let source_channels = usize::from(decoder.color_type().channel_count());
    let dynimg =
        DynamicImage::from_decoder(decoder).map_err(|e| Error::file(path, decode_message(&e)))?;
    let (image, dropped_alpha) = from_dynamic(dynimg);
    let info = LoadInfo {
        dropped_alpha,
        source_channels,
        bit_depth: image.bit_depth,
    };
    Ok((image, info))
}

/// Converts a decoded image, dropping alpha; returns whether alpha was dropped.
fn from_dynamic(dynimg: DynamicImage) -> (Image, bool) {
    fn convert<T: Copy>(
        raw: &[T],
        w: u32,
        h: u32,
        src_channels: usize,
        keep: usize,
        scale: impl Fn(T) -> f32,
        depth: BitDepth,
    ) -> Image {
        let data = raw
            .chunks_exact(src_channels)
            .flat_map(|px| px[..keep].iter().map(|&v| scale(v)))
            .collect();
        Image::new(w as usize, h as usize, keep, data).with_bit_depth(depth)
    }
    let (w, h) = (dynimg.width(), dynimg.height());
    let u8s = |v: u8| f32::from(v) / 255.0;
    let u16s = |v: u16| f32::from(v) / 65535.0;
    let f32s = |v: f32| quantize_sample(v, 65535.0);
    use BitDepth::{Eight, Sixteen};
    match dynimg {
        DynamicImage::ImageLuma8(b) => (convert(b.as_raw(), w, h, 1, 1, u8s, Eight), false),
        DynamicImage::ImageLumaA8(b) => (convert(b.as_raw(), w, h, 2, 1, u8s, Eight), true),
        DynamicImage::ImageRgb8(b) => (convert(b.as_raw(), w, h, 3, 3, u8s, Eight), false),
        DynamicImage::ImageRgba8(b) => (convert(b.as_raw(), w, h, 4, 3, u8s, Eight), true),
        DynamicImage::ImageLuma16(b) => (convert(b.as_raw(), w, h, 1, 1, u16s, Sixteen), false),
        DynamicImage::ImageLumaA16(b) => (convert(b.as_raw(), w, h, 2, 1, u16s, Sixteen), true),
        DynamicImage::ImageRgb16(b) => (convert(b.as_raw(), w, h, 3, 3, u16s, Sixteen), false),
        DynamicImage::ImageRgba16(b) => (convert(b.as_raw(), w, h, 4, 3, u16s, Sixteen), true),
        DynamicImage::ImageRgb32F(b) => (convert(b.as_raw(), w, h, 3, 3, f32s, Sixteen), false),
        DynamicImage::ImageRgba32F(b) => (convert(b.as_raw(), w, h, 4, 3, f32s, Sixteen), true),
        // Layouts added to `image` later: go through float RGBA, which loses nothing we keep.
        other => {
            let alpha = other.color().has_alpha();
            let b = other.to_rgba32f();
            (convert(b.as_raw(), w, h, 4, 3, f32s, Sixteen), alpha)
        }
    }
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::UnexpectedEof => "truncated file (unexpected end of data)".to_string(),
        _ => format!("cannot read: {e}"),
    }
}

fn decode_message(e: &ImageError) -> String {
    // Some decoders end their messages with a newline; errors are printed as one line.
    let msg = match e {
        ImageError::IoError(io) => io_message(io),
        ImageError::Decoding(d) => format!("corrupt or truncated image data: {d}"),
        ImageError::Unsupported(u) => format!("unsupported image: {u}"),
        ImageError::Limits(l) => format!("image is too large to decode: {l}"),
        ImageError::Parameter(p) => format!("invalid image: {p}"),
        ImageError::Encoding(x) => format!("invalid image: {x}"),
    };
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Rounds a sample to the nearest of `max + 1` levels in \[0, 1\]; NaN becomes 0.
fn quantize_sample(v: f32, max: f32) -> f32 {
    to_level(v, max) / max
}

/// The integer level (as `f32`) a sample is stored as: clamped, scaled, rounded; NaN becomes 0.
fn to_level(v: f32, max: f32) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        (v.clamp(0.0, 1.0) * max).round()
    }
}

/// The image as it would read back after [`save`] to a lossless format at `depth`.
///
/// Lets results be measured on what a file will hold rather than on unrounded floats.
pub fn quantize(img: &Image, depth: BitDepth) -> Image {
    let max = depth.max_value();
    Image {
        width: img.width,
        height: img.height,
        channels: img.channels,
        data: img.data.iter().map(|&v| quantize_sample(v, max)).collect(),
        bit_depth: depth,
    }
}

/// Writes an image; the format comes from the extension (png, jpg/jpeg, bmp, tif/tiff).
///
/// 16-bit images stay 16-bit in PNG and TIFF; JPEG and BMP cannot hold that and get 8 bits.
/// Gray BMPs are written with a gray palette, which [`load`] reads back as 3 equal channels.
/// Samples are clamped to \[0, 1\] and rounded (NaN becomes 0). JPEG is written at quality 95,
/// since these files are results to be looked at and compared, and the usual 75 adds visible
/// artefacts.
///
/// The data go to a temporary file in the same folder, which is then renamed over `path`: an
/// interrupted run leaves either the old file or the new one, never half an image.
pub fn save(img: &Image, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::file(path, "is a folder, not a file name"));
    }
    let format = format_from_extension(path)?;
    let expected = img.width * img.height * img.channels;
    if (img.channels != 1 && img.channels != 3) || img.data.len() != expected {
        return Err(Error::file(
            path,
            format!(
                "cannot save a malformed image ({}x{}, {} channel(s), {} samples)",
                img.width,
                img.height,
                img.channels,
                img.data.len()
            ),
        ));
    }
    if img.width == 0 || img.height == 0 {
        return Err(Error::file(
            path,
            format!(
                "cannot save an image of zero size ({}x{})",
                img.width, img.height
            ),
        ));
    }
    if img.width > u32::MAX as usize || img.height > u32::MAX as usize {
        return Err(Error::file(path, "image is too large to save"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::file(path, "cannot write: the folder does not exist"));
    }

    let sixteen = img.bit_depth == BitDepth::Sixteen
        && matches!(format, ImageFormat::Png | ImageFormat::Tiff);
    let dynimg = to_dynamic(img, sixteen);

    let (tmp_path, file) = create_temp_beside(path, &dir)?;
    let written = write_encoded(&dynimg, format, file);
    let result = written
        .and_then(|()| fs::rename(&tmp_path, path).map_err(|e| format!("cannot write: {e}")));
    if let Err(msg) = result {
        // Best effort: the temporary file is ours and useless now.
        let _ = fs::remove_file(&tmp_path);
        return Err(Error::file(path, msg));
    }
    Ok(())
}

fn format_from_extension(path: &Path) -> Result<ImageFormat> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => Ok(ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(ImageFormat::Jpeg),
        Some("bmp") => Ok(ImageFormat::Bmp),
        Some("tif" | "tiff") => Ok(ImageFormat::Tiff),
        Some(other) => Err(Error::file(
            path,
            format!(
                "unknown image extension '.{other}' (use .png, .jpg, .jpeg, .bmp, .tif or .tiff)"
            ),
        )),
        None => Err(Error::file(
            path,
            "no file extension to choose the image format (use .png, .jpg, .bmp or .tif)",
        )),
    }
}

fn to_dynamic(img: &Image, sixteen: bool) -> DynamicImage {
    let (w, h) = (img.width as u32, img.height as u32);
    if sixteen {
        let raw: Vec<u16> = img
            .data
            .iter()
            .map(|&v| to_level(v, 65535.0) as u16)
            .collect();
        if img.channels == 1 {
            DynamicImage::ImageLuma16(ImageBuffer::from_raw(w, h, raw).expect("length checked"))
        } else {
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, raw).expect("length checked"))
        }
    } else {
        let raw: Vec<u8> = img.data.iter().map(|&v| to_level(v, 255.0) as u8).collect();
        if img.channels == 1 {
            DynamicImage::ImageLuma8(ImageBuffer::from_raw(w, h, raw).expect("length checked"))
        } else {
            DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, raw).expect("length checked"))
        }
    }
}

/// Creates a new, hidden, uniquely named file next to `path`, so the final rename stays on one
/// file system (and is therefore atomic).
pub(crate) fn create_temp_beside(path: &Path, dir: &Path) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stem = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{stem}.{}.{n}.tmp", std::process::id()));
        match File::create_new(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(Error::file(path, "cannot write: permission denied"));
            }
            Err(e) => return Err(Error::file(path, format!("cannot write: {e}"))),
        }
    }
    Err(Error::file(
        path,
        "cannot write: could not create a temporary file",
    ))
}

fn write_encoded(
    dynimg: &DynamicImage,
    format: ImageFormat,
    file: File,
) -> std::result::Result<(), String> {
    let mut out = BufWriter::new(file);
    let encoded = if format == ImageFormat::Jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
        dynimg.write_with_encoder(encoder)
    } else {
        dynimg.write_to(&mut out, format)
    };
    encoded.map_err(|e| format!("cannot encode: {e}"))?;
    let file = out
        .into_inner()
        .map_err(|e| format!("cannot write: {}", e.error()))?;
    // Flush to disk before the rename, or a crash could leave the new name on empty data.
    file.sync_all().map_err(|e| format!("cannot write: {e}"))?;
    Ok(())
}

/// How much [`pad_reflect_to_multiple`] added on each side, so [`crop`] can take it off again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// True when nothing was added.
    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }
}

/// Index into `0..n` for position `i` of a reflection-padded axis, mirroring about the edge
/// samples without repeating them (numpy `reflect`). Repeating the mirroring handles pads wider
/// than the axis; it is the triangle wave with period `2(n - 1)`. A single sample is repeated,
/// as numpy does.
fn reflect_index(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    (if m < n as isize { m } else { period - m }) as usize
}

/// Pads by reflection so both sides become multiples of `multiple`.
///
/// Encoder–decoder networks halve the size k times and need sides divisible by 2^k. Reflection
/// (numpy `reflect`, PyTorch `ReflectionPad2d`: the edge pixel is not repeated) adds no edges of
/// its own for the network to reproduce. The padding is split between both sides, the odd pixel
/// going bottom/right; pads wider than the image reflect repeatedly, as numpy does. `multiple`
/// 0 or 1 means no padding.
pub fn pad_reflect_to_multiple(img: &Image, multiple: usize) -> (Image, Padding) {
    let m = multiple.max(1);
    pad_reflect_to(img, img.width.div_ceil(m) * m, img.height.div_ceil(m) * m)
}

/// The padding [`pad_reflect_to`] adds to a `w × h` image to make it at least
/// `width × height`: the excess split evenly, the odd sample going below and to the right.
pub fn padding_to(w: usize, h: usize, width: usize, height: usize) -> Padding {
    let (ew, eh) = (width.saturating_sub(w), height.saturating_sub(h));
    Padding {
        top: eh / 2,
        bottom: eh - eh / 2,
        left: ew / 2,
        right: ew - ew / 2,
    }
}

/// Pads by reflection to exactly `width × height` (each at least the image's own size), with the
/// conventions of [`pad_reflect_to_multiple`].
pub fn pad_reflect_to(img: &Image, width: usize, height: usize) -> (Image, Padding) {
    let pad = padding_to(img.width, img.height, width, height);
    let (ew, eh) = (pad.left + pad.right, pad.top + pad.bottom);
    if img.width == 0 || img.height == 0 {
        // Nothing to reflect; an empty image stays empty.
        return (img.clone(), Padding::default());
    }
    let (nw, nh, c) = (img.width + ew, img.height + eh, img.channels);
    let cols: Vec<usize> = (0..nw)
        .map(|x| reflect_index(x as isize - pad.left as isize, img.width))
        .collect();
    let mut data = Vec::with_capacity(nw * nh * c);
    for y in 0..nh {
        let sy = reflect_index(y as isize - pad.top as isize, img.height);
        let row = &img.data[sy * img.width * c..(sy + 1) * img.width * c];
        for &sx in &cols {
            data.extend_from_slice(&row[sx * c..(sx + 1) * c]);
        }
    }
    let out = Image {
        width: nw,
        height: nh,
        channels: c,
        data,
        bit_depth: img.bit_depth,
    };
    (out, pad)
}

/// Removes the padding that [`pad_reflect_to_multiple`] added, giving back the original size.
///
/// # Panics
/// If `pad` is larger than the image, i.e. it did not come from padding this image.
pub fn crop(img: &Image, pad: &Padding) -> Image {
    assert!(
        pad.left + pad.right <= img.width && pad.top + pad.bottom <= img.height,
        "padding {pad:?} larger than the {}x{} image",
        img.width,
        img.height
    );
    let w = img.width - pad.left - pad.right;
    let h = img.height - pad.top - pad.bottom;
    extract(img, pad.left, pad.top, w, h)
}

/// The central `w` × `h` part, as the reference DIP crops images to a size the network accepts.
///
/// The offset is rounded down, like the reference (and PIL). A size larger than the image is
/// clamped to the image size in that dimension, so this never fails.
pub fn center_crop(img: &Image, w: usize, h: usize) -> Image {
    let (w, h) = (w.min(img.width), h.min(img.height));
    extract(img, (img.width - w) / 2, (img.height - h) / 2, w, h)
}

/// Shrinks by an integer `factor`, each output pixel the mean of a `factor × factor` block
/// (area averaging); a border that does not fill a block is dropped. An error if the image is
/// smaller than one block or the factor is 0.
pub fn downsample_box(img: &Image, factor: usize) -> Result<Image> {
    if factor == 0 {
        return Err(Error::invalid("the downsampling factor must be at least 1"));
    }
    let (w, h, c) = (img.width / factor, img.height / factor, img.channels);
    if w == 0 || h == 0 {
        return Err(Error::invalid(format!(
            "a {}x{} image cannot be shrunk {factor} times",
            img.width, img.height
        )));
    }
    let mut out = Image::zeros(w, h, c).with_bit_depth(img.bit_depth);
    let scale = 1.0 / (factor * factor) as f32;
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let mut s = 0.0f32;
                for dy in 0..factor {
                    let row = (y * factor + dy) * img.width;
                    for dx in 0..factor {
                        s += img.data[(row + x * factor + dx) * c + k];
                    }
                }
                out.data[(y * w + x) * c + k] = s * scale;
            }
        }
    }
    Ok(out)
}

/// The `w` × `h` rectangle whose top-left corner is `(x, y)`.
///
/// An error if the rectangle is empty or reaches outside the image, since that is usually a
/// user-supplied region.
pub fn crop_rect(img: &Image, x: usize, y: usize, w: usize, h: usize) -> Result<Image> {
    if w == 0 || h == 0 {
        return Err(Error::invalid(format!("crop rectangle {w}x{h} is empty")));
    }
    let fits = x.checked_add(w).is_some_and(|r| r <= img.width)
        && y.checked_add(h).is_some_and(|b| b <= img.height);
    if !fits {
        return Err(Error::invalid(format!(
            "crop rectangle {w}x{h} at ({x}, {y}) does not fit in the {}x{} image",
            img.width, img.height
        )));
    }
    Ok(extract(img, x, y, w, h))
}

fn extract(img: &Image, x: usize, y: usize, w: usize, h: usize) -> Image {
    let c = img.channels;
    let mut data = Vec::with_capacity(w * h * c);
    for row in y..y + h {
        let start = (row * img.width + x) * c;
        data.extend_from_slice(&img.data[start..start + w * c]);
    }
    Image {
        width: w,
        height: h,
        channels: c,
        data,
        bit_depth: img.bit_depth,
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a reader
/// never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp, mut file) = create_temp_beside(path, dir)?;
    let done = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::file(path, format!("cannot write: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_downsampling_averages_blocks() {
        let img = Image::new(5, 4, 1, (0..20).map(|v| v as f32).collect());
        let d = downsample_box(&img, 2).unwrap();
        assert_eq!((d.width, d.height), (2, 2));
        // Block (0,0): 0, 1, 5, 6.
        assert_eq!(d.data, vec![3.0, 5.0, 13.0, 15.0]);
        assert!(downsample_box(&img, 0).is_err());
        assert!(downsample_box(&img, 6).is_err());
    }
    use image::{Luma, LumaA, Rgb, Rgba};

    /// A scratch folder removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("dip-image-test-{}-{tag}-{n}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Deterministic pseudo-random bytes (a small LCG), so tests do not depend on `rand` here.
    fn pseudo(n: usize, seed: u64) -> Vec<u64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s >> 33
            })
            .collect()
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.expect_err("expected an error").to_string()
    }

    const W: u32 = 7;
    const H: u32 = 5;

    #[test]
    fn png_8bit_round_trips_gray_rgb_rgba() {
        let dir = TempDir::new("png8");
        let n = (W * H) as usize;
        let v: Vec<u8> = pseudo(n * 4, 1).into_iter().map(|x| x as u8).collect();

        // Gray.
        let gray = ImageBuffer::<Luma<u8>, _>::from_raw(W, H, v[..n].to_vec()).unwrap();
        let p = dir.path("g.png");
        gray.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(
            (img.width, img.height, img.channels),
            (W as usize, H as usize, 1)
        );
        assert_eq!(
            info,
            LoadInfo {
                dropped_alpha: false,
                source_channels: 1,
                bit_depth: BitDepth::Eight
            }
        );
        let want: Vec<f32> = v[..n].iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(img.data, want);
        assert_eq!(quantize(&img, BitDepth::Eight), img);

        // RGB.
        let rgb = ImageBuffer::<Rgb<u8>, _>::from_raw(W, H, v[..3 * n].to_vec()).unwrap();
        let p = dir.path("c.png");
        rgb.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(img.channels, 3);
        assert!(!info.dropped_alpha);
        assert_eq!(info.source_channels, 3);
        let want: Vec<f32> = v[..3 * n].iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(img.data, want);

        // RGBA: alpha dropped, colour kept exactly.
        let rgba = ImageBuffer::<Rgba<u8>, _>::from_raw(W, H, v.clone()).unwrap();
        let p = dir.path("a.png");
        rgba.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(img.channels, 3);
        assert!(info.dropped_alpha);
        assert_eq!(info.source_channels, 4);
        let want: Vec<f32> = v
            .chunks(4)
            .flat_map(|px| px[..3].iter().map(|&b| f32::from(b) / 255.0))
            .collect();
        assert_eq!(img.data, want);
    }

    #[test]
    fn png_16bit_round_trips_with_full_precision() {
        let dir = TempDir::new("png16");
        let n = (W * H) as usize;
        let v: Vec<u16> = pseudo(n * 4, 2).into_iter().map(|x| x as u16).collect();
        // Values that 8 bits cannot hold must survive.
        assert!(v.iter().any(|&x| x % 257 != 0));

        let gray = ImageBuffer::<Luma<u16>, _>::from_raw(W, H, v[..n].to_vec()).unwrap();
        let p = dir.path("g16.png");
        gray.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(img.channels, 1);
        assert_eq!(info.bit_depth, BitDepth::Sixteen);
        assert_eq!(img.bit_depth, BitDepth::Sixteen);
        let want: Vec<f32> = v[..n].iter().map(|&b| f32::from(b) / 65535.0).collect();
        assert_eq!(img.data, want);
        assert_eq!(quantize(&img, BitDepth::Sixteen), img);

        let la = ImageBuffer::<LumaA<u16>, _>::from_raw(W, H, v[..2 * n].to_vec()).unwrap();
        let p = dir.path("ga16.png");
        la.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(
            (img.channels, info.source_channels, info.dropped_alpha),
            (1, 2, true)
        );
        let want: Vec<f32> = v[..2 * n]
            .iter()
            .step_by(2)
            .map(|&b| f32::from(b) / 65535.0)
            .collect();
        assert_eq!(img.data, want);

        let rgb = ImageBuffer::<Rgb<u16>, _>::from_raw(W, H, v[..3 * n].to_vec()).unwrap();
        let p = dir.path("c16.png");
        rgb.save(&p).unwrap();
        let (img, _) = load(&p).unwrap();
        let want: Vec<f32> = v[..3 * n].iter().map(|&b| f32::from(b) / 65535.0).collect();
        assert_eq!(img.data, want);

        let rgba = ImageBuffer::<Rgba<u16>, _>::from_raw(W, H, v.clone()).unwrap();
        let p = dir.path("a16.png");
        rgba.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!(
            (img.channels, info.dropped_alpha, info.bit_depth),
            (3, true, BitDepth::Sixteen)
        );
        let want: Vec<f32> = v
            .chunks(4)
            .flat_map(|px| px[..3].iter().map(|&b| f32::from(b) / 65535.0))
            .collect();
        assert_eq!(img.data, want);
    }

    #[test]
    fn our_save_then_load_is_quantize() {
        let dir = TempDir::new("save");
        let n = 11 * 6;
        let raw: Vec<f32> = pseudo(n * 3, 3)
            .into_iter()
            .map(|x| (x % 10_000) as f32 / 9_000.0 - 0.05)
            .collect();
        for (channels, depth, name) in [
            (1, BitDepth::Eight, "a.png"),
            (3, BitDepth::Eight, "b.png"),
            (1, BitDepth::Sixteen, "c.png"),
            (3, BitDepth::Sixteen, "d.PNG"),
            (3, BitDepth::Sixteen, "e.tif"),
            (1, BitDepth::Sixteen, "f.tiff"),
            (3, BitDepth::Eight, "g.bmp"),
        ] {
            let img =
                Image::new(11, 6, channels, raw[..n * channels].to_vec()).with_bit_depth(depth);
            let p = dir.path(name);
            save(&img, &p).unwrap();
            let (back, info) = load(&p).unwrap();
            assert_eq!(info.bit_depth, depth, "{name}");
            assert_eq!(back, quantize(&img, depth), "{name}");
        }
        // BMP keeps gray as a gray palette, which the decoder expands to RGB: same values, 3 channels.
        let img = Image::new(11, 6, 1, raw[..n].to_vec());
        let p = dir.path("h.bmp");
        save(&img, &p).unwrap();
        let (back, _) = load(&p).unwrap();
        let want: Vec<f32> = quantize(&img, BitDepth::Eight)
            .data
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        assert_eq!((back.channels, back.data), (3, want));
        // Formats without 16-bit store 8 bits.
        let img = Image::new(11, 6, 3, raw[..n * 3].to_vec()).with_bit_depth(BitDepth::Sixteen);
        let p = dir.path("x.bmp");
        save(&img, &p).unwrap();
        assert_eq!(load(&p).unwrap().0, quantize(&img, BitDepth::Eight));
        // No temporary files left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn save_replaces_an_existing_file() {
        let dir = TempDir::new("replace");
        let p = dir.path("out.png");
        save(&Image::zeros(4, 3, 1), &p).unwrap();
        let white = Image::new(2, 2, 3, vec![1.0; 12]);
        save(&white, &p).unwrap();
        assert_eq!(load(&p).unwrap().0, white);
    }

    #[test]
    fn jpeg_loads_close_to_the_source() {
        let dir = TempDir::new("jpg");
        let (w, h) = (32u32, 24u32);
        let smooth = ImageBuffer::from_fn(w, h, |x, y| Rgb([(x * 8) as u8, (y * 10) as u8, 128u8]));
        let p = dir.path("s.jpg");
        smooth.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!((img.width, img.height, img.channels), (32, 24, 3));
        assert_eq!(info.bit_depth, BitDepth::Eight);
        let want: Vec<f32> = smooth
            .as_raw()
            .iter()
            .map(|&b| f32::from(b) / 255.0)
            .collect();
        let mad = img
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / want.len() as f32;
        assert!(mad < 0.03, "mean abs diff {mad}");

        // Our own JPEG writer, gray.
        let g = Image::new(16, 16, 1, (0..256).map(|i| i as f32 / 255.0).collect());
        let p = dir.path("g.jpeg");
        save(&g, &p).unwrap();
        let (back, _) = load(&p).unwrap();
        assert_eq!(back.channels, 1);
        let mad = back
            .data
            .iter()
            .zip(&g.data)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / 256.0;
        assert!(mad < 0.02, "mean abs diff {mad}");
    }

    #[test]
    fn bmp_and_tiff_written_by_image_load() {
        let dir = TempDir::new("bmptif");
        let v: Vec<u8> = pseudo((W * H * 3) as usize, 4)
            .into_iter()
            .map(|x| x as u8)
            .collect();
        let want: Vec<f32> = v.iter().map(|&b| f32::from(b) / 255.0).collect();
        let rgb = ImageBuffer::<Rgb<u8>, _>::from_raw(W, H, v.clone()).unwrap();
        for name in ["x.bmp", "x.tif"] {
            let p = dir.path(name);
            rgb.save(&p).unwrap();
            let (img, info) = load(&p).unwrap();
            assert_eq!(
                (img.channels, info.bit_depth),
                (3, BitDepth::Eight),
                "{name}"
            );
            assert_eq!(img.data, want, "{name}");
        }
        let v16: Vec<u16> = pseudo((W * H) as usize, 5)
            .into_iter()
            .map(|x| x as u16)
            .collect();
        let gray16 = ImageBuffer::<Luma<u16>, _>::from_raw(W, H, v16.clone()).unwrap();
        let p = dir.path("g16.tiff");
        gray16.save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!((img.channels, info.bit_depth), (1, BitDepth::Sixteen));
        assert_eq!(
            img.data,
            v16.iter()
                .map(|&b| f32::from(b) / 65535.0)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn float_tiff_becomes_16_bit() {
        let dir = TempDir::new("f32");
        let v = vec![0.0f32, 0.25, 0.5, 1.0, 1.5, -0.5, 0.123_456_79, 0.9, 0.3];
        let buf = ImageBuffer::<Rgb<f32>, _>::from_raw(3, 1, v.clone()).unwrap();
        let p = dir.path("f.tif");
        DynamicImage::ImageRgb32F(buf).save(&p).unwrap();
        let (img, info) = load(&p).unwrap();
        assert_eq!((img.channels, info.bit_depth), (3, BitDepth::Sixteen));
        let want: Vec<f32> = v
            .iter()
            .map(|&x| (x.clamp(0.0, 1.0) * 65535.0).round() / 65535.0)
            .collect();
        assert_eq!(img.data, want);
    }

    #[test]
    fn loads_from_memory_by_content_not_name() {
        let rgb = ImageBuffer::from_fn(3, 2, |x, y| Rgb([x as u8 * 50, y as u8 * 70, 9u8]));
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(rgb)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let (img, _) = load_from_memory(&bytes, "misnamed.jpg").unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.pixel(2, 1), &[100.0 / 255.0, 70.0 / 255.0, 9.0 / 255.0]);
    }

    #[test]
    fn missing_file_and_folder_are_reported() {
        let dir = TempDir::new("missing");
        let p = dir.path("nope.png");
        let msg = err_text(load(&p));
        assert!(
            msg.contains("nope.png") && msg.contains("no such file"),
            "{msg}"
        );
        let msg = err_text(load(&dir.0));
        assert!(msg.contains("folder"), "{msg}");
    }

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let buf = ImageBuffer::from_fn(w, h, |x, y| {
            Rgb([(x * 3) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(buf)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn truncated_png_is_an_error_naming_the_file() {
        let dir = TempDir::new("trunc");
        let bytes = png_bytes(40, 30);
        for cut in [bytes.len() / 2, bytes.len() - 13, 40] {
            let p = dir.path("cut.png");
            fs::write(&p, &bytes[..cut]).unwrap();
            let msg = err_text(load(&p));
            assert!(msg.contains("cut.png"), "{msg}");
            assert!(
                msg.contains("truncated") || msg.contains("corrupt"),
                "{msg}"
            );
        }
        // Corrupted in the middle of the compressed data.
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 16] {
            *b ^= 0x5a;
        }
        let msg = err_text(load_from_memory(&bad, "flipped.png"));
        assert!(msg.contains("flipped.png"), "{msg}");
    }

    #[test]
    fn text_file_named_png_is_not_an_image() {
        let dir = TempDir::new("text");
        let p = dir.path("notes.png");
        fs::write(&p, "this is not an image\n").unwrap();
        let msg = err_text(load(&p));
        assert!(
            msg.contains("notes.png") && msg.contains("not an image"),
            "{msg}"
        );
        let msg = err_text(load_from_memory(b"", "empty.png"));
        assert!(
            msg.contains("empty.png") && msg.contains("empty file"),
            "{msg}"
        );
        // A JPEG cut off inside its first segment.
        let msg = err_text(load_from_memory(
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
            "cut.jpg",
        ));
        assert!(msg.contains("cut.jpg") && !msg.contains('\n'), "{msg}");
    }

    fn chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        let mut typed = kind.to_vec();
        typed.extend_from_slice(body);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32fast::hash(&typed).to_be_bytes());
        out
    }

    /// A PNG signature and an 8-bit RGB IHDR declaring `w` × `h`, plus `rest`.
    fn png_header(w: u32, h: u32, rest: &[u8]) -> Vec<u8> {
        let mut ihdr = w.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        out.extend(chunk(b"IHDR", &ihdr));
        out.extend_from_slice(rest);
        out
    }

    #[test]
    fn crafted_header_is_valid() {
        // The IHDR of a real 40x30 PNG must equal ours byte for byte, CRC included.
        let real = png_bytes(40, 30);
        let ours = png_header(40, 30, &[]);
        assert_eq!(&real[..ours.len()], &ours[..]);
    }

    #[test]
    fn zero_size_and_header_only_pngs_are_errors() {
        let iend = chunk(b"IEND", &[]);
        for (w, h) in [(0, 0), (0, 5), (5, 0)] {
            let msg = err_text(load_from_memory(&png_header(w, h, &iend), "zero.png"));
            assert!(msg.contains("zero.png"), "{msg}");
        }
        let msg = err_text(load_from_memory(&png_header(8, 8, &[]), "header-only.png"));
        assert!(msg.contains("header-only.png"), "{msg}");
        let msg = err_text(load_from_memory(&png_header(8, 8, &iend), "no-idat.png"));
        assert!(msg.contains("no-idat.png"), "{msg}");
    }

    #[test]
    fn huge_declared_dimensions_are_rejected_before_decoding() {
        let dir = TempDir::new("huge");
        let idat = chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        let mut rest = idat;
        rest.extend(chunk(b"IEND", &[]));
        let p = dir.path("huge.png");
        fs::write(&p, png_header(100_000, 100_000, &rest)).unwrap();
        let msg = err_text(load(&p));
        assert!(
            msg.contains("huge.png") && msg.contains("too large"),
            "{msg}"
        );
        // Just over the limit in one thin strip is also refused.
        let msg = err_text(load_from_memory(
            &png_header(1 << 20, 257, &rest),
            "strip.png",
        ));
        assert!(msg.contains("too large"), "{msg}");
    }

    #[test]
    fn save_errors_name_the_file() {
        let dir = TempDir::new("saveerr");
        let img = Image::zeros(3, 3, 3);
        let p = dir.path("missing-folder").join("x.png");
        let msg = err_text(save(&img, &p));
        assert!(
            msg.contains("x.png") && msg.contains("folder does not exist"),
            "{msg}"
        );
        let p = dir.path("x.gif");
        let msg = err_text(save(&img, &p));
        assert!(
            msg.contains("x.gif") && msg.contains("unknown image extension"),
            "{msg}"
        );
        let p = dir.path("noext");
        assert!(err_text(save(&img, &p)).contains("noext"));
        let msg = err_text(save(&img, &dir.0));
        assert!(msg.contains("folder"), "{msg}");
        let bad = Image {
            width: 3,
            height: 3,
            channels: 3,
            data: vec![0.0; 5],
            bit_depth: BitDepth::Eight,
        };
        assert!(err_text(save(&bad, &dir.path("bad.png"))).contains("bad.png"));
        assert!(!dir.path("bad.png").exists());
    }

    #[test]
    fn quantize_rounds_and_clamps() {
        let img = Image::new(5, 1, 1, vec![-0.1, 0.5, 1.2, 0.1 / 255.0, 0.6 / 255.0]);
        let q = quantize(&img, BitDepth::Eight);
        assert_eq!(q.data, vec![0.0, 128.0 / 255.0, 1.0, 0.0, 1.0 / 255.0]);
        assert_eq!(q.bit_depth, BitDepth::Eight);
        let q16 = quantize(&img, BitDepth::Sixteen);
        assert_eq!(q16.data[1], 32768.0 / 65535.0);
        assert_eq!(q16.data[3], 26.0 / 65535.0); // 0.1 / 255 * 65535 = 25.7
        assert_eq!(
            quantize(&Image::new(1, 1, 1, vec![f32::NAN]), BitDepth::Eight).data,
            vec![0.0]
        );
    }

    fn ramp(w: usize, h: usize, c: usize) -> Image {
        Image::new(w, h, c, (0..w * h * c).map(|i| i as f32).collect())
    }

    #[test]
    fn pad_matches_numpy_reflect_on_a_small_example() {
        // 3 wide, 2 high, one channel: values 10*y + x.
        let img = Image::new(3, 2, 1, vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]);
        let (p, pad) = pad_reflect_to_multiple(&img, 4);
        assert_eq!(
            pad,
            Padding {
                top: 1,
                left: 0,
                bottom: 1,
                right: 1
            }
        );
        // np.pad(a, ((1, 1), (0, 1)), mode="reflect")
        #[rustfmt::skip]
        let want = vec![
            10.0, 11.0, 12.0, 11.0,
             0.0,  1.0,  2.0,  1.0,
            10.0, 11.0, 12.0, 11.0,
             0.0,  1.0,  2.0,  1.0,
        ];
        assert_eq!((p.width, p.height), (4, 4));
        assert_eq!(p.data, want);

        // Pads wider than the image reflect repeatedly: np.pad([0, 1, 2], (2, 3), "reflect").
        let row = Image::new(3, 1, 1, vec![0.0, 1.0, 2.0]);
        let (p, pad) = pad_reflect_to_multiple(&row, 8);
        assert_eq!((pad.left, pad.right), (2, 3));
        assert_eq!(p.data[..8], [2.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0]);
        // A single row is repeated (numpy's rule for a length-1 axis): 8 identical rows.
        assert_eq!(p.height, 8);
        assert!(p.data.chunks(8).all(|r| r == &p.data[..8]));
    }

    #[test]
    fn pad_keeps_channels_together() {
        let img = ramp(2, 2, 3);
        let (p, _) = pad_reflect_to_multiple(&img, 4);
        // Pixel (0, 0) of the padded image is original pixel (1, 1) (one row/column reflected in).
        assert_eq!(p.pixel(0, 0), img.pixel(1, 1));
        assert_eq!(p.pixel(3, 3), img.pixel(0, 0));
    }

    #[test]
    fn pad_then_crop_is_identity() {
        for &(w, h, c, m) in &[
            (37, 21, 3, 32),
            (3, 5, 1, 32),
            (1, 1, 3, 8),
            (64, 32, 1, 32),
            (33, 2, 3, 64),
            (7, 9, 1, 1),
        ] {
            let img = ramp(w, h, c).with_bit_depth(BitDepth::Sixteen);
            let (p, pad) = pad_reflect_to_multiple(&img, m);
            assert_eq!(p.width % m, 0);
            assert_eq!(p.height % m, 0);
            assert!(p.width >= w && p.width < w + m && p.height >= h && p.height < h + m);
            assert!(pad.bottom == pad.top || pad.bottom == pad.top + 1);
            assert!(pad.right == pad.left || pad.right == pad.left + 1);
            assert_eq!(p.bit_depth, BitDepth::Sixteen);
            // Every padded value is some original value at the reflected position.
            for y in 0..p.height {
                for x in 0..p.width {
                    let sx = reflect_index(x as isize - pad.left as isize, w);
                    let sy = reflect_index(y as isize - pad.top as isize, h);
                    assert_eq!(p.pixel(x, y), img.pixel(sx, sy));
                }
            }
            assert_eq!(crop(&p, &pad), img, "{w}x{h} to {m}");
        }
        // An exact target size, including one smaller than the image in a dimension (no-op there).
        let img = ramp(37, 21, 3);
        let (p, pad) = pad_reflect_to(&img, 45, 20);
        assert_eq!((p.width, p.height), (45, 21));
        assert_eq!(
            pad,
            Padding {
                top: 0,
                left: 4,
                bottom: 0,
                right: 4
            }
        );
        assert_eq!(crop(&p, &pad), img);
        let (p, pad) = pad_reflect_to_multiple(&ramp(64, 32, 1), 32);
        assert!(pad.is_zero());
        assert_eq!(p, ramp(64, 32, 1));
    }

    #[test]
    fn reflect_index_is_numpy_reflect() {
        // np.pad(np.arange(4), 9, "reflect")
        let want = [
            3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0,
        ];
        let got: Vec<usize> = (-9..13).map(|i| reflect_index(i, 4)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn crops() {
        let img = ramp(5, 4, 1);
        let c = center_crop(&img, 2, 2);
        // Offset ((5-2)/2, (4-2)/2) = (1, 1).
        assert_eq!(c.data, vec![6.0, 7.0, 11.0, 12.0]);
        assert_eq!(center_crop(&img, 10, 10), img);
        let r = crop_rect(&img, 3, 2, 2, 2).unwrap();
        assert_eq!(r.data, vec![13.0, 14.0, 18.0, 19.0]);
        assert!(crop_rect(&img, 4, 0, 2, 1).is_err());
        assert!(crop_rect(&img, 0, 0, 0, 1).is_err());
        assert!(crop_rect(&img, usize::MAX, 0, 2, 1).is_err());
        let rgb = ramp(3, 3, 3);
        assert_eq!(
            crop_rect(&rgb, 1, 1, 1, 1).unwrap().data,
            rgb.pixel(1, 1).to_vec()
        );
    }

    #[test]
    fn constructors() {
        assert!(Image::try_new(2, 2, 2, vec![0.0; 8]).is_err());
        assert!(Image::try_new(2, 2, 3, vec![0.0; 11]).is_err());
        let z = Image::zeros(4, 3, 3);
        assert_eq!(
            (z.pixels(), z.data.len(), z.bit_depth),
            (12, 36, BitDepth::Eight)
        );
    }
}
