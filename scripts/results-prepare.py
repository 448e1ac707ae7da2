"""Prepares the inputs of docs/RESULTS.md: centre crops of the standard test images.

Usage: python3 results-prepare.py DATA_DIR OUT_DIR  (needs Pillow)
"""

import glob
import os
import sys

from PIL import Image


def center_crop(img, w, h):
    left = (img.width - w) // 2
    top = (img.height - h) // 2
    return img.crop((left, top, left + w, top + h))


def main(data, out):
    os.makedirs(out, exist_ok=True)
    jobs = {
        "cset9": (sorted(glob.glob(os.path.join(data, "cset9", "*.png"))), 64, "RGB"),
        "set5": (sorted(glob.glob(os.path.join(data, "sr", "set5", "*.bmp"))), 64, "RGB"),
        "set14": (sorted(glob.glob(os.path.join(data, "sr", "set14", "*.bmp"))), 64, "RGB"),
        "gray": (sorted(glob.glob(os.path.join(data, "bm3d_gray", "*.png"))), 64, "L"),
    }
    for name, (files, side, mode) in jobs.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for f in files:
            img = Image.open(f).convert(mode)
            stem = os.path.splitext(os.path.basename(f))[0]
            center_crop(img, side, side).save(os.path.join(out, name, stem + ".png"))
    # F16 at 128x128 (the whole image, downscaled), as the built-in demo.
    f16 = Image.open(os.path.join(data, "denoise", "F16_GT.png")).convert("RGB")
    f16.resize((128, 128), Image.LANCZOS).save(os.path.join(out, "f16_128.png"))
    # kate's text inpainting at 128x128 (as docs/RESULTS.md reports it): the centre crop of
    # image and mask.
    for stem in ["kate", "kate_mask"]:
        img = Image.open(os.path.join(data, "inpaint", stem + ".png"))
        center_crop(img, 128, 128).save(os.path.join(out, stem + "_128.png"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
