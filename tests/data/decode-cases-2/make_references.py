"""Write references.npz: the ffmpeg command line's RGB of the files in this folder, for
tests/test_decode_trust.py (CI has no ffmpeg CLI, so the references are committed).

Run from the repository root with the ffmpeg CLI on the PATH (the committed file was made with the
Debian 12 ffmpeg 5.1.x, ``apt-get install -y ffmpeg``):

    python tests/data/decode-cases-2/make_references.py

For every file: the picture count and every picture's timestamp (``ffprobe -show_entries
frame=best_effort_timestamp_time``), and for the frames ``decode_video(path, frames=8)`` samples
(``linspace(0, count - 1, 8)``) the CLI's RGB, ``ffmpeg -i f -vf scale=iw*sar:ih -pix_fmt rgb24``
(the ``scale`` filter honours the colour tags; ``iw*sar`` stretches non-square pixels to the
display aspect, and is a no-op for square pixels), stored small: the means of 16x16 blocks and
a 32x32 crop from the centre of each picture.
"""
from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
FRAMES = 8
BLOCK = 16
CROP = 32


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,sample_aspect_ratio", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"][0]


def timestamps(path: Path) -> np.ndarray:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=best_effort_timestamp_time", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return np.asarray([float(f["best_effort_timestamp_time"]) for f in json.loads(out)["frames"]])


def cli_rgb(path: Path) -> np.ndarray:
    stream = probe(path)
    sar = stream.get("sample_aspect_ratio", "1:1")
    sar = Fraction(*map(int, sar.split(":"))) if sar not in ("0:1", "N/A") else Fraction(1)
    width, height = int(stream["width"] * sar), int(stream["height"])
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-vf", "scale=iw*sar:ih", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def block_means(rgb: np.ndarray) -> np.ndarray:
    height, width = rgb.shape[0] // BLOCK * BLOCK, rgb.shape[1] // BLOCK * BLOCK
    cut = rgb[:height, :width].astype(np.float64)
    return cut.reshape(height // BLOCK, BLOCK, width // BLOCK, BLOCK, 3).mean(axis=(1, 3)).astype(np.float16)


def main() -> None:
    arrays: dict = {}
    names, counts = [], []
    for path in sorted(p for p in HERE.iterdir() if p.suffix in (".mp4", ".webm", ".mov", ".mkv")):
        rgb = cli_rgb(path)
        times = timestamps(path)
        assert len(times) == len(rgb), (path.name, len(times), len(rgb))
        indices = np.linspace(0, len(rgb) - 1, FRAMES, dtype=int)
        top, left = (rgb.shape[1] - CROP) // 2, (rgb.shape[2] - CROP) // 2
        names.append(path.name)
        counts.append(len(rgb))
        arrays[f"{path.name}:indices"] = indices
        arrays[f"{path.name}:times"] = times
        arrays[f"{path.name}:display"] = np.asarray(rgb.shape[1:3])
        arrays[f"{path.name}:blocks"] = np.stack([block_means(rgb[i]) for i in indices])
        arrays[f"{path.name}:crops"] = np.stack([rgb[i, top: top + CROP, left: left + CROP] for i in indices])
        print(path.name, len(rgb), rgb.shape[1:3])
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    np.savez_compressed(HERE / "references.npz", names=np.asarray(names), counts=np.asarray(counts),
                        block=np.asarray(BLOCK), made_with=np.asarray(version), **arrays)


if __name__ == "__main__":
    main()
