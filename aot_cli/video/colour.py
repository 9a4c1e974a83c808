"""YUV -> RGB the way the ffmpeg command line does it, on every PyAV version the project accepts.

The ffmpeg CLI (``ffmpeg -i f -pix_fmt rgb24``) converts each decoded picture with its ``scale``
filter, which reads the picture's own colour tags (FFmpeg 5.1 ``libavfilter/vf_scale.c``,
``in_color_matrix=auto``; swscale's defaults for what is not tagged):

- matrix: the picture's ``colorspace`` when it names one of swscale's coefficient sets (BT.709,
  FCC, BT.470BG / SMPTE 170M, SMPTE 240M, BT.2020), else BT.601: an untagged picture gets BT.601
  whatever its size (the CLI does not guess BT.709 for HD);
- range: the picture's ``color_range`` when tagged (``tv`` limited, ``pc`` full), else full for
  the ``yuvj*`` and grey pixel formats and limited for every other YUV format (swscale's
  ``handle_jpeg``);
- primaries and transfer: recorded, never converted (neither the CLI's ``scale`` filter nor
  swscale maps gamuts or tone-maps).

PyAV 15 (what lmms-eval's ``av<16`` pin installs) ignores the tags unless told (BT.601, limited
range for everything); PyAV >= 17 converts through ``sws_scale_frame``, which reads them. Passing
the matrix and range explicitly (:meth:`ColourRule.reformat_args`) gives the CLI's RGB on both
(measured equal to the CLI's on 8-bit H.264/VP9/AV1/MPEG-2 with every matrix tag, 10/12-bit
HEVC/H.264/VP9/AV1/FFV1, yuvj MJPEG/H.264, 4:2:2 and 4:4:4, grey; PyAV 18's swscale dithers
10-bit sources differently, within 0.1 of 255 on average).

One decoder difference is corrected here: ProRes carries its colour tags in every frame header,
and FFmpeg 5.1 and 8 take them from there (unspecified included) while FFmpeg 7.1 (PyAV 15)
keeps the container's when the header says unspecified; :func:`bitstream_tags` reads the header
so every version converts as the CLI does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: AVColorSpace values -> the names ffprobe prints.
MATRIX_NAMES = {0: "gbr", 1: "bt709", 2: "unknown", 3: "reserved", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
                7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 12: "chroma-derived-nc",
                13: "chroma-derived-c", 14: "ictcp", 15: "ipt-c2", 16: "ycgco-re", 17: "ycgco-ro"}
#: AVColorRange values -> names.
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}
#: AVColorPrimaries values -> names.
PRIMARIES_NAMES = {1: "bt709", 2: "unknown", 3: "reserved", 4: "bt470m", 5: "bt470bg", 6: "smpte170m",
                   7: "smpte240m", 8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432",
                   22: "ebu3213"}
#: AVColorTransferCharacteristic values -> names.
TRANSFER_NAMES = {1: "bt709", 2: "unknown", 3: "reserved", 4: "bt470m", 5: "bt470bg", 6: "smpte170m",
                  7: "smpte240m", 8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
                  13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428",
                  18: "arib-std-b67"}
#: AVColorSpace -> swscale coefficient set (``SWS_CS_*``, the index ``sws_getCoefficients`` takes)
#: as ``vf_scale``'s ``parse_yuv_type`` chooses it; anything else is BT.601.
COEFFICIENTS = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
BT601 = 5
#: Coefficient set -> the name recorded as the matrix used.
COEFFICIENT_NAMES = {1: "bt709", 4: "fcc", 5: "bt601", 7: "smpte240m", 9: "bt2020nc"}
#: Pixel formats swscale reads as full range when the picture carries no range tag.
FULL_BY_DEFAULT = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p", "ya8", "ya16le", "ya16be"})
#: AVColorRange values.
LIMITED, FULL = 1, 2


def name_of(table: Dict[int, str], value) -> str:
    """``table``'s name for ``value`` (an int or int-like enum); "unknown" when None or not listed."""
    if value is None:
        return "unknown"
    return table.get(int(value), str(int(value)))


def converts_yuv(format_name: str, is_rgb: bool, has_palette: bool) -> bool:
    """Whether pictures of this pixel format go through a YUV (or grey) -> RGB conversion that
    the colour tags change (RGB, palettised, Bayer and XYZ pictures do not)."""
    return not (is_rgb or has_palette or format_name.startswith(("bayer", "xyz")))


