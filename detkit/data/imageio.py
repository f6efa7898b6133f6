"""Image files: a cheap check when a dataset is indexed, and decoding to ``(H, W, 3) uint8`` RGB.

What every decoded image becomes (the "Bad input" section of ``docs/reliability.md``):

- grayscale -> three equal channels; an alpha channel is composited over grey
  :data:`ALPHA_BACKGROUND` (the letterbox padding), so transparent parts look like padding;
- 16-bit -> 8-bit as ``round(v / 257)`` (65535 -> 255, 257 * k -> k); float -> ``0..1`` scaled;
- EXIF orientation (tag 274) is applied by default: pixels and sizes are those of the image as
  a viewer shows it, and labels are taken to refer to that image (Ultralytics, ``cv2.imread`` and
  most labelling tools agree). ``exif_orientation=False`` keeps the stored pixel grid;
- a longer side above ``max_size`` is shrunk on load; a JPEG is decoded by libjpeg at 1/2, 1/4
  or 1/8 scale when that still covers ``max_size``, so an 8000 x 6000 photo never exists at full
  size in memory; more than :data:`MAX_IMAGE_PIXELS` stored pixels is refused (decompression bombs).

Anything that cannot be decoded raises :class:`ImageReadError` whose message is the reason.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "ALPHA_BACKGROUND",
    "MAX_IMAGE_PIXELS",
    "ImageHeader",
    "ImageReadError",
    "LoadedImage",
    "apply_orientation",
    "check_image_file",
    "load_image",
    "read_header",
    "read_image",
    "reduction_for",
    "to_rgb8",
]

# Grey that transparent pixels are composited over (the letterbox / mosaic padding grey).
ALPHA_BACKGROUND = 114
# Images with more stored pixels than this are refused: 16384 x 8192. PIL refuses above
# about 179 M pixels on its own (its decompression bomb check); both give the same reason.
MAX_IMAGE_PIXELS = 1 << 27
# Bytes read from the start (format) and the end (truncation) of a file when indexing.
HEAD_BYTES = 32
TAIL_BYTES = 1024
# EXIF tag of the orientation (1..8; 1 = stored as shown).
EXIF_ORIENTATION = 0x0112

# Reasons (what ProblemLog counts).
MISSING = "missing image file"
ZERO_BYTE = "zero-byte image file"
TRUNCATED_JPEG = "truncated JPEG (no end-of-image marker)"
TRUNCATED_PNG = "truncated PNG (no IEND chunk)"
TRUNCATED_FILE = "truncated image file (shorter than its header says)"
UNKNOWN_FORMAT = "not an image file (unrecognised format)"
UNDECODABLE = "image cannot be decoded"
TOO_LARGE = f"image too large (more than {MAX_IMAGE_PIXELS} pixels)"

_JPEG_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


class ImageReadError(OSError):
    """An image file that is missing, empty, truncated, too large or not decodable.

    ``str(error)`` and ``error.reason`` are the reason (a fixed sentence, so problems count by
    it); ``error.detail`` says more about this file (sizes), or is empty.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, without decoding pixels.

    Attributes:
        width, height: the stored pixel grid.
        orientation: EXIF orientation 1..8 (1 when absent or invalid).
    """

    width: int
    height: int
    orientation: int = 1

    def size(self, exif_orientation: bool = True) -> tuple[int, int]:
        """``(h, w)`` as shown (orientations 5..8 swap the sides) or as stored."""
        if exif_orientation and self.orientation >= 5:
            return self.width, self.height
        return self.height, self.width


@dataclass
class LoadedImage:
    """A decoded image and how it relates to the file.

    Attributes:
        img: ``(h, w, 3) uint8`` RGB, oriented, possibly shrunk to ``max_size``.
        ori_size: ``(h, w)`` of the oriented image before shrinking: the size labels refer to.
        scale: ``(sx, sy)`` with ``img = original * scale`` (1.0 when not shrunk).
        orientation: the EXIF orientation applied (1: none).
    """

    img: np.ndarray
    ori_size: tuple[int, int]
    scale: tuple[float, float] = (1.0, 1.0)
    orientation: int = 1


def _sniff(head: bytes) -> str | None:
    """Format from the first bytes: jpeg, png, bmp, webp, tiff, gif or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"GIF8":
        return "gif"
    return None


def _truncation(fmt: str | None, head: bytes, tail: bytes, size: int) -> str | None:
    """The truncation reason for a file of ``size`` bytes, from its first and last bytes."""
    if fmt == "jpeg" and b"\xff\xd9" not in tail:
        return TRUNCATED_JPEG
    if fmt == "png" and b"IEND" not in tail:
        return TRUNCATED_PNG
    if fmt == "webp" and len(head) >= 8 and struct.unpack("<I", head[4:8])[0] + 8 > size:
        return TRUNCATED_FILE
    if fmt == "bmp" and len(head) >= 6 and struct.unpack("<I", head[2:6])[0] > size:
        return TRUNCATED_FILE
    return None


