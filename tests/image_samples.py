"""Small generated image folders for the image tests, including every kind of broken file."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200)}


def coloured(colour, size=(40, 30), seed=0) -> Image.Image:
    """A noisy image dominated by ``colour``: easy to learn, never two identical files."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.array(colour, np.int16)[None, None, :]
    noise = rng.integers(-40, 40, (h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


FORMATS = [("jpg", "JPEG"), ("png", "PNG"), ("bmp", "BMP"), ("webp", "WEBP"), ("tif", "TIFF")]


def write_class_folder(folder: Path, n_per_class: int = 12, seed: int = 0, classes=COLOURS) -> Path:
    """FOLDER/red/*.{jpg,png,...}, FOLDER/blue/*...: mixed formats and sizes."""
    k = seed * 1000
    for name, colour in classes.items():
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            ext, fmt = FORMATS[i % len(FORMATS)]
            size = (30 + (i * 7) % 25, 24 + (i * 5) % 20)
            coloured(colour, size, seed=k).save(d / f"{name}{i}.{ext}", fmt)
            k += 1
    return folder


def bomb_png() -> bytes:
    """A PNG header claiming 100,000 x 100,000 pixels: a decompression bomb, caught before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def exif_rotated_jpeg(colour=(200, 30, 30)) -> bytes:
    """A 48x24 (landscape) JPEG whose EXIF orientation 6 says: show it rotated, as 24x48."""
    img = coloured(colour, (48, 24))
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(img, exif=exif.tobytes())


def write_odd_images(folder: Path, colour=(200, 30, 30)) -> dict[str, Path]:
    """Readable images in unusual modes and formats: each must become an RGB image."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    cmyk = coloured(colour, (32, 32), seed=101).convert("CMYK")
    out["cmyk"] = folder / "cmyk.jpg"
    cmyk.save(out["cmyk"], "JPEG")
    out["palette"] = folder / "palette.png"
    coloured(colour, (32, 32), seed=102).convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    rgba = coloured(colour, (32, 32), seed=103).convert("RGBA")
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:, :16] = 0  # left half transparent: must come out white
    rgba.putalpha(Image.fromarray(alpha))
    out["rgba"] = folder / "rgba.png"
    rgba.save(out["rgba"])
    out["grey"] = folder / "grey.png"
    coloured(colour, (32, 32), seed=104).convert("L").save(out["grey"])
    out["grey16"] = folder / "grey16.png"
    Image.fromarray((np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)).save(out["grey16"])
    out["exif"] = folder / "exif.jpg"
    out["exif"].write_bytes(exif_rotated_jpeg(colour))
    frames = [coloured(colour, (32, 32), seed=105), coloured((30, 200, 30), (32, 32), seed=106)]
    out["gif"] = folder / "anim.gif"
    frames[0].save(out["gif"], save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out


def write_broken_files(folder: Path) -> dict[str, Path]:
    """Files that must be skipped and listed, never crash a run."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    whole = jpeg_bytes(coloured((200, 30, 30), (64, 64), seed=201))
    out["truncated"] = folder / "truncated.jpg"
    out["truncated"].write_bytes(whole[: len(whole) // 2])
    out["empty"] = folder / "empty.png"
    out["empty"].write_bytes(b"")
    out["text"] = folder / "notes-really.jpg"
    out["text"].write_text("this is not a picture\n")
    out["bomb"] = folder / "bomb.png"
    out["bomb"].write_bytes(bomb_png())
    return out


def write_grey_glyphs(folder: Path, n_per_class: int = 10, side: int = 16, seed: int = 0) -> Path:
    """FOLDER/left/*.png, FOLDER/right/*.png: small greyscale (mode L) images, bright on the left or the
    right half. A left-right flip turns one class into the other, as it can a digit or a letter."""
    rng = np.random.default_rng(seed)
    for name in ("left", "right"):
        d = folder / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            px = rng.integers(0, 60, (side, side)).astype(np.uint8)
            half = slice(0, side // 2) if name == "left" else slice(side // 2, side)
            px[:, half] += 180
            Image.fromarray(px, "L").save(d / f"{name}{i}.png")
    return folder
