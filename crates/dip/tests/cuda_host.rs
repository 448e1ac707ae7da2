//! Host-side checks of the GPU backend (feature `cuda`): they need no GPU. The NVRTC check runs
//! where libnvrtc loads (for example from the `nvidia-cuda-nvrtc` Python wheel on
//! LD_LIBRARY_PATH) and says it was skipped otherwise.
#![cfg(feature = "cuda")]

use dip::cuda::{KERNEL_NAMES, compile_kernels, probe};

#[test]
fn kernels_compile_with_nvrtc() {
    let ptx = match compile_kernels(Some("compute_80")) {
        Ok(p) => p,
        Err(e) if e.0.contains("not found") => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    for name in KERNEL_NAMES {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "kernel {name} missing from the PTX"
        );
    }
    // The other architectures the backend targets compile too.
    for arch in ["compute_90", "compute_100"] {
        compile_kernels(Some(arch)).unwrap_or_else(|e| panic!("{arch}: {e}"));
    }
}

#[test]
fn a_missing_device_is_a_clear_error() {
    match probe(0) {
        Ok(d) => eprintln!("skipped: found {} (cuda:{})", d.name, d.ordinal),
        Err(e) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "one line: {m}");
            assert!(
                m.contains("driver") || m.contains("device") || m.contains("not found"),
                "{m}"
            );
            eprintln!("no GPU here: {m}");
        }
    }
    match probe(1000) {
        Ok(_) => panic!("a thousandth device"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// The golden tests on the GPU, where there is one (skipped, saying so, where not).
#[test]
fn golden_cases_on_the_gpu() {
    if let Err(e) = probe(0) {
        eprintln!("skipped (no usable GPU): {e}");
        return;
    }
    let dir = std::env::var("DIP_GOLDEN_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        std::path::PathBuf::from,
    );
    for case in dip::cuda::golden::cases(&dir).unwrap() {
        let r =
            dip::cuda::golden::check_case(&dir, &case, 0, dip::cuda::Precision::F32, 1e-4).unwrap();
        for (what, err, allowed) in &r.checks {
            eprintln!("{case}: {what}: {err:.2e} (allowed {allowed:.0e})");
        }
        assert!(r.passed(), "{case} failed on the GPU");
    }
}

/// The executor on the host emulation of the GPU (the kernels compiled by the host C++
/// compiler, reference GEMMs for cuBLAS) against the golden tensors: launch arguments, buffer
/// offsets, GEMM shapes and transposes, gradient write/add. Skipped, saying so, without `c++`.
#[test]
fn golden_cases_on_the_host_emulation() {
    let dir = std::env::var("DIP_GOLDEN_DIR").map_or_else(
        |_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        std::path::PathBuf::from,
    );
    let work = tempfile::tempdir().unwrap();
    for case in dip::cuda::golden::cases(&dir).unwrap() {
        let r = match dip::cuda::golden::check_case_emulated(&dir, &case, 1e-4, work.path()) {
            Ok(r) => r,
            Err(e) if e.0.contains("no host C++ compiler") => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        for (what, err, allowed) in &r.checks {
            eprintln!("{case}: {what}: {err:.2e} (allowed {allowed:.0e})");
        }
        assert!(r.passed(), "{case} failed on the emulation");
    }
}