def check_image_file(path: str) -> str | None:
    """The reason ``path`` cannot be an image (missing, empty, not an image, truncated), or None.

    Reads the first :data:`HEAD_BYTES` and last :data:`TAIL_BYTES` bytes only: cheap enough for
    every file when a dataset is indexed. A file passing may still fail to decode (damaged
    inside); :func:`load_image` reports that when it is read.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
            f.seek(max(0, size - TAIL_BYTES))
            tail = f.read(TAIL_BYTES)
    except FileNotFoundError:
        return MISSING
    except OSError as e:
        return f"cannot open image: {e.strerror or e}"
    if size == 0:
        return ZERO_BYTE
    fmt = _sniff(head)
    if fmt is None and not cv2.haveImageReader(path):
        return UNKNOWN_FORMAT
    return _truncation(fmt, head, tail, size)


def _png_exif(buf: bytes) -> bytes | None:
    """The payload of a PNG's ``eXIf`` chunk (walking the chunk list; no pixel decoding)."""
    pos = 8
    while pos + 8 <= len(buf):
        length, kind = struct.unpack(">I4s", buf[pos:pos + 8])
        if kind == b"eXIf":
            return buf[pos + 8:pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def read_header(data: bytes) -> ImageHeader | None:
    """Stored size and EXIF orientation of encoded image bytes; None when PIL cannot parse them.

    Raises:
        ImageReadError: more than :data:`MAX_IMAGE_PIXELS` pixels.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if im.format == "PNG":  # PIL's getexif() on a PNG may decode the pixels
                    raw = _png_exif(data)
                    exif = Image.Exif()
                    if raw:
                        exif.load(raw)
                else:
                    exif = im.getexif()
                orientation = exif.get(EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError as e:
        raise ImageReadError(TOO_LARGE) from e
    except Exception:  # noqa: BLE001 - any parser failure means "header unknown"; cv2 decides
        return None
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageReadError(TOO_LARGE)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1
    return ImageHeader(int(w), int(h), orientation)


def reduction_for(long_side: int, max_size: int | None) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) keeping the longer side >= ``max_size``."""
    if not max_size:
        return 1
    for k in (8, 4, 2):
        if long_side // k >= max_size:
            return k
    return 1


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """An image as cv2 decodes it (BGR / BGRA / gray, 8 or 16 bit, float) -> ``(H, W, 3) uint8`` RGB.

    Raises:
        ImageReadError: a pixel type other than uint8, uint16 or float.
    """
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1.0 / 257.0)  # round(v / 257); never a tie (257 is odd)
    elif img.dtype in (np.float32, np.float64):
        img = cv2.convertScaleAbs(np.nan_to_num(np.clip(img, 0.0, 1.0)), alpha=255.0)
    elif img.dtype != np.uint8:
        raise ImageReadError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # gray + alpha
        rgb, alpha = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB), img[:, :, 1]
    elif channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        rgb, alpha = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), img[:, :, 3]
    else:
        raise ImageReadError(f"unsupported channel count {channels}")
    a = alpha.astype(np.uint16)[:, :, None]  # (H, W) -> (H, W, 1)
    out = (rgb.astype(np.uint16) * a + ALPHA_BACKGROUND * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored pixel grid into the image as shown, for EXIF orientation 1..8."""
    if orientation == 2:
        return cv2.flip(img, 1)  # mirrored left-right
    if orientation == 3:
        return cv2.rotate(img, cv2.ROTATE_180)
    if orientation == 4:
        return cv2.flip(img, 0)  # mirrored top-bottom
    if orientation == 5:
        return cv2.transpose(img)  # mirrored over the main diagonal
    if orientation == 6:
        return cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    if orientation == 7:
        return cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)  # mirrored over the other diagonal
    if orientation == 8:
        return cv2.rotate(img, cv2.ROTATE_90_COUNTERCLOCKWISE)
    return img


def _read_bytes(path: str) -> np.ndarray:
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError as e:
        raise ImageReadError(MISSING) from e
    except OSError as e:
        raise ImageReadError(f"cannot open image: {e.strerror or e}") from e
    if buf.size == 0:
        raise ImageReadError(ZERO_BYTE)
    return buf


def load_image(path: str, max_size: int | None = None, exif_orientation: bool = True) -> LoadedImage:
    """Decode ``path`` to RGB uint8, oriented and shrunk to ``max_size`` (see the module doc).

    Args:
        path: the image file.
        max_size: longest side of the result; None keeps the full size.
        exif_orientation: apply the EXIF orientation (False: the stored pixel grid).

    Raises:
        ImageReadError: missing, zero-byte, truncated, too large or undecodable; the message is
            the reason.
    """
    buf = _read_bytes(path)
    head, tail = buf[:HEAD_BYTES].tobytes(), buf[-TAIL_BYTES:].tobytes()
    fmt = _sniff(head)
    reason = _truncation(fmt, head, tail, buf.size)
    if reason:
        raise ImageReadError(reason)
    header = read_header(buf.tobytes())
    k = reduction_for(max(header.width, header.height), max_size) if header and fmt == "jpeg" else 1
    flags = (_JPEG_REDUCED[k] | cv2.IMREAD_IGNORE_ORIENTATION) if k > 1 else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as e:
        raise ImageReadError(UNDECODABLE) from e
    if img is None or img.size == 0:
        raise ImageReadError(UNDECODABLE)
    orientation = header.orientation if (header and exif_orientation) else 1
    if header is not None:
        ori_size = header.size(exif_orientation)
    else:
        ori_size = img.shape[:2] if orientation < 5 else img.shape[1::-1]
    img = to_rgb8(img)
    h, w = img.shape[:2]
    if max_size and max(h, w) > max_size:
        r = max_size / max(h, w)
        img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=cv2.INTER_AREA)
    img = apply_orientation(img, orientation)
    (oh, ow), (h, w) = ori_size, img.shape[:2]
    return LoadedImage(img, (int(oh), int(ow)), (w / ow, h / oh), orientation)


def read_image(path: str, max_size: int | None = None, exif_orientation: bool = True) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB of ``path`` (see :func:`load_image`)."""
    return load_image(path, max_size, exif_orientation).img
