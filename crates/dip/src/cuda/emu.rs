//! A host emulation of the GPU, for testing the executor where there is no GPU: the same
//! `kernels.cu`, compiled by the host C++ compiler with a small shim (blocks and threads run one
//! after another: no kernel synchronises its block), reference column-major GEMM/GEMV for
//! cuBLAS, and graphs as recorded lists of work. Only as faithful as the shim: it checks the
//! executor's logic (launch arguments, buffer offsets, GEMM shapes and transposes, write/add of
//! gradients), not the real device's behaviour.

use std::cell::RefCell;
use std::ffi::c_void;
use std::path::Path;
use std::process::Command;

use super::GpuError;
use super::exec::{A, Backend, Batch, K, Precision};

const SHIM: &str = r#"
#include <algorithm>
#include <cmath>
#include <utility>
using std::max;
using std::min;
struct dim3 { unsigned x = 1, y = 1, z = 1; };
static dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
// IEEE f64 arithmetic without contraction (the host compiler does not fuse without -mfma).
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
using std::isfinite;
using std::sqrt;
"#;

const RUNNER: &str = r#"
template <class... Ts, std::size_t... I>
static void emu_call(void (*f)(Ts...), void** args, std::index_sequence<I...>) {
    f(*static_cast<Ts*>(args[I])...);
}
// Blocks and threads one after another: no kernel synchronises its block (a kernel calling
// __syncthreads does not compile here).
template <class... Ts>
static void emu_run(void (*f)(Ts...), void** args, dim3 g, dim3 b) {
    gridDim = g;
    blockDim = b;
    unsigned n = b.x * b.y * b.z;
    for (unsigned bz = 0; bz < g.z; bz++)
    for (unsigned by = 0; by < g.y; by++)
    for (unsigned bx = 0; bx < g.x; bx++) {
        blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
        for (unsigned t = 0; t < n; t++) {
            threadIdx.x = t % b.x;
            threadIdx.y = (t / b.x) % b.y;
            threadIdx.z = t / (b.x * b.y);
            emu_call(f, args, std::index_sequence_for<Ts...>{});
        }
    }
}
"#;

type Entry = unsafe extern "C" fn(*mut *mut c_void, u32, u32, u32, u32, u32, u32);

/// The emulated device: host arenas and the kernels compiled for the host.
pub struct Emulator {
    _lib: libloading::Library,
    entries: Vec<Entry>,
    arena: Vec<f32>,
    arena64: Vec<f64>,
    /// Work recorded instead of run (a graph being captured), and the kept graphs.
    recording: RefCell<Option<Vec<Work>>>,
    graphs: Vec<Option<Vec<Work>>>,
    /// How the GEMMs round their operands.
    precision: Precision,
}

/// One queued piece of work, as a graph keeps it: the launch or call and its arguments.
#[derive(Clone)]
enum Work {
    Launch(K, (u32, u32, u32), (u32, u32, u32), Vec<A>),
    Gemm(bool, bool, [usize; 3], [u64; 3], [usize; 3], f32, Batch),
    Gemv([usize; 3], [u64; 3], Batch),
}

