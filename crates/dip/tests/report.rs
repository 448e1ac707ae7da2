//! The HTML report: one self-contained file with the expected plots and images.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use dip::fit::TrajectoryIndex;
use dip::image::{Image, load_from_memory};
use dip::noise::add_gaussian_noise;
use dip::report::{
    ReportImages, StripFrame, escape_html, plots, png_data_uri, render_report, strip_steps,
    write_report,
};
use dip::spectral::{Analysis, RecordedRun, StudyOptions, analyze, lowpass};
use ndarray::ArrayView3;
use ndarray_npy::WriteNpyExt;

/// A scratch folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("dip-report-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn test_image(w: usize, h: usize, c: usize) -> Image {
    let mut data = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
            for ch in 0..c {
                let blob = (-((u - 0.35).powi(2) + (v - 0.4).powi(2)) * 18.0).exp();
                let edge = if u + 0.5 * v > 0.7 { 0.35 } else { 0.0 };
                data.push((0.15 + 0.5 * blob + edge + 0.1 * ch as f32 * v).clamp(0.0, 1.0));
            }
        }
    }
    Image::new(w, h, c, data)
}

/// Writes a trajectory by hand: `(step, frame, recorded PSNR)` per record.
fn write_frames(
    dir: &Path,
    seed: u64,
    frames: impl IntoIterator<Item = (usize, Image, Option<f64>)>,
) {
    std::fs::create_dir_all(dir.join("frames")).unwrap();
    let mut index = TrajectoryIndex {
        seed,
        config: serde_json::json!({}),
        ..TrajectoryIndex::default()
    };
    for (k, (step, img, p)) in frames.into_iter().enumerate() {
        (index.width, index.height, index.channels) = (img.width, img.height, img.channels);
        let name = format!("frames/step_{step:06}.npy");
        let view =
            ArrayView3::from_shape((img.height, img.width, img.channels), &img.data[..]).unwrap();
        let mut bytes = Vec::new();
        view.write_npy(&mut bytes).unwrap();
        std::fs::write(dir.join(&name), bytes).unwrap();
        index.steps.push(step);
        index.loss.push(0.05 / (k + 1) as f64);
        index.psnr_raw.push(p);
        index.psnr_ema.push(p.map(|v| v - 0.1));
        index.frames.push(name);
    }
    std::fs::write(
        dir.join("trajectory.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Records a hand-made run: at step `10 k` the output is a Gaussian low-pass of `noisy` with a
/// geometrically growing cutoff (`shift` varies it between runs), plus a PSNR history when
/// `clean` is given.
fn write_run(dir: &Path, noisy: &Image, clean: Option<&Image>, seed: u64, shift: f64) {
    let frames = (0..10).map(|k| {
        let c = 0.01 * shift * (200f64).powf(k as f64 / 9.0);
        let img = lowpass(noisy, c).unwrap();
        let p = clean.map(|c| dip::metrics::psnr(&img.data, &c.data));
        (10 * (k + 1), img, p)
    });
    write_frames(dir, seed, frames);
}

struct Case {
    _tmp: TempDir,
    runs: Vec<RecordedRun>,
    noisy: Image,
    clean: Image,
}

fn case(n_runs: usize, run_name: &str) -> Case {
    let tmp = TempDir::new("case");
    let clean = test_image(24, 20, 3);
    let noisy = add_gaussian_noise(&clean, 25.0, 5);
    let runs = (0..n_runs)
        .map(|r| {
            let dir = tmp.path().join(format!("{run_name}{r}"));
            write_run(&dir, &noisy, Some(&clean), r as u64, 1.0 + 0.3 * r as f64);
            RecordedRun::open(&dir).unwrap()
        })
        .collect();
    Case {
        _tmp: tmp,
        runs,
        noisy,
        clean,
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Checks the report is self-contained: no external references of any kind.
fn assert_self_contained(html: &str) {
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_ns.contains("http://"), "an http reference");
    assert!(!without_ns.contains("https://"), "an https reference");
    for bad in [
        "<script",
        "<link",
        "@import",
        "url(",
        "src=\"/",
        "src=\"file:",
    ] {
        assert!(!html.contains(bad), "found {bad}");
    }
    // Every image source is inline.
    for (i, _) in html.match_indices("src=\"") {
        assert!(html[i + 5..].starts_with("data:image/png;base64,"));
    }
}

#[test]
fn report_has_every_plot_and_image_and_nothing_external() {
    let c = case(2, "run");
    let a = analyze(&c.runs, &c.noisy, Some(&c.clean), &StudyOptions::default()).unwrap();
    let images =
        ReportImages::from_run(&c.runs[0], &a, c.noisy.clone(), Some(c.clean.clone()), 6).unwrap();
    // First, best and last are in the strip.
    let steps: Vec<usize> = images.strip.iter().map(|f| f.step).collect();
    assert_eq!(steps.len(), 6);
    assert!(steps.contains(&10) && steps.contains(&100));
    assert!(steps.contains(&a.best_step.unwrap()));
    let html = render_report(&a, &images).unwrap();

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_self_contained(&html);
    // Seven plots with two runs and a clean image, each one SVG document.
    let ids = [
        "psnr",
        "loss",
        "band_fit",
        "band_heatmap",
        "two_run",
        "lowpass",
        "spectra",
    ];
    assert_eq!(count(&html, "<figure class=\"plot\""), ids.len());
    assert_eq!(count(&html, "<svg"), ids.len());
    assert_eq!(count(&html, "</svg>"), ids.len());
    for id in ids {
        assert!(html.contains(&format!("id=\"plot-{id}\"")), "no {id} plot");
    }
    // Text in the plots is SVG text (no font files needed).
    assert!(html.contains("<text"));
    // Images: observation, clean and the strip, as PNG data URIs with captions.
    assert_eq!(count(&html, "data:image/png;base64,"), 2 + 6);
    let best = a.best_step.unwrap();
    let best_caption = format!("step {best} · {:.2} dB · best", a.best_psnr.unwrap());
    assert!(html.contains(&best_caption), "no caption {best_caption}");
    // Key numbers.
    assert!(html.contains("24 × 20, 3 channel(s)"));
    assert!(html.contains(&format!("{:.2} dB", a.lowpass.best_lowpass_psnr.unwrap())));
    assert!(html.contains("t½ per band"));

    // The plot list matches what the report embeds.
    let p = plots(&a).unwrap();
    assert_eq!(p.iter().map(|p| p.id).collect::<Vec<_>>(), ids);
    assert!(
        p.iter()
            .all(|p| p.svg.starts_with("<svg") && !p.caption.is_empty())
    );

    // Written to disk: the same text, and no temporary files left.
    let out = c._tmp.path().join("report");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("report.html");
    write_report(&path, &a, &images).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), html);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn one_run_omits_the_two_run_plot_with_a_note_and_escapes_names() {
    let c = case(1, "a<b>&'\"");
    let a = analyze(&c.runs, &c.noisy, Some(&c.clean), &StudyOptions::default()).unwrap();
    assert_eq!(a.runs[0].name, "a<b>&'\"0");
    let images = ReportImages::from_run(&c.runs[0], &a, c.noisy.clone(), None, 4).unwrap();
    let html = render_report(&a, &images).unwrap();
    assert_self_contained(&html);
    assert_eq!(count(&html, "<svg"), 6);
    assert!(!html.contains("id=\"plot-two_run\""));
    assert!(html.contains("Only one run was analysed"));
    // The folder name is escaped everywhere it appears, in HTML and in the SVG.
    assert!(!html.contains("a<b>"));
    assert!(html.contains("a&lt;b&gt;&amp;&#39;&quot;0"));
    // Observation and 4 strip frames; no clean image given to the report.
    assert_eq!(count(&html, "data:image/png;base64,"), 1 + 4);
}

#[test]
fn without_any_psnr_the_psnr_plot_is_a_note() {
    let tmp = TempDir::new("nopsnr");
    let clean = test_image(16, 16, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 9);
    write_run(tmp.path(), &noisy, None, 0, 1.0);
    let run = RecordedRun::open(tmp.path()).unwrap();
    let a = analyze(&[run], &noisy, None, &StudyOptions::default()).unwrap();
    let images = ReportImages::new(noisy.clone(), None);
    let html = render_report(&a, &images).unwrap();
    assert_self_contained(&html);
    // loss, band fit, heat-map, low-pass, spectra.
    assert_eq!(count(&html, "<svg"), 5);
    assert!(html.contains("No PSNR to plot"));
    assert_eq!(count(&html, "data:image/png;base64,"), 1);

    // An analysis that does not belong to the images is refused.
    let other = ReportImages::new(test_image(8, 8, 1), None);
    assert!(render_report(&a, &other).is_err());
    // The analysis read back from disk renders the same report.
    let out = tmp.path().join("out");
    a.write(&out).unwrap();
    let back = Analysis::read(&out).unwrap();
    assert_eq!(count(&render_report(&back, &images).unwrap(), "<svg"), 5);
}

#[test]
fn strip_steps_choose_first_best_last_and_spread() {
    let steps: Vec<usize> = (1..=100).map(|k| 10 * k).collect();
    let s = strip_steps(&steps, Some(370), 7);
    assert_eq!(s.len(), 7);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
    assert!(s.iter().all(|x| steps.contains(x)));
    assert!(
        s.contains(&10) && s.contains(&1000) && s.contains(&370),
        "{s:?}"
    );
    // Log spacing: more of the early steps than of the late ones.
    let early = s.iter().filter(|&&x| x <= 300).count();
    assert!(early >= 3, "{s:?}");
    // A best step that was not recorded is ignored; a small count keeps the essentials.
    assert_eq!(strip_steps(&steps, Some(375), 2), vec![10, 1000]);
    assert_eq!(strip_steps(&steps, Some(370), 0), vec![10, 370, 1000]);
    assert_eq!(strip_steps(&steps, None, 20).len(), 20);
    assert_eq!(strip_steps(&[5, 6], None, 10), vec![5, 6]);
    assert_eq!(strip_steps(&[7], Some(7), 3), vec![7]);
    assert!(strip_steps(&[], Some(1), 3).is_empty());
}

#[test]
fn png_data_uris_decode_to_the_image() {
    for c in [1, 3] {
        let img = test_image(9, 5, c);
        let uri = png_data_uri(&img).unwrap();
        let b64 = uri.strip_prefix("data:image/png;base64,").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let (back, _) = load_from_memory(&bytes, "uri.png").unwrap();
        assert_eq!((back.width, back.height, back.channels), (9, 5, c));
        for (p, q) in img.data.iter().zip(&back.data) {
            assert!((p - q).abs() <= 0.5 / 255.0 + 1e-6);
        }
    }
    // Out-of-range samples are clamped, NaN is black; a malformed image is an error.
    let odd = Image {
        data: vec![-1.0, 2.0, f32::NAN, 0.5],
        ..Image::zeros(2, 2, 1)
    };
    assert!(png_data_uri(&odd).is_ok());
    let broken = Image {
        data: vec![0.0; 3],
        ..Image::zeros(2, 2, 1)
    };
    assert!(png_data_uri(&broken).is_err());
    assert_eq!(
        escape_html("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
    let _ = StripFrame {
        step: 1,
        image: Image::zeros(1, 1, 1),
    };
}

#[test]
fn diverged_and_long_runs_still_analyse_and_render() {
    let tmp = TempDir::new("long");
    let clean = test_image(12, 12, 1);
    let noisy = add_gaussian_noise(&clean, 25.0, 3);
    // 1000 records; some frames hold NaN (a diverged step), one is all zeros.
    let frames = (1..=1000).map(|k| {
        let img = match k {
            500..=502 => Image {
                data: vec![f32::NAN; 144],
                ..Image::zeros(12, 12, 1)
            },
            700 => Image::zeros(12, 12, 1),
            _ => lowpass(&noisy, 0.02 * (1.0 + k as f64 / 50.0)).unwrap(),
        };
        (k, img, None)
    });
    write_frames(tmp.path(), 0, frames);
    let run = RecordedRun::open(tmp.path()).unwrap();
    let opts = StudyOptions {
        bands: 4,
        ..StudyOptions::default()
    };
    let a = analyze(std::slice::from_ref(&run), &noisy, Some(&clean), &opts).unwrap();
    let best = a.best_step.unwrap();
    assert!(!(500..=502).contains(&best));
    assert!(a.best_psnr.unwrap().is_finite());
    assert!(a.lowpass.residual[499].is_nan() || a.lowpass.at_bound[499]);
    assert!(
        a.lowpass.residual[699].is_nan(),
        "a zero output has no relative residual"
    );

    // NaN survives the files as null.
    let out = tmp.path().join("out");
    a.write(&out).unwrap();
    let back = Analysis::read(&out).unwrap();
    assert!(back.runs[0].band_fit[500][0].is_nan());
    assert_eq!(back.best_step, Some(best));

    let images = ReportImages::from_run(&run, &back, noisy.clone(), Some(clean), 5).unwrap();
    let html = render_report(&back, &images).unwrap();
    assert_self_contained(&html);
    assert_eq!(count(&html, "<svg"), 6);
    // The heat-map stays small however long the run: at most 400 columns of 4 bands, plus the
    // colour bar and the frame.
    let heat = plots(&back)
        .unwrap()
        .into_iter()
        .find(|p| p.id == "band_heatmap")
        .unwrap();
    let rects = count(&heat.svg, "<rect");
    assert!(
        (4 * 250..=400 * 4 + 60).contains(&rects),
        "{rects} rectangles"
    );
}