@dataclass(frozen=True)
class Conversion:
    """How one kind of picture is converted: swscale coefficient set ``coefficients`` and
    ``full`` (full-range input) or limited. ``matrix``/``range``: the names recorded."""

    coefficients: int
    full: bool

    @property
    def matrix(self) -> str:
        return COEFFICIENT_NAMES[self.coefficients]

    @property
    def range(self) -> str:
        return "pc" if self.full else "tv"

    def reformat_args(self) -> dict:
        """Keyword arguments for ``VideoReformatter.reformat`` (PyAV 15 to 18) that make swscale
        convert with this matrix and range. The destination colourspace only has to differ from
        the source's (PyAV 15 sets no colour details otherwise); for RGB output swscale ignores it."""
        return {"src_colorspace": self.coefficients, "dst_colorspace": BT601 if self.coefficients != BT601 else 1,
                "src_color_range": FULL if self.full else LIMITED, "dst_color_range": FULL}


def conversion_for(format_name: str, is_rgb: bool, has_palette: bool, colorspace, color_range) -> Optional[Conversion]:
    """The ffmpeg CLI's conversion for a picture of pixel format ``format_name`` tagged
    ``colorspace`` (AVColorSpace) and ``color_range`` (AVColorRange); None for pictures that are
    not YUV/grey (see the module docstring)."""
    if not converts_yuv(format_name, is_rgb, has_palette):
        return None
    coefficients = COEFFICIENTS.get(int(colorspace or 0), BT601)
    tagged = int(color_range or 0)
    if tagged in (LIMITED, FULL):
        full = tagged == FULL
    else:
        full = format_name in FULL_BY_DEFAULT or format_name.startswith("gray")
    return Conversion(coefficients, full)


def bitstream_tags(codec: str, head: bytes) -> Optional[Tuple[int, int, int]]:
    """(primaries, transfer, matrix) a ProRes frame header carries (``head``: the first bytes of
    a packet: 4-byte frame size, ``icpf``, then the header, whose bytes 14-16 are the tags;
    FFmpeg ``libavcodec/proresdec.c``); None for other codecs or a header too short to hold them."""
    if codec != "prores" or len(head) < 25 or head[4:8] != b"icpf":
        return None
    return head[22], head[23], head[24]


@dataclass(frozen=True)
class ColourTags:
    """A stream's colour tags as the decoder reports them (AVColor* values)."""

    matrix: int = 2
    range: int = 0
    primaries: int = 2
    transfer: int = 2


class ColourRule:
    """The conversion of each decoded picture (:func:`conversion_for` on its own tags, the
    ProRes header's matrix where :func:`bitstream_tags` found one), cached per kind of picture."""

    def __init__(self, bitstream: Optional[Tuple[int, int, int]] = None) -> None:
        self.bitstream = bitstream
        self._args: Dict[tuple, dict] = {}

    def conversion(self, picture) -> Optional[Conversion]:
        """The :class:`Conversion` for an ``av.VideoFrame`` (None: not a YUV/grey picture)."""
        fmt = picture.format
        matrix = self.bitstream[2] if self.bitstream is not None else picture.colorspace
        return conversion_for(fmt.name, fmt.is_rgb, fmt.has_palette, matrix, picture.color_range)

    def reformat_args(self, picture) -> dict:
        """``reformat`` keyword arguments for ``picture`` ({} for RGB/palettised pictures)."""
        fmt = picture.format
        key = (fmt.name, int(picture.colorspace or 0), int(picture.color_range or 0))
        args = self._args.get(key)
        if args is None:
            conversion = self.conversion(picture)
            args = conversion.reformat_args() if conversion is not None else {}
            self._args[key] = args
        return args

    def tags(self, picture, codec_context=None) -> ColourTags:
        """The colour tags of ``picture`` (primaries and transfer from ``codec_context`` on PyAV
        versions whose frames do not carry them), the ProRes header's where it has them."""
        primaries = getattr(picture, "color_primaries", None)
        transfer = getattr(picture, "color_trc", None)
        if primaries is None and codec_context is not None:
            primaries = getattr(codec_context, "color_primaries", None)
        if transfer is None and codec_context is not None:
            transfer = getattr(codec_context, "color_trc", None)
        matrix = picture.colorspace
        if self.bitstream is not None:
            primaries, transfer, matrix = self.bitstream
        return ColourTags(int(matrix or 2), int(picture.color_range or 0), int(primaries or 2), int(transfer or 2))

    def facts(self, picture, codec_context=None) -> dict:
        """What ``meta["video"]["colour"]`` records for a stream whose first picture is
        ``picture``: the tags (``matrix``, ``range``, ``primaries``, ``transfer``, ffprobe's
        names) and the conversion used (``used_matrix``/``used_range``; None for pictures that
        are not YUV)."""
        tags = self.tags(picture, codec_context)
        conversion = self.conversion(picture)
        return {"matrix": name_of(MATRIX_NAMES, tags.matrix), "range": name_of(RANGE_NAMES, tags.range),
                "primaries": name_of(PRIMARIES_NAMES, tags.primaries),
                "transfer": name_of(TRANSFER_NAMES, tags.transfer),
                "used_matrix": conversion.matrix if conversion is not None else None,
                "used_range": conversion.range if conversion is not None else None}
