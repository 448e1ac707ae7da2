"""The Python package against its promises: dtypes and layouts, the results of the library, the
command line's numbers for the same run, the stop callback, and clear errors."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import dip

# A narrow network: the same code paths as the presets' in a fraction of the time.
NARROW = {"net.scales": 3, "net.down": 8, "net.up": 8, "net.skip": 2, "net.input_channels": 4}
ROOT = Path(__file__).resolve().parents[3]


def picture(h=32, w=32, c=None):
    """A smooth ramp with a bright square, on the 8-bit grid."""
    x = np.linspace(0.1, 0.8, w)[None, :] * np.ones((h, 1))
    x[h // 4 : h // 2, w // 4 : w // 2] = 0.95
    x = np.round(x * 255) / 255
    if c:
        x = np.stack([x, x[::-1], x.T[:h, :w]], axis=2)
    return x.astype(np.float32)


def noisy(x, sigma=25, seed=1):
    return np.round(dip.add_noise(x, sigma, seed=seed) * 255).astype(np.uint8)


def test_denoising_gains_and_is_deterministic():
    x = picture()
    y = noisy(x)
    r1 = dip.denoise(y, clean=x, iters=300, stop="fixed", settings=NARROW, threads=1)
    r2 = dip.denoise(y, clean=x, iters=300, stop="fixed", settings=NARROW, threads=1)
    assert np.array_equal(r1.image, r2.image), "same seed and threads, same result"
    assert r1.image.shape == x.shape and r1.image.dtype == np.float32
    before = dip.psnr(y, x)
    assert r1.psnr > before + 2.0, (r1.psnr, before)
    assert abs(dip.psnr(r1.image, x) - r1.psnr) < 1e-6
    assert r1.stopped_at == 300 and r1.stop_rule == "fixed"
    h = r1.history
    assert len(h["step"]) == len(h["loss"]) == len(h["psnr"]) == 30
    assert h["loss"][-1] < h["loss"][0]
    other = dip.denoise(y, clean=x, iters=300, stop="fixed", settings=NARROW, threads=1, seed=5)
    assert not np.array_equal(other.image, r1.image), "another seed, another fit"


def test_dtypes_and_layouts_mean_the_same_image():
    x = picture(c=3)
    y8 = noisy(x)
    kw = dict(iters=20, stop="fixed", settings=NARROW, threads=1)
    a = dip.denoise(y8, **kw).image
    b = dip.denoise(y8.astype(np.float64) / 255, **kw).image
    c = dip.denoise(np.asfortranarray(y8), **kw).image
    wide = np.zeros((32, 64, 3), np.uint8)
    wide[:, ::2] = y8
    d = dip.denoise(wide[:, ::2], **kw).image
    e = dip.denoise((y8.astype(np.uint16) * 257), **kw).image
    assert np.array_equal(a, c) and np.array_equal(a, d)
    # Floats and 16-bit hold the same values; only the bit depth of the metrics differs.
    assert np.array_equal(a, b) and np.array_equal(a, e)
    g = dip.denoise(y8[:, :, 0], **kw).image
    assert g.ndim == 2 and g.shape == (32, 32)


def test_the_command_line_gives_the_same_numbers(tmp_path):
    exe = os.environ.get("DIP_BIN") or shutil.which("dip")
    if exe is None:
        built = ROOT / "target" / "release" / "dip"
        exe = str(built) if built.exists() else None
    if exe is None:
        pytest.skip("SKIPPED: no dip binary (build it with cargo build --release, or set DIP_BIN)")
    x = picture()
    y = noisy(x)

    def pgm(path, a):
        a8 = np.round(np.asarray(a) * (255 if a.dtype != np.uint8 else 1)).astype(np.uint8)
        path.write_bytes(b"P5\n%d %d\n255\n" % (a8.shape[1], a8.shape[0]) + a8.tobytes())

    pgm(tmp_path / "noisy.pgm", y)
    pgm(tmp_path / "clean.pgm", x)
    sets = sum((["--set", f"{k}={v}"] for k, v in NARROW.items()), [])
    subprocess.run(
        [exe, "--threads", "1", "-q", "denoise", "noisy.pgm", "--clean", "clean.pgm",
         "--iters", "200", "-o", "out.png", "--json", "s.json", "--no-checkpoint", *sets],
        cwd=tmp_path, check=True, capture_output=True)
    s = json.loads((tmp_path / "s.json").read_text())
    r = dip.denoise(y, clean=x, iters=200, settings=NARROW, threads=1)
    assert r.stopped_at == s["stopped_at"]
    assert r.stop_rule == s["stop_rule"]
    assert abs(r.psnr - s["psnr_final"]) < 1e-9
    assert abs(r.sigma_estimate - s["stop_sigma"]) < 1e-9


def test_inpainting_super_resolution_and_deblurring():
    x = picture()
    rng = np.random.default_rng(0)
    mask = rng.random(x.shape) < 0.5
    r = dip.inpaint(np.where(mask, x, 0), mask, clean=x, iters=100, settings=NARROW, threads=1)
    assert r.image.shape == x.shape
    assert r.baseline[0] == "harmonic fill"
    assert r.psnr > dip.psnr(np.where(mask, x, 0), x) + 5
    lr = x[::2, ::2]
    s = dip.super_resolve(lr, 2, iters=30, stop="fixed", settings=NARROW, threads=1)
    assert s.image.shape == (32, 32), "16x16 upscaled by 2"
    box = np.ones((3, 3))
    a = dip.deblur(x, box, iters=30, stop="fixed", settings=NARROW, threads=1)
    b = dip.deblur(x, "box:3", iters=30, stop="fixed", settings=NARROW, threads=1)
    assert dip.psnr(a.image, b.image) > 40, "an array PSF and the same PSF by name agree"
    via = dip.restore(x, "deblur", psf="box:3", iters=30, stop="fixed", settings=NARROW,
                      threads=1)
    assert np.array_equal(via.image, b.image)


def test_the_callback_sees_steps_and_can_stop_the_fit():
    x = picture()
    seen = []

    def cb(step, loss, image):
        seen.append((step, loss, None if image is None else image.shape))
        return step < 30

    r = dip.denoise(noisy(x), iters=200, stop="fixed", settings=NARROW, threads=1,
                    callback=cb, callback_every=10, callback_images=True)
    assert [s for s, _, _ in seen] == [10, 20, 30]
    assert seen[0][2] == (32, 32, 1)
    assert r.steps_run == 30

    def bad(step, loss, image):
        raise RuntimeError("from the callback")

    with pytest.raises(RuntimeError, match="from the callback"):
        dip.denoise(noisy(x), iters=50, settings=NARROW, threads=1, callback=bad)


def test_an_interrupted_fit_returns_what_it_has():
    import signal

    x = picture()

    def ctrl_c(step, loss, image):
        if step == 20:
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.2)  # the main thread runs the handler meanwhile

    with pytest.warns(UserWarning, match="interrupted after step"):
        r = dip.denoise(noisy(x), clean=x, iters=2000, stop="fixed", settings=NARROW,
                        threads=1, callback=ctrl_c)
    # Cancelled within a step of the signal, far before the budget.
    assert r.interrupted and 20 <= r.steps_run <= 21, r.steps_run
    assert r.image.shape == x.shape and r.psnr is not None


def test_sgld_gives_a_spread():
    x = picture()
    r = dip.denoise(noisy(x), iters=60, settings={**NARROW, "sgld.burn_in": 20, "sgld.every": 10},
                    threads=1)
    assert r.sgld_std is not None and r.sgld_std.shape == x.shape
    assert r.sgld_std.max() > 0


def test_bad_input_is_a_clear_error():
    x = picture()
    with pytest.raises(ValueError, match="4 channels"):
        dip.denoise(np.zeros((8, 8, 4), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        dip.denoise(np.full((8, 8), np.nan))
    with pytest.raises(TypeError, match="int64"):
        dip.denoise(np.zeros((8, 8), np.int64))
    with pytest.raises(ValueError, match="16x16"):
        dip.inpaint(x, np.ones((16, 16), bool))
    with pytest.raises(ValueError, match="fit.lr"):
        dip.denoise(x, lr=-1.0)
    with pytest.raises(TypeError, match="unknown setting"):
        dip.denoise(x, learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown preset"):
        dip.denoise(x, preset="nope")
    with pytest.raises(ValueError, match="clean"):
        dip.denoise(x, clean=np.zeros((16, 16), np.float32))
    with pytest.raises(ValueError, match="factor"):
        dip.super_resolve(x, 3)


def test_noise_and_metrics():
    x = picture(64, 64)
    a = dip.add_noise(x, 25, seed=3)
    assert np.array_equal(a, dip.add_noise(x, 25, seed=3))
    assert not np.array_equal(a, dip.add_noise(x, 25, seed=4))
    sd = float(np.std(a.astype(np.float64) - x)) * 255
    assert 20 < sd < 27, sd  # 25, less what clipping at 0 and 1 removes
    assert dip.psnr(x, x) == float("inf") or dip.psnr(x, x) > 99
    assert abs(dip.ssim(x, x) - 1.0) < 1e-9
    p = dip.add_noise(x, kind="poisson", peak=30, seed=1)
    assert p.shape == x.shape and not np.array_equal(p, x)


def test_library_operators_are_the_command_lines_and_adjoint():
    rng = np.random.default_rng(0)
    ops = [
        dip.operators.Identity((16, 16)),
        dip.operators.Mask(rng.random((16, 16)) < 0.5, channels=3),
        dip.operators.Downsample((16, 16, 3), factor=4),
        dip.operators.Blur((16, 16), "gaussian:1.5"),
        dip.operators.Blur((16, 16, 3), np.outer([1, 2, 1], [1, 2, 1])),
        dip.operators.Radon(17, [0, 33.3, 90, 151]),
    ]
    for A in ops:
        x = rng.standard_normal(A.input_shape).astype(np.float32)
        y = rng.standard_normal(A.output_shape).astype(np.float32)
        ax, aty = A.forward(x), A.adjoint(y)
        assert ax.shape == A.output_shape and aty.shape == A.input_shape
        lhs, rhs = float(np.vdot(ax, y)), float(np.vdot(x, aty))
        assert abs(lhs - rhs) <= 1e-4 * (abs(lhs) + abs(rhs) + 1), (A, lhs, rhs)
    # The downsampler is the one `super_resolve` fits through: the same observation gives the
    # same restoration through either door.
    x = picture(c=3)
    A = dip.operators.Downsample(x.shape, factor=4)
    y = np.clip(A.forward(x), 0, 1)
    kw = dict(iters=20, stop="fixed", settings=NARROW, threads=1)
    a = dip.restore(y, A, preset="sr4", **kw)
    b = dip.super_resolve(y, 4, **kw)
    assert a.image.shape == x.shape
    assert np.array_equal(a.image, b.image)
    with pytest.raises(ValueError, match="expected shape"):
        A.forward(np.zeros((8, 8, 3)))


def test_a_users_operator_restores_and_a_wrong_adjoint_is_refused():
    # Inpainting written by hand, on a 1-D vector of the known pixels: forward picks them,
    # adjoint scatters them back.
    x = picture()
    rng = np.random.default_rng(3)
    known = np.flatnonzero(rng.random(x.size) < 0.5)

    def forward(img):
        return img.reshape(-1)[known]

    def adjoint(v):
        out = np.zeros(x.size, np.float32)
        out[known] = v
        return out.reshape(x.shape)

    y = forward(x)
    kw = dict(iters=300, stop="fixed", settings=NARROW, threads=1)
    r = dip.restore(y, (forward, adjoint), shape=x.shape, clean=x, **kw)
    assert r.image.shape == x.shape and r.stopped_at == 300
    # The library's own mask on the same pixels fits the same problem: the results agree to
    # the summation order of the data term.
    m = np.zeros(x.size, bool)
    m[known] = True
    own = dip.restore(x * m.reshape(x.shape), dip.operators.Mask(m.reshape(x.shape)),
                      clean=x, **kw)
    assert abs(r.psnr - own.psnr) < 0.5, (r.psnr, own.psnr)
    # And it beats the classical answer to that problem, the harmonic fill (28.5 dB here).
    _, fill = dip.inpaint(x * m.reshape(x.shape), m.reshape(x.shape), clean=x, **kw).baseline
    assert r.psnr > fill + 1.0, (r.psnr, fill)

    def wrong_adjoint(v):
        return 2.0 * adjoint(v)

    with pytest.raises(ValueError, match="not the adjoint"):
        dip.restore(y, (forward, wrong_adjoint), shape=x.shape, **kw)
    with pytest.raises(ValueError, match="shape="):
        dip.restore(y, (forward, adjoint), **kw)

    class Broken:
        calls = 0

        def forward(self, img):
            Broken.calls += 1
            if Broken.calls > 5:
                raise RuntimeError("the scanner is offline")
            return forward(img)

        def adjoint(self, v):
            return adjoint(v)

    with pytest.raises(RuntimeError, match="scanner is offline"):
        dip.restore(y, Broken(), shape=x.shape, **kw)


def test_band_fits_trajectory_and_the_spectral_bias():
    x = picture(32, 32)
    y = noisy(x, sigma=25)
    kw = dict(iters=200, stop="fixed", settings=NARROW, threads=1)
    r = dip.denoise(y, clean=x, bands=4, record_every=50, **kw)
    b = r.bands
    assert b["fit"].shape == (20, 4) and len(b["step"]) == 20 and len(b["edges"]) == 5
    # Low bands first: the lowest band is fitted to one half before the highest.
    assert np.isfinite(b["half_time"][0])
    assert not b["half_time"][3] < b["half_time"][0], b["half_time"]
    assert r.trajectory.shape == (4, 32, 32) and list(r.trajectory_steps) == [50, 100, 150, 200]
    # The last frame is the last raw output: with ema=0 it is the result itself.
    last = dip.denoise(y, bands=4, record_every=200, ema=0, **kw)
    assert np.array_equal(last.trajectory[-1], last.image)
    # Two seeds: their distance per band adds up to the total (Parseval), frame by frame,
    # and the runs agree on the lowest band more than on the highest.
    other = dip.denoise(y, record_every=50, seed=7, **kw)
    total, per_band = dip.analysis.band_distance(r.trajectory, other.trajectory, bands=4)
    assert per_band.shape == (4, 4)
    direct = ((r.trajectory - other.trajectory).astype(np.float64) ** 2).sum(axis=(1, 2))
    assert np.allclose(total, direct, rtol=1e-6)
    assert np.allclose(per_band.sum(axis=1), total, rtol=1e-6)
    with pytest.raises(ValueError, match="record_every"):
        dip.denoise(y, record_every=15, **kw)
    with pytest.raises(ValueError, match="own size"):
        dip.super_resolve(y[:16, :16], 2, bands=4, **kw)


def test_gp_prior_kernel_and_spectrum():
    p = dip.analysis.gp_prior(settings=NARROW, size=16, samples=32, threads=1)
    k = p["kernel"]
    r = k.shape[0] // 2
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    # A covariance: largest at zero displacement (the variance), symmetric c(d) = c(-d).
    assert abs(k[r, r] - p["variance"]) < 1e-9 * max(1.0, p["variance"])
    assert k[r, r] >= k.max() - 1e-12
    assert np.allclose(k, k[::-1, ::-1])
    assert len(p["frequency"]) == len(p["power"]) and np.all(p["power"] >= 0)
    # The same seed gives the same prior.
    q = dip.analysis.gp_prior(settings=NARROW, size=16, samples=32, threads=1)
    assert np.array_equal(p["kernel"], q["kernel"])


def test_arch_brings_its_fit_settings_as_on_the_command_line():
    y = noisy(picture(16, 16))
    kw = dict(iters=10, stop="fixed", threads=1)
    r = json.loads(dip.denoise(y, arch="decoder-16", **kw).summary)
    assert r["recipe"]["net"]["arch"] == "decoder" and r["recipe"]["net"]["width"] == 16
    assert r["recipe"]["fit"]["reg_noise"] == 0.0
    r = json.loads(dip.denoise(y, arch="linear-64", **kw).summary)
    assert r["recipe"]["fit"]["lr"] == 0.001
    # A later setting still wins, as after --arch.
    r = json.loads(dip.denoise(y, arch="linear-64", lr=0.005, **kw).summary)
    assert r["recipe"]["fit"]["lr"] == 0.005
    with pytest.raises(ValueError, match="unknown architecture"):
        dip.denoise(y, arch="transformer", **kw)


def test_ct_beats_filtered_back_projection_on_sparse_views():
    x = dip.phantom(32)
    A = dip.operators.Radon(32, 12)
    assert A.output_shape == (32, 12)
    y = A.forward(x)
    small = {"net.scales": 3, "net.down": 16, "net.up": 16, "net.skip": 4,
             "net.input_channels": 8}
    r = dip.ct(y, 12, clean=x, iters=600, stop="fixed", settings=small, threads=1)
    name, fbp = r.baseline
    assert name == "FBP" and r.image.shape == (32, 32)
    # 12 views: streaks in the FBP (23.0 dB here); the prior removes them (24.7 dB).
    assert r.psnr > fbp + 1.0, (r.psnr, fbp)
    with pytest.raises(ValueError, match="one column per angle"):
        dip.ct(y, 10, iters=10)


def test_a_sparse_matrix_from_a_file_or_scipy():
    fixtures = ROOT / "crates" / "dip" / "tests" / "matrix"
    x = np.load(fixtures / "x.npy")
    y = np.load(fixtures / "y.npy")
    for name in ("a.mtx", "a_csr.npz", "a_csc.npz"):
        A = dip.operators.Matrix(fixtures / name, x.shape)
        assert A.input_shape == (8, 8) and A.output_shape == (40,)
        assert np.allclose(A.forward(x), y, rtol=1e-5, atol=1e-5), name
        g = np.linspace(-1, 1, 40)
        assert abs(np.vdot(A.forward(x), g) - np.vdot(x, A.adjoint(g))) < 1e-4
    r = dip.restore(y, A, iters=20, stop="fixed", settings=NARROW, threads=1)
    assert r.image.shape == (8, 8)
    with pytest.raises(ValueError, match="64 columns but the image"):
        dip.operators.Matrix(fixtures / "a.mtx", (4, 4))
    try:
        import scipy.sparse as sp
    except ImportError:
        pytest.skip("SKIPPED: scipy is not installed (the scipy-matrix half of this test)")
    m = sp.random(30, 64, density=0.2, random_state=3, format="coo")
    B = dip.operators.Matrix(m, (8, 8))
    assert np.allclose(B.forward(x), m @ x.ravel(), rtol=1e-5, atol=1e-5)
