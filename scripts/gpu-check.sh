#!/usr/bin/env bash
# The GPU check: the golden tests on the GPU (f32 and TF32), then seconds per training step of
# `dip bench --device cuda` beside PyTorch CUDA timing the same network on the same card.
#
# Run on a machine with an NVIDIA GPU, its driver and the CUDA runtime libraries (NVRTC and
# cuBLAS; those of a CUDA-enabled PyTorch install are found on their own), with:
#   - a release binary built elsewhere with `cargo build --release -p dip-cli --features cuda`
#   - a copy of the PyTorch peer script (torch_dip.py) and of the golden folder
#
#   scripts/gpu-check.sh --dip ./dip --peer ./torch_dip.py --golden ./golden [--sizes 256,512]
#
# Prints the self-test results and a table: size, dip s/step, torch s/step, torch/dip (the
# bf16 row is set against torch in TF32, its fastest mode with f32 tensors).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dip="$here/../target/release/dip"
peer=""
golden=""
sizes="256,512"
iters=20
warmup=5
while [ $# -gt 0 ]; do
  case "$1" in
    --dip) dip="$2"; shift 2 ;;
    --peer) peer="$2"; shift 2 ;;
    --golden) golden="$2"; shift 2 ;;
    --sizes) sizes="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$dip" ] || { echo "error: no dip binary at $dip (give --dip)" >&2; exit 2; }
[ -f "$peer" ] || { echo "error: give --peer path/to/torch_dip.py" >&2; exit 2; }
[ -d "$golden" ] || { echo "error: give --golden path/to/golden" >&2; exit 2; }
python="${PYTHON:-python3}"

# NVRTC and cuBLAS: add the folders of PyTorch's CUDA wheels to the library path, after any
# the caller set.
libdirs="$("$python" - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
found = []
for r in roots:
    for pat in ("nvidia/*/lib", "nvidia/*/*/lib", "torch/lib"):
        for d in glob.glob(os.path.join(r, pat)):
            if glob.glob(os.path.join(d, "libnvrtc.so*")) or glob.glob(os.path.join(d, "libcublas.so*")):
                found.append(d)
print(":".join(dict.fromkeys(found)))
PY
)"
if [ -n "$libdirs" ]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$libdirs"
fi

echo "== golden tests on the GPU (f32)"
"$dip" selftest --device cuda --golden "$golden"
echo "== golden tests on the GPU (TF32)"
"$dip" selftest --device cuda --golden "$golden" --tf32
echo "== golden tests on the GPU (bf16)"
"$dip" selftest --device cuda --golden "$golden" --bf16

echo "== timing (median seconds per step: forward, loss, backward, Adam)"
dip_out="$("$dip" bench --device cuda --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_out"
dip_graph="$("$dip" bench --device cuda --graph --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_graph"
dip_tf32="$("$dip" bench --device cuda --tf32 --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_tf32"
dip_tf32_graph="$("$dip" bench --device cuda --tf32 --graph --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_tf32_graph"
dip_bf16_graph="$("$dip" bench --device cuda --precision bf16 --graph --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_bf16_graph"
# Four networks as lanes of one batch (the sweep runner's --jobs 4): seconds per fit's step.
dip_lanes="$("$dip" bench --device cuda --graph --lanes 4 --sizes "128,$sizes" --iters "$iters" --warmup "$warmup")"
echo "$dip_lanes"
torch_out="$("$python" "$here/torch_cuda_time.py" --peer "$peer" --sizes "$sizes" --iters "$iters" --warmup "$warmup")"
echo "$torch_out"
torch_tf32="$("$python" "$here/torch_cuda_time.py" --peer "$peer" --sizes "$sizes" --iters "$iters" --warmup "$warmup" --tf32)"
echo "$torch_tf32"

echo
printf '%-6s %-11s %12s %12s %10s\n' size mode "dip s/step" "torch s/step" torch/dip
IFS=',' read -ra list <<< "$sizes"
for s in "${list[@]}"; do
  for mode in f32 f32+graph f32+4lanes tf32 tf32+graph bf16+graph; do
    case "$mode" in
      f32) d="$dip_out"; t="$torch_out" ;;
      f32+graph) d="$dip_graph"; t="$torch_out" ;;
      f32+4lanes) d="$(echo "$dip_lanes" | awk '$1 ~ /^[0-9]+$/ { print $1, $NF }')"; t="$torch_out" ;;
      tf32) d="$dip_tf32"; t="$torch_tf32" ;;
      tf32+graph) d="$dip_tf32_graph"; t="$torch_tf32" ;;
      bf16+graph) d="$dip_bf16_graph"; t="$torch_tf32" ;;
    esac
    ds="$(echo "$d" | awk -v s="$s" '$1 == s { print $2 }')"
    ts="$(echo "$t" | tr ' ' '\n' | awk -v s="size=$s" '$0 == s { f = 1 } f && /^median_s=/ { sub("median_s=", ""); print; exit }')"
    ratio="$(awk -v d="$ds" -v t="$ts" 'BEGIN { if (d > 0 && t > 0) printf "%.2f", t / d; else print "n/a" }')"
    printf '%-6s %-11s %12s %12s %10s\n' "$s" "$mode" "${ds:-n/a}" "${ts:-n/a}" "$ratio"
  done
done

echo
echo "== a whole fit: the demo (128x128, sigma 25, 400 steps) on the GPU and on the CPU"
work="$(mktemp -d)"
"$dip" --device cuda -q demo --out "$work/gpu" --iters 400
"$dip" --device cpu -q demo --out "$work/cpu" --iters 400
"$python" - "$work" <<'PY'
import json, sys
for dev in ("gpu", "cpu"):
    s = json.load(open(f"{sys.argv[1]}/{dev}/summary.json"))
    print(f"{dev}: PSNR {s.get('psnr_final')} dB (noisy {s.get('psnr_noisy')}), "
          f"{s.get('seconds')} s for {s.get('iterations_run')} steps")
PY

echo
echo "== a sweep on the GPU: 8 fits of the demo image (200 steps), one at a time, 4 at once on"
echo "   networks of their own, and 4 at once as lanes of one batch"
cp "$work/cpu/clean.png" "$work/demo.png"
cat > "$work/plan.toml" <<'TOML'
images = ["demo.png"]
seeds = 8
set = ["fit.iters=200"]
[[degradations]]
task = "denoise"
levels = [25]
TOML
for run in "1" "4 --no-batch" "4"; do
  name="$(echo "$run" | tr -d ' -')"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$dip" --device cuda -q sweep run "$work/plan.toml" -o "$work/sweep-$name" --jobs $run > /dev/null
  end=$(date +%s.%N)
  awk -v j="$run" -v a="$start" -v b="$end" 'BEGIN { printf "--jobs %s: %.1f s for 8 fits\n", j, b - a }'
done
"$python" - "$work" <<'PY'
import csv, sys
rows = {}
for name in ("1", "4nobatch", "4"):
    with open(f"{sys.argv[1]}/sweep-{name}/results.csv") as f:
        rows[name] = [r.get("psnr_final_mean") for r in csv.DictReader(f)]
print("mean PSNR over the 8 seeds, one at a time / own networks / lanes (equal up to the GEMMs' summation order):")
for a, b, c in zip(rows["1"], rows["4nobatch"], rows["4"]):
    print(f"  {a} / {b} / {c}")
PY
