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
