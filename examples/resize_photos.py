"""Resize a folder of photos in parallel with procpool.Pool.imap, and compare with a serial run.

    python examples/resize_photos.py                # 32 generated 2400x1600 photos
    python examples/resize_photos.py --photos 100 --size 640 --processes 4 --keep out/

The photos are generated (smooth gradients with noise, saved as JPEG), so the demo needs no
downloads. Each is opened, resized to fit --size pixels, sharpened and saved again: real,
CPU-bound image work. Results are printed as they arrive, then the serial and parallel times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from photos import make_photo, resize_into  # examples/photos.py, beside this script

import procpool


def resize_photo(job: tuple[str, str, int]) -> tuple[str, tuple[int, int], int, float]:
    """The task: load, resize to fit ``size``, sharpen, save. Returns what a caller logs."""
    source, target_dir, size = job
    done = resize_into(source, target_dir, size)
    return done["photo"], tuple(done["size"]), done["kib"] * 1024, done["seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32, help="how many photos (default 32)")
    parser.add_argument("--width", type=int, default=2400)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--size", type=int, default=800, help="longest side after resizing")
    parser.add_argument("--processes", type=int, default=None, help="default: CPU count")
    parser.add_argument("--keep", type=Path, help="keep the resized photos in this folder")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="procpool-demo-"))
    try:
        sources, serial_out, parallel_out = workdir / "in", workdir / "serial", workdir / "out"
        for folder in (sources, serial_out, parallel_out):
            folder.mkdir()
        print(f"Generating {args.photos} photos of {args.width}x{args.height} in {sources} ...")
        with procpool.Pool(args.processes) as pool:
            pool.starmap(
                make_photo,
                [(sources / f"photo-{i:03d}.jpg", args.width, args.height, i)
                 for i in range(args.photos)],
            )
        photos = sorted(str(p) for p in sources.glob("*.jpg"))

        print("\nSerial, one photo after another:")
        started = time.perf_counter()
        for path in photos:
            resize_photo((path, str(serial_out), args.size))
        serial = time.perf_counter() - started
        print(f"  {len(photos)} photos in {serial:.2f} s")

        processes = args.processes or len(os.sched_getaffinity(0))
        print(f"\nParallel, procpool.Pool({processes}).imap, results as they arrive:")
        started = time.perf_counter()
        with procpool.Pool(processes) as pool:
            jobs = ((path, str(parallel_out), args.size) for path in photos)
            for done, (name, size, nbytes, seconds) in enumerate(pool.imap(resize_photo, jobs), 1):
                print(f"  [{done:3d}/{len(photos)}] {name} -> {size[0]}x{size[1]}, "
                      f"{nbytes / 1024:.0f} KiB, {seconds * 1000:.0f} ms")
        parallel = time.perf_counter() - started

        print(f"\nserial {serial:.2f} s, parallel {parallel:.2f} s with {processes} processes: "
              f"{serial / parallel:.2f}x faster")
        if args.keep:
            shutil.copytree(parallel_out, args.keep, dirs_exist_ok=True)
            print(f"resized photos kept in {args.keep}")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
