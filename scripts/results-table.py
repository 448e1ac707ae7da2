"""Prints the rows of docs/RESULTS.md from the summaries written by results.sh.

Usage: python3 results-table.py OUT_DIR
"""

import glob
import json
import os
import sys


def rows(folder):
    for f in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(f) as fh:
            d = json.load(fh)
        yield os.path.splitext(os.path.basename(f))[0], d


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def main(out):
    for task in ["denoise", "sr", "inpaint"]:
        folder = os.path.join(out, task)
        if not os.path.isdir(folder):
            continue
        print(f"\n## {task}\n")
        print("| image | steps run | PSNR input | PSNR final | PSNR best (step) | SSIM final | baseline | s |")
        print("|---|---|---|---|---|---|---|---|")
        finals, bests = [], []
        for name, d in rows(folder):
            base = d.get("baseline")
            base = f"{base['name']} {base['psnr']:.2f}" if base else "–"
            steps = str(d["iterations_run"]) + (" (interrupted)" if d.get("interrupted") else "")
            print(
                f"| {name} | {steps} | {fmt(d.get('psnr_noisy'))} | {fmt(d.get('psnr_final'))} "
                f"| {fmt(d.get('psnr_best'))} ({d.get('iter_best')}) | {fmt(d.get('ssim_final'), 4)} "
                f"| {base} | {d['seconds']:.0f} |"
            )
            if d.get("psnr_final") is not None:
                finals.append(d["psnr_final"])
                bests.append(d["psnr_best"])
        if finals:
            print(
                f"| **mean of {len(finals)}** | | | **{sum(finals) / len(finals):.2f}** "
                f"| **{sum(bests) / len(bests):.2f}** | | | |"
            )


if __name__ == "__main__":
    main(sys.argv[1])
