"""Photo resizing, the task of the README's demo (``make demo``).

    python -m examples.photos build/demo/photos --count 32     # generate photos to resize
    procpool run examples.photos:resize 'build/demo/photos/*.jpg' -o build/demo/resized.jsonl

The photos are generated (gradients with grain, saved as JPEG) so the demo needs no downloads.
``resize`` is real CPU-bound image work: open, fit in 800 pixels, sharpen, save into a
``resized`` folder next to the photos' folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter

import procpool

LONGEST_SIDE = 800


def make_photo(path: Path, width: int, height: int, seed: int) -> None:
    """Write a photo-like JPEG: two crossing gradients plus grain, different for each seed."""
    red = Image.linear_gradient("L").resize((width, height)).rotate(seed * 37 % 360)
    green = Image.radial_gradient("L").resize((width, height))
    grain = Image.effect_noise((width, height), 40 + seed % 30)
    Image.merge("RGB", (red, green, grain)).save(path, quality=90)


def resize_into(source: str, target_dir: str, size: int = LONGEST_SIDE) -> dict[str, Any]:
    """Load, fit in ``size`` pixels, sharpen, save into ``target_dir``; say what was done."""
    started = time.perf_counter()
    with Image.open(source) as photo:
        photo.thumbnail((size, size), Image.Resampling.LANCZOS)
        photo = photo.filter(ImageFilter.UnsharpMask(radius=2, percent=120))
        target = Path(target_dir) / Path(source).name
        photo.save(target, quality=85)
    return {"photo": Path(source).name, "size": list(photo.size),
            "kib": round(target.stat().st_size / 1024), "seconds": time.perf_counter() - started}


def resize(path: str) -> dict[str, Any]:
    """The batch runner's task: one photo path in, resized into ../resized/."""
    target_dir = Path(path).parent.parent / "resized"
    target_dir.mkdir(exist_ok=True)
    return resize_into(path, str(target_dir))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate photo-like JPEGs to resize.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--width", type=int, default=2400)
    parser.add_argument("--height", type=int, default=1600)
    args = parser.parse_args(argv)
    args.folder.mkdir(parents=True, exist_ok=True)
    missing = [(args.folder / f"photo-{i:03d}.jpg", args.width, args.height, i)
               for i in range(args.count) if not (args.folder / f"photo-{i:03d}.jpg").exists()]
    with procpool.Pool() as pool:
        pool.starmap(make_photo, missing, progress=bool(missing) and sys.stderr.isatty())
    print(f"{args.count} photos of {args.width}x{args.height} in {args.folder} "
          f"({len(missing)} generated now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