impl Emulator {
    /// Compiles the kernels with `c++` (C++17) in `dir`. Fails if there is no compiler.
    pub fn new(
        dir: &Path,
        len: usize,
        len64: usize,
        precision: Precision,
    ) -> Result<Self, GpuError> {
        let mut src = String::from(SHIM);
        src.push_str(super::KERNELS);
        src.push_str(RUNNER);
        for name in super::KERNEL_NAMES {
            src.push_str(&format!(
                "extern \"C\" void emu_{name}(void** a, unsigned gx, unsigned gy, unsigned gz, \
                 unsigned bx, unsigned by, unsigned bz) {{ emu_run({name}, a, dim3{{gx, gy, gz}}, \
                 dim3{{bx, by, bz}}); }}\n"
            ));
        }
        let cpp = dir.join("dip_kernels_emu.cpp");
        let so = dir.join("libdip_kernels_emu.so");
        std::fs::write(&cpp, src).map_err(|e| GpuError(format!("{}: {e}", cpp.display())))?;
        let out = Command::new("c++")
            .args(["-std=c++17", "-O1", "-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&cpp)
            .output()
            .map_err(|e| GpuError(format!("no host C++ compiler (c++): {e}")))?;
        if !out.status.success() {
            return Err(GpuError(format!(
                "the kernels do not compile for the host: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        // SAFETY: a library we just built, exporting only the functions named below.
        let lib = unsafe { libloading::Library::new(&so) }
            .map_err(|e| GpuError(format!("cannot load {}: {e}", so.display())))?;
        let entries = super::KERNEL_NAMES
            .iter()
            .map(|n| {
                // SAFETY: the signature is the one generated above.
                unsafe { lib.get::<Entry>(format!("emu_{n}").as_bytes()) }
                    .map(|s| *s)
                    .map_err(|e| GpuError(format!("emu_{n}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Emulator {
            _lib: lib,
            entries,
            arena: vec![f32::NAN; len],
            arena64: vec![f64::NAN; len64],
            recording: RefCell::new(None),
            graphs: Vec::new(),
            precision,
        })
    }

    /// Records `w` if a graph is being captured; otherwise hands it back to be run.
    fn record(&self, w: Work) -> Option<Work> {
        match self.recording.borrow_mut().as_mut() {
            Some(list) => {
                list.push(w);
                None
            }
            None => Some(w),
        }
    }

    /// A copy while capturing is an error, as on the device (the copies are synchronous).
    fn not_capturing(&self) -> Result<(), GpuError> {
        if self.recording.borrow().is_some() {
            return Err(GpuError(
                "a copy between host and device while a graph is captured".into(),
            ));
        }
        Ok(())
    }

    fn run(&self, w: &Work) {
        match w {
            Work::Launch(k, grid, block, args) => self.run_kernel(*k, *grid, *block, args),
            &Work::Gemm(ta, tb, mnk, [a, b, c], ld, beta, batch) => {
                let round: fn(f32) -> f32 = match self.precision {
                    Precision::F32 => |x| x,
                    Precision::Tf32 => round_tf32,
                    Precision::Bf16 => round_bf16,
                };
                for l in 0..batch.count as u64 {
                    let s = l * 4 * batch.stride as u64;
                    gemm(ta, tb, mnk, [a + s, b + s, c + s], ld, beta, round)
                }
            }
            &Work::Gemv([m, n, lda], [a, x, y], batch) => {
                for l in 0..batch.count as u64 {
                    let s = l * 4 * batch.stride as u64;
                    gemv(m, n, a + s, lda, x + s, y + s)
                }
            }
        }
    }

    fn run_kernel(&self, k: K, grid: (u32, u32, u32), block: (u32, u32, u32), args: &[A]) {
        let mut ptrs: Vec<*mut c_void> = args
            .iter()
            .map(|a| match a {
                A::P(v) => v as *const u64 as *mut c_void,
                A::I(v) => v as *const i32 as *mut c_void,
                A::L(v) => v as *const i64 as *mut c_void,
                A::F(v) => v as *const f32 as *mut c_void,
                A::D(v) => v as *const f64 as *mut c_void,
            })
            .collect();
        // SAFETY: pointers into the arenas, which the kernels write through as a GPU would.
        unsafe {
            (self.entries[k as usize])(
                ptrs.as_mut_ptr(),
                grid.0,
                grid.1,
                grid.2,
                block.0,
                block.1,
                block.2,
            )
        };
    }
}

/// An f32 rounded to TF32 (10 explicit mantissa bits), to nearest with ties away from zero
/// (as `cvt.rna.tf32.f32`).
fn round_tf32(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    f32::from_bits((x.to_bits() + (1 << 12)) & !((1 << 13) - 1))
}

/// An f32 rounded to bfloat16 (7 explicit mantissa bits), to nearest even.
fn round_bf16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let b = x.to_bits();
    let even = (b >> 16) & 1;
    f32::from_bits((b + 0x7fff + even) & 0xffff_0000)
}

/// Reference column-major `C = op(A)·op(B) + beta·C`, the operands passed through `round`,
/// summed in f64.
fn gemm(
    ta: bool,
    tb: bool,
    [m, n, k]: [usize; 3],
    [a, b, c]: [u64; 3],
    [lda, ldb, ldc]: [usize; 3],
    beta: f32,
    round: fn(f32) -> f32,
) {
    let (a, b, c) = (a as *const f32, b as *const f32, c as *mut f32);
    for j in 0..n {
        for i in 0..m {
            let mut s = 0.0f64;
            for p in 0..k {
                // SAFETY: inside the arena for the shapes the executor passes (checked by the
                // comparison with the CPU engine).
                let (x, y) = unsafe {
                    (
                        *a.add(if ta { p + i * lda } else { i + p * lda }),
                        *b.add(if tb { j + p * ldb } else { p + j * ldb }),
                    )
                };
                s += round(x) as f64 * round(y) as f64;
            }
            // SAFETY: as above.
            unsafe {
                let out = c.add(i + j * ldc);
                *out = if beta == 0.0 {
                    s as f32
                } else {
                    s as f32 + beta * *out
                };
            }
        }
    }
}

/// Reference column-major `y = A·x` (`A` is m × n).
fn gemv(m: usize, n: usize, a: u64, lda: usize, x: u64, y: u64) {
    let (a, x, y) = (a as *const f32, x as *const f32, y as *mut f32);
    for i in 0..m {
        let mut s = 0.0f64;
        for j in 0..n {
            // SAFETY: as in gemm.
            s += unsafe { *a.add(i + j * lda) as f64 * *x.add(j) as f64 };
        }
        // SAFETY: as in gemm.
        unsafe { *y.add(i) = s as f32 };
    }
}

impl Backend for Emulator {
    fn base(&self) -> (u64, u64) {
        (self.arena.as_ptr() as u64, self.arena64.as_ptr() as u64)
    }

    fn launch(
        &self,
        k: K,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        args: &[A],
    ) -> Result<(), GpuError> {
        if let Some(w) = self.record(Work::Launch(k, grid, block, args.to_vec())) {
            self.run(&w);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        &self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        beta: f32,
        c: u64,
        ldc: usize,
        batch: Batch,
    ) -> Result<(), GpuError> {
        let w = Work::Gemm(ta, tb, [m, n, k], [a, b, c], [lda, ldb, ldc], beta, batch);
        if let Some(w) = self.record(w) {
            self.run(&w);
        }
        Ok(())
    }

    fn sgemv(
        &self,
        m: usize,
        n: usize,
        a: u64,
        lda: usize,
        x: u64,
        y: u64,
        batch: Batch,
    ) -> Result<(), GpuError> {
        if let Some(w) = self.record(Work::Gemv([m, n, lda], [a, x, y], batch)) {
            self.run(&w);
        }
        Ok(())
    }

    fn upload(&mut self, off: usize, src: &[f32]) -> Result<(), GpuError> {
        self.not_capturing()?;
        self.arena[off..off + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn upload64(&mut self, off: usize, src: &[f64]) -> Result<(), GpuError> {
        self.not_capturing()?;
        self.arena64[off..off + src.len()].copy_from_slice(src);
        Ok(())
    }

    fn download(&self, off: usize, n: usize) -> Result<Vec<f32>, GpuError> {
        self.not_capturing()?;
        Ok(self.arena[off..off + n].to_vec())
    }

    fn download64(&self, off: usize, n: usize) -> Result<Vec<f64>, GpuError> {
        self.not_capturing()?;
        Ok(self.arena64[off..off + n].to_vec())
    }

    fn sync(&self) -> Result<(), GpuError> {
        self.not_capturing()
    }

    fn begin_capture(&mut self) -> Result<(), GpuError> {
        let mut r = self.recording.borrow_mut();
        if r.is_some() {
            return Err(GpuError("a graph is already being captured".into()));
        }
        *r = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&mut self, slot: usize) -> Result<(), GpuError> {
        let list = self
            .recording
            .borrow_mut()
            .take()
            .ok_or_else(|| GpuError("no graph is being captured".into()))?;
        if list.is_empty() {
            return Err(GpuError("the captured graph is empty".into()));
        }
        if self.graphs.len() <= slot {
            self.graphs.resize_with(slot + 1, || None);
        }
        self.graphs[slot] = Some(list);
        Ok(())
    }

    fn replay(&self, slot: usize) -> Result<(), GpuError> {
        self.not_capturing()?;
        let list = self
            .graphs
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| GpuError("no captured graph".into()))?;
        for w in list {
            self.run(w);
        }
        Ok(())
    }
}
