"""Ingest of ESO raw mosaic files: classify, split per chip, check, store.

::

    report = ingest(["raw/"], progress=None)
    print(report)            # one line per file: ingested, skipped (and why), failed (and why)

Each raw multi-extension file (plain, ``.gz`` or ``.Z``) becomes one raw frame
per chip, :class:`~awe.model.frames.RawBiasFrame` ...
:class:`~awe.model.frames.RawScienceFrame`, classified by ``HIERARCH ESO DPR
TYPE``. Each extension's chip is recognised by the detector id keyword the
instrument description declares (WFI: ``HIERARCH ESO DET CHIP ID`` or ``CHIP1
ID``), else by its ``EXTNAME``, else by the primary header's list of detector
ids, else by its position (:func:`identify_chips`, decided for the whole file
before anything is stored; the log and the report say which). Chip ``N`` of the
instrument (ccd50 is 1), whatever extension held it, is stored as
``<INSTRUME>.<DATE-OBS>_<N>.fits``, a self-describing single-HDU FITS file
whose header is the primary header merged with the extension header, with
``EXTNAME`` = the chip name. All chips of one raw file are committed
together (all or none). A file that cannot be read, lacks a required keyword or
comes from an unknown instrument is reported and skipped; the others go in.
Ingesting a file again adds nothing.

``imstat`` of a raw frame is computed over the whole raw extension, prescan,
overscan and unlit rows included, as the Astro-WISE listings show it (spec
section 5): a raw bias of ccd50 has median 180-183 ADU and stdev ~28 ADU, ten
times the read noise, which only the prescan strip (offset from the bias
level) and the row structure explain; the flats' medians (17-20 kADU) are the
illuminated level, the unlit ~5 % of the pixels hardly move a median. The
listings' flat stdev (~10 % of the median) is not what whole-extension
statistics give: the unlit strips alone make ~22 % at full size (~40 % at 1/16
size). The sanity checks (:class:`IngestParams`) therefore use the
illuminated area only.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import io
import logging
import math
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np
import sqlalchemy as sa
from astropy.io import fits

from awe.db.schema import ImStat
from awe.model.frames import (QualityFlags, RawBiasFrame, RawDomeFlatFrame, RawFrame, RawScienceFrame,
                              RawStandardFrame, RawTwilightFlatFrame)
from awe.pars import Param, ParamGroup

__all__ = ["ingest", "IngestReport", "FileResult", "IngestParams", "IngestError", "classify", "read_raw",
           "split_raw", "identify_chips", "ChipMapping", "RawChip", "raw_imstat", "chip_stats", "check_quality",
           "RAW_SUFFIXES", "BY_DETECTOR_ID", "BY_EXTNAME", "BY_PRIMARY_LIST", "BY_POSITION"]

log = logging.getLogger(__name__)

#: File name endings taken from a folder given to :func:`ingest`.
RAW_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.Z", ".fit.Z", ".fits.bz2")
_COMPRESSION_SUFFIXES = (".gz", ".Z", ".bz2")
#: how :func:`identify_chips` decided, strongest first
BY_DETECTOR_ID, BY_EXTNAME, BY_PRIMARY_LIST, BY_POSITION = ("detector id", "EXTNAME", "primary detector list",
                                                          "position")
_LZW_MAGIC = b"\x1f\x9d"

#: ESO ``DPR TYPE`` (and fallback) values -> raw frame class
_DPR_CLASSES: dict[str, type[RawFrame]] = {
    "BIAS": RawBiasFrame, "ZERO": RawBiasFrame,
    "FLAT,DOME": RawDomeFlatFrame, "DOMEFLAT": RawDomeFlatFrame, "FLAT,LAMP": RawDomeFlatFrame,
    "FLAT,SKY": RawTwilightFlatFrame, "FLAT,TWILIGHT": RawTwilightFlatFrame, "SKYFLAT": RawTwilightFlatFrame,
    "TWILIGHTFLAT": RawTwilightFlatFrame,
    "STD": RawStandardFrame, "STANDARD": RawStandardFrame, "STD,ZEROPOINT": RawStandardFrame,
    "OBJECT": RawScienceFrame, "SCIENCE": RawScienceFrame, "SKY": RawScienceFrame,
}
#: OBJECT names of calibration exposures when DPR TYPE and IMAGETYP are missing
_OBJECT_PATTERNS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"^(BIAS|ZERO)\b", re.I), "BIAS"),
    (re.compile(r"^DOME\s*-?\s*FLAT|^FLAT\s*,?\s*DOME|^DOMEFLAT", re.I), "FLAT,DOME"),
    (re.compile(r"^(SKY|TWILIGHT|TWI)\s*-?\s*FLAT|^FLAT\s*,?\s*(SKY|TWILIGHT)", re.I), "FLAT,SKY"),
    (re.compile(r"^(SA\s*\d+|PG\s*\d+|RU\s*\d+|MARK\s*A|LANDOLT|STD\b|STANDARD)", re.I), "STD"),
)
#: primary/extension keywords that describe the HDU structure, not the observation
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "NEXTEND", "XTENSION",
               "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "CHECKSUM", "DATASUM", "END", "ZIMAGE",
               "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZCMPTYPE", "ZTILE1", "ZTILE2", "ZQUANTIZ"}


class IngestError(ValueError):
    """A raw file cannot be ingested; the message names the file and what is wrong."""


class IngestParams(ParamGroup):
    """Sanity thresholds of ingest: frames outside them get ``quality_flags`` and ``select()`` skips them."""

    BIAS_MIN_LEVEL = Param(50.0, "lowest plausible median of a raw bias (illuminated area)", "ADU")
    BIAS_MAX_LEVEL = Param(1000.0, "highest plausible median of a raw bias (light leak, wrong type)", "ADU")
    FLAT_MIN_LEVEL = Param(3000.0, "lowest acceptable median of a raw flat (too little signal)", "ADU")
    FLAT_MAX_LEVEL = Param(35000.0, "highest acceptable median of a raw flat (non-linear regime)", "ADU")
    SATURATION_LEVEL = Param(0.0, "a flat whose median is above this is saturated; 0 takes the instrument's "
                                  "(WFI: 45000)", "ADU")
    EMPTY_STDEV = Param(0.5, "a frame whose pixel stdev is at most this is empty or constant", "ADU")


# ====================================================================== report
@dataclass
class FileResult:
    """What happened to one raw file.

    Attributes
    ----------
    path : Path
        The file as given.
    status : str
        ``'ingested'``, ``'skipped'`` or ``'failed'``.
    message : str
        Why (for skipped and failed files) or what was made.
    frames : list
        The raw frames committed from the file (empty unless ingested).
    warnings : list of str
        Suspicious but usable header values of an ingested file (its frames carry a quality flag).
    """

    path: Path
    status: str
    message: str
    frames: list[RawFrame] = field(default_factory=list)
    #: suspicious but usable values (the frames carry a quality flag), one ``WARNING`` line each
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        label = {"ingested": "ingested", "skipped": "skipped ", "failed": "FAILED  "}[self.status]
        return "\n".join([f"{label} {self.path}: {self.message}"] + [f"WARNING  {self.path}: {w}"
                                                                     for w in self.warnings])


@dataclass
class IngestReport:
    """The outcome of :func:`ingest`: every file ingested, skipped or failed, with the reason."""

    results: list[FileResult] = field(default_factory=list)

    def _with(self, status: str) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ingested(self) -> list[FileResult]:
        return self._with("ingested")

    @property
    def skipped(self) -> list[FileResult]:
        return self._with("skipped")

    @property
    def failed(self) -> list[FileResult]:
        return self._with("failed")

    @property
    def frames(self) -> list[RawFrame]:
        """Every raw frame committed by this ingest."""
        return [f for r in self.results for f in r.frames]

    def summary(self) -> str:
        """One line: how many files were ingested (frames made), skipped and failed."""
        return (f"{len(self.ingested)} file(s) ingested ({len(self.frames)} frames), "
                f"{len(self.skipped)} skipped, {len(self.failed)} failed")

    def __str__(self) -> str:
        return "\n".join([str(r) for r in self.results] + [self.summary()])


# ====================================================================== reading
def _uncompressed_name(path: Path) -> str:
    name = path.name
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_lzw(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _LZW_MAGIC


def _lzw_bytes(path: Path) -> bytes:
    """The content of a Unix ``compress`` (``.Z``) file."""
    try:
        import uncompresspy
    except ImportError:  # pragma: no cover - installed with awe
        raise IngestError(f"{path}: reading .Z files needs the package uncompresspy (pip install uncompresspy)") \
            from None
    with uncompresspy.LZWFile(path) as fh:
        return fh.read()


def read_raw(path: str | Path) -> fits.HDUList:
    """Read a raw FITS file (plain, gzip, bzip2 or Unix-compress ``.Z``) fully into memory.

    The pixels are the values as stored (``BZERO``/``BSCALE`` not applied): the
    per-chip files keep the raw bytes, :func:`split_raw` gives the physical values.

    Raises
    ------
    IngestError
        If the file is missing, not FITS, corrupt or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    caught: list[warnings.WarningMessage] = []
    hdul = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            source: Any = io.BytesIO(_lzw_bytes(path)) if _is_lzw(path) else path
            hdul = fits.open(source, memmap=False, lazy_load_hdus=False, do_not_scale_image_data=True)
            for hdu in hdul:
                _ = hdu.data  # read every data unit now: a truncated one fails here
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, EOFError, zlib errors...
        if hdul is not None:
            hdul.close()
        if isinstance(exc, IngestError):
            raise
        raise IngestError(f"{path}: cannot read it as FITS ({type(exc).__name__}: {exc}); "
                          "the file is corrupt or truncated: fetch it again") from None
    problems = sorted({str(w.message).splitlines()[0] for w in caught})
    truncated = [p for p in problems if re.search(r"truncat|header size|unexpected bytes|missing", p, re.I)]
    if truncated:
        hdul.close()
        raise IngestError(f"{path}: the file is truncated or damaged ({'; '.join(truncated)}): fetch it again")
    for problem in problems:
        log.debug("%s: %s", path.name, problem)
    return hdul


# ====================================================================== classification
def _get(header: fits.Header, key: str) -> Any:
    """A header value; None when missing or blank.

    Raises
    ------
    IngestError
        If the keyword's card cannot be parsed (``EXPTIME = NaN``).
    """
    try:
        value = header.get(key)
    except fits.verify.VerifyError:
        raise IngestError(f"the header card {_card_text(header, key)!r} cannot be parsed: fix or remove the "
                          f"{key} card") from None
    except (KeyError, ValueError):
        value = None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None if value is None or isinstance(value, fits.card.Undefined) else value


def _card_text(header: fits.Header, key: str) -> str:
    """The raw 80 characters of a card, for messages about a card astropy cannot parse."""
    try:
        card = header.cards[key]
        return str(getattr(card, "_image", None) or card.image).rstrip()
    except Exception:  # the card is broken: say at least which keyword
        return f"{key} = ?"


def classify(header: fits.Header) -> tuple[type[RawFrame], str]:
    """The raw frame class of an exposure and the frame type it was recognised by.

    ``HIERARCH ESO DPR TYPE`` decides (``BIAS``, ``FLAT,DOME``, ``FLAT,SKY``,
    ``STD``, ``OBJECT``); without it ``IMAGETYP``, then the ``OBJECT`` name
    (``BIAS``, ``DOME FLAT``, ``SKYFLAT``, Landolt fields ``SA 98`` ...), then
    ``EXPTIME == 0`` (a bias); an exposure with a target name and a positive
    exposure time is a science frame.

    Raises
    ------
    IngestError
        If the type is unknown or nothing tells it.
    """
    dpr = _get(header, "HIERARCH ESO DPR TYPE")
    if dpr is not None:
        key = re.sub(r"\s+", "", str(dpr).upper())
        if key not in _DPR_CLASSES:
            raise IngestError(f"HIERARCH ESO DPR TYPE = {dpr!r} is not a frame type awe ingests "
                              "(BIAS, FLAT,DOME, FLAT,SKY, STD, OBJECT)")
        return _DPR_CLASSES[key], key
    imagetyp = _get(header, "IMAGETYP")
    if imagetyp is not None:
        key = re.sub(r"\s+", "", str(imagetyp).upper())
        if key in _DPR_CLASSES:
            return _DPR_CLASSES[key], key
        if key == "FLAT":
            return RawDomeFlatFrame, "FLAT,DOME"
    obj = _get(header, "OBJECT")
    if obj is not None:
        for pattern, kind in _OBJECT_PATTERNS:
            if pattern.search(str(obj)):
                return _DPR_CLASSES[kind], kind
    exptime = _get(header, "EXPTIME")
    if exptime is not None and float(exptime) == 0.0:
        return RawBiasFrame, "BIAS"
    if obj is not None and exptime is not None and float(exptime) > 0:
        return RawScienceFrame, "OBJECT"
    raise IngestError("cannot tell the frame type: HIERARCH ESO DPR TYPE is missing and neither IMAGETYP, "
                      "OBJECT nor EXPTIME tell it; add HIERARCH ESO DPR TYPE to the primary header")


# ====================================================================== splitting
@dataclass
class RawChip:
    """One chip of a raw file.

    Attributes
    ----------
    index : int
        The chip's index in the instrument (its file suffix ``_N``), whatever
        extension of the raw file held it.
    extension : int
        The HDU number of the chip in the raw file.
    spec : ChipSpec
        The chip's description.
    geometry : RawGeometry
        Its sections.
    header : astropy.io.fits.Header
        Primary and extension header merged, without structure and scaling keywords.
    data : ndarray
        Physical pixel values (native byte order; ``uint16`` for ESO's 16-bit raw data).
    stored : ndarray
        The values as stored in the file, scaled by ``scaling`` = (BSCALE, BZERO).
    identified_by : str
        How the chip was recognised (:class:`ChipMapping` ``method``).
    """

    index: int
    extension: int
    spec: Any
    geometry: Any
    header: fits.Header
    data: np.ndarray
    stored: np.ndarray
    scaling: tuple[float, float]
    identified_by: str = BY_DETECTOR_ID

    def write(self, path: Path | BinaryIO) -> None:
        """Write the chip as a single-HDU FITS file (a path or a binary file object), with the stored bytes
        unchanged."""
        hdu = fits.PrimaryHDU(self.stored, header=self.header)
        if self.scaling != (1, 0):
            hdu.header["BSCALE"], hdu.header["BZERO"] = self.scaling
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)  # over-long comments of raw cards: truncated
            hdu.writeto(path)

    def to_bytes(self) -> memoryview:
        """The single-HDU FITS file of :meth:`write`, in memory (one copy of the pixels, into a buffer of the
        file's size: a ``BytesIO`` grows and copies, and its value is one more copy)."""
        blocks = -(-self.stored.nbytes // _FITS_BLOCK) + -(-(len(self.header) + 16) // 36) + 1
        buffer = _Buffer(blocks * _FITS_BLOCK)
        self.write(buffer)  # type: ignore[arg-type]
        return buffer.value()


#: bytes of a FITS block
_FITS_BLOCK = 2880


class _Buffer(io.RawIOBase):
    """A binary file in memory of a given capacity (grown when a write passes it), written once, front to back."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._view = np.empty(capacity, dtype=np.uint8).data  # not zeroed: every byte kept is written
        self._pos = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def write(self, b: Any) -> int:
        chunk = memoryview(b).cast("B")
        end = self._pos + chunk.nbytes
        if end > self._view.nbytes:
            grown = np.empty(max(end, 2 * self._view.nbytes), dtype=np.uint8).data
            grown[:self._pos] = self._view[:self._pos]
            self._view = grown
        self._view[self._pos:end] = chunk
        self._pos = end
        return chunk.nbytes

    def value(self) -> memoryview:
        """What was written."""
        return self._view[:self._pos]


def _physical(stored: np.ndarray, bscale: float, bzero: float) -> np.ndarray:
    """``stored * bscale + bzero`` in native byte order; 16-bit unsigned data stay ``uint16``."""
    if stored.dtype.kind == "i" and stored.dtype.itemsize == 2 and (bscale, bzero) == (1, 32768):
        # flip the sign bit: one pass, whose result is in native order
        unsigned = stored.view(stored.dtype.str.replace("i", "u"))  # same bytes and byte order, unsigned
        return np.bitwise_xor(unsigned, np.uint16(0x8000), dtype=np.uint16)
    native = stored.astype(stored.dtype.newbyteorder("="))
    if (bscale, bzero) == (1, 0):
        return native
    return native * np.float64(bscale) + np.float64(bzero)


def merge_headers(primary: fits.Header, extension: fits.Header, skip: Iterable[str] = ()) -> fits.Header:
    """The primary header with the extension header on top (extension values win), without structure keywords.

    The deprecated ``RADECSYS`` of ESO primary headers becomes ``RADESYS`` (same
    value). Primary keywords in ``skip`` (e.g. the primary's list of every
    chip's detector id) are left out.
    """
    ext_keys = {c.keyword for c in extension.cards if c.keyword not in ("", "COMMENT", "HISTORY")}
    skipped = {fits.Card.normalize_keyword(k) for k in skip}
    merged = fits.Header()
    for card in primary.cards:
        if card.keyword not in _STRUCTURAL and card.keyword not in ext_keys and card.keyword not in skipped:
            merged.append(copy.copy(card), end=True)
    for card in extension.cards:
        if card.keyword not in _STRUCTURAL:
            merged.append(copy.copy(card), end=True)
    if "RADECSYS" in merged:  # deprecated spelling of ESO primaries: WCS readers warn about it
        if "RADESYS" not in merged:
            merged.insert("RADECSYS", ("RADESYS", merged["RADECSYS"], merged.comments["RADECSYS"]))
        del merged["RADECSYS"]
    return merged


# ---------------------------------------------------------------------- which extension is which chip


@dataclass(frozen=True)
class ChipMapping:
    """Which chip each image extension of a raw file holds, and how that was decided.

    Attributes
    ----------
    extensions : tuple of int
        HDU numbers of the image extensions, in file order.
    chips : tuple of ChipSpec
        The chip of each of them.
    method : str
        :data:`BY_DETECTOR_ID` (the detector id keyword of every extension),
        :data:`BY_EXTNAME`, :data:`BY_PRIMARY_LIST` (the primary's ``CHIPn ID``
        list, in extension order) or :data:`BY_POSITION` (extension ``N`` is
        chip ``N``).
    detail : str
        What the method read (``'HIERARCH ESO DET CHIP1 ID'``) and anything the
        file lacked, for the log and the ingest report.
    """

    extensions: tuple[int, ...]
    chips: tuple[Any, ...]
    method: str
    detail: str = ""

    def chip_of(self, extension: int) -> Any:
        """The chip of HDU number ``extension``."""
        return self.chips[self.extensions.index(extension)]


def _header_text(header: fits.Header, key: str) -> str | None:
    """A keyword's value as stripped text (``HIERARCH`` optional), None when missing or blank."""
    for candidate in (key, key[len("HIERARCH "):] if key.upper().startswith("HIERARCH ") else "HIERARCH " + key):
        value = _get(header, candidate)
        if value is not None:
            return str(value).strip() or None
    return None


def _duplicates(raw_name: str, found: dict[int, Any], what: str) -> None:
    """Refuse two extensions identified as the same chip by ``what``."""
    seen: dict[str, int] = {}
    for n, chip in found.items():
        if chip is None:
            continue
        if chip.name in seen:
            raise IngestError(f"{raw_name}: extensions {seen[chip.name]} and {n} are both {chip.name} by "
                              f"{what}: the file's chip identification is broken; nothing of it was ingested "
                              "(fetch the file again or fix the header)")
        seen[chip.name] = n


def identify_chips(hdul: fits.HDUList, spec: Any, raw_name: str) -> ChipMapping:
    """Decide, for one raw file and before anything is stored, which chip each image extension holds.

    The detector id keyword that the instrument description declares
    (``spec.detector_id_keys``: WFI ``HIERARCH ESO DET CHIP ID`` or ``CHIP1 ID``)
    decides when every extension carries a known one; otherwise the
    ``EXTNAME`` when every one names a chip; otherwise the primary header's
    list of detector ids (``CHIPn ID`` for the n-th extension); otherwise the
    position (extension ``N`` is chip ``N``). The primary's list is read only
    when the extensions do not identify themselves (an archive may reorder the
    extensions and keep the list), and whatever an extension says about itself
    must agree with the choice. The method is logged (DEBUG for detector ids,
    INFO for the names and the primary's list, a WARNING for the position; a
    WARNING too for detector ids the description does not declare) and returned.

    Raises
    ------
    IngestError
        If the number of image extensions is not the instrument's, an
        extension's id keywords or its ``EXTNAME`` name different chips, two
        extensions are the same chip, or what an extension says contradicts the
        order that decides; the message names the file and the extensions.
    """
    images = [n for n, hdu in enumerate(hdul) if n > 0 and hdu.is_image and hdu.data is not None]
    if len(images) != len(spec.chips):
        raise IngestError(f"{raw_name} has {len(images)} image extension(s) but {spec.name} has "
                          f"{len(spec.chips)} chips: the file is truncated or not a {spec.name} mosaic file")

    def known(value: str) -> Any:
        try:
            return spec.identify(value)
        except LookupError:
            return None

    by_id: dict[int, Any] = {}
    by_name: dict[int, Any] = {}
    said: dict[int, str] = {}        # what identified an extension, for messages
    unknown: list[str] = []
    keys_used: set[str] = set()
    for n in images:
        header = hdul[n].header
        found: dict[str, tuple[str, Any]] = {}
        for key in spec.detector_id_keys:
            value = _header_text(header, key)
            if value is None:
                continue
            chip = known(value)
            if chip is None:
                unknown.append(f"extension {n} {key} = {value!r}")
            else:
                found[key] = (value, chip)
        if len({chip.name for _, chip in found.values()}) > 1:
            listed = ", ".join(f"{key} = {value!r} ({chip.name})" for key, (value, chip) in found.items())
            raise IngestError(f"{raw_name}: extension {n} has contradictory detector ids ({listed}); nothing of "
                              "the file was ingested: fix the header so that they agree")
        if found:
            key, (value, by_id[n]) = next(iter(found.items()))
            keys_used.add(key)
            said[n] = f"detector id {value!r}"
        extname = _header_text(header, "EXTNAME")
        by_name[n] = known(extname) if extname is not None else None
        if by_id.get(n) is not None and by_name[n] is not None and by_id[n] is not by_name[n]:
            raise IngestError(f"{raw_name}: extension {n} has detector id {value!r} ({by_id[n].name}) but "
                              f"EXTNAME {extname!r} ({by_name[n].name}); nothing of the file was ingested: fix "
                              "the header so that they agree")
        if n not in said and by_name[n] is not None:
            said[n] = f"EXTNAME {extname!r}"
    _duplicates(raw_name, by_id, "their detector ids")
    _duplicates(raw_name, by_name, "their EXTNAMEs")
    if unknown:
        declared = spec.chips[0].detector_ids or (spec.chips[0].name,)
        log.warning("%s: detector id(s) that %s does not declare: %s (declared ids are like %s; add the "
                    "file's ids to the chips' detector_ids in the instrument description)", raw_name, spec.name,
                    "; ".join(unknown), ", ".join(repr(i) for i in declared))

    mapping: dict[int, Any] | None = None
    if all(by_id.get(n) is not None for n in images):
        method, mapping, detail = BY_DETECTOR_ID, by_id, " or ".join(sorted(keys_used))
    elif all(by_name[n] is not None for n in images):
        missing = [n for n in images if by_id.get(n) is None]
        method, mapping = BY_EXTNAME, by_name
        detail = f"extension(s) {', '.join(map(str, missing))} without a known detector id"
    else:
        primary_chips = _primary_list(hdul[0].header, spec, raw_name, len(images), known)
        if primary_chips is not None:
            method, detail = BY_PRIMARY_LIST, spec.primary_detector_id_key.format(n="n")
            mapping = dict(zip(images, primary_chips))
        else:
            method, detail = BY_POSITION, "neither detector ids, EXTNAMEs nor the primary's list identify the chips"
            mapping = {n: spec.chips[i] for i, n in enumerate(images)}
        for n in images:  # what an extension says of itself must agree with the order
            own = by_id.get(n) or by_name[n]
            if own is not None and own is not mapping[n]:
                raise IngestError(f"{raw_name}: extension {n} says it is {own.name} ({said[n]}) but the other "
                                  f"extensions do not identify themselves and by {method} it would be "
                                  f"{mapping[n].name}; nothing of the file was ingested: give every extension its "
                                  f"detector id ({spec.detector_id_keys[0] if spec.detector_id_keys else 'EXTNAME'})")
    result = ChipMapping(tuple(images), tuple(mapping[n] for n in images), method, detail)
    if method == BY_DETECTOR_ID:
        log.debug("%s: chips identified by %s (%s)", raw_name, method, detail)
    elif method == BY_POSITION:
        log.warning("%s: chips identified by their %s only (extension N is chip N): %s", raw_name, method, detail)
    else:
        log.info("%s: chips identified by %s (%s)", raw_name, method, detail)
    return result


def _primary_list(primary: fits.Header, spec: Any, raw_name: str, count: int,
                  known: Callable[[str], Any]) -> list[Any] | None:
    """The chips the primary header lists for extensions 1..count, or None when it lists none or not all."""
    if not spec.primary_detector_id_key:
        return None
    values = [_header_text(primary, spec.primary_detector_id_key.format(n=i)) for i in range(1, count + 1)]
    if all(v is None for v in values):
        return None
    chips = [known(v) if v is not None else None for v in values]
    if any(c is None for c in chips):
        log.warning("%s: the primary header's detector list (%s) is incomplete or names unknown detectors: %s",
                    raw_name, spec.primary_detector_id_key.format(n="n"), values)
        return None
    _duplicates(raw_name, {i + 1: c for i, c in enumerate(chips)}, "the primary header's detector list")
    return chips


def split_raw(hdul: fits.HDUList, spec: Any, raw_name: str) -> list[RawChip]:
    """The chips of a raw MEF file, identified (:func:`identify_chips`) and checked against the instrument.

    Returned in the instrument's chip order whatever the order of the extensions.

    Raises
    ------
    IngestError
        If the chips cannot be identified (see :func:`identify_chips`) or an
        extension's size disagrees with the instrument.
    """
    from awe.instruments import RawGeometry
    mapping = identify_chips(hdul, spec, raw_name)
    primary = hdul[0].header
    listing = ([spec.primary_detector_id_key.format(n=i) for i in range(1, len(spec.chips) + 1)]
               if spec.primary_detector_id_key else [])
    chips = []
    for n, chip in zip(mapping.extensions, mapping.chips):
        hdu = hdul[n]
        if hdu.data.ndim != 2:
            raise IngestError(f"{raw_name}: extension {n} is not a 2-d image (shape {hdu.data.shape})")
        header = merge_headers(primary, hdu.header, skip=listing)
        header["EXTNAME"] = (chip.name, "chip name")
        if "ARCFILE" not in header:
            header["ARCFILE"] = (raw_name, "archive file name")
        try:
            geometry = RawGeometry.from_header(hdu.header, chip)
        except ValueError as exc:
            raise IngestError(f"{raw_name}: extension {n}: {exc}") from None
        scaling = (hdu.header.get("BSCALE", 1), hdu.header.get("BZERO", 0))
        chips.append(RawChip(index=chip.index, extension=n, spec=chip, geometry=geometry, header=header,
                             stored=hdu.data, scaling=scaling, data=_physical(hdu.data, *scaling),
                             identified_by=mapping.method))
    return sorted(chips, key=lambda c: c.index)


# ====================================================================== statistics and checks
_CHUNK = 1 << 20  # pixels per bincount call: keeps its int64 temporary in the cache


def _histogram16(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of every value of 8/16-bit integer pixels, and the value of bin 0."""
    values = values.ravel()
    offset = 0
    if values.dtype.kind == "i":  # signed: flip the sign bit, which keeps the order
        unsigned = np.dtype(f"u{values.dtype.itemsize}")
        offset = -(1 << (8 * values.dtype.itemsize - 1))
        values = values.view(unsigned) ^ unsigned.type(-offset)
    counts = np.zeros(1 << (8 * values.dtype.itemsize), dtype=np.int64)
    for start in range(0, values.size, _CHUNK):
        counts += np.bincount(values[start:start + _CHUNK], minlength=counts.size)
    return counts, offset


def _histogram_stats(counts: np.ndarray, offset: int) -> ImStat:
    """Exact mean, median, stdev (ddof=0), min and max of the pixels counted in ``counts``."""
    n = int(counts.sum())
    if n == 0:
        return ImStat()
    levels = np.arange(counts.size, dtype=np.float64) + offset
    # sums of the integer values and their squares, exact in integers (no BLAS: its threads spin for
    # milliseconds after each product, 30 times the work of these 65536 multiplications)
    if n < 1 << 31:  # the sum of squares (at most n * 2**32) fits in int64
        values = np.arange(counts.size, dtype=np.int64) + offset
        total, squares = int(np.dot(counts, values)), int(np.dot(counts, values * values))
        mean = total / n
        variance = max(squares * n - total * total, 0) / (n * n)  # exact Python integers, then one rounding
    else:
        weights = counts.astype(np.float64)
        mean = float(weights @ levels) / n
        variance = float(weights @ (levels - mean) ** 2) / n
    cumulative = np.cumsum(counts)
    low = levels[int(np.searchsorted(cumulative, (n - 1) // 2 + 1))]
    high = levels[int(np.searchsorted(cumulative, n // 2 + 1))]
    nonzero = np.flatnonzero(counts)
    return ImStat(mean=mean, median=float(0.5 * (low + high)), stdev=float(np.sqrt(variance)),
                  min=float(levels[nonzero[0]]), max=float(levels[nonzero[-1]]))


def _is_small_int(data: np.ndarray) -> bool:
    return data.size > 0 and data.dtype.kind in "ui" and data.dtype.itemsize <= 2


def raw_imstat(data: np.ndarray) -> ImStat:
    """Mean, median, standard deviation (ddof=0), minimum and maximum of every pixel.

    Raw 16-bit frames use an exact histogram (several times faster than the
    partition median of :func:`awe.image.stats.imstat`, which handles every
    other type).
    """
    data = np.asarray(data)
    if _is_small_int(data):
        return _histogram_stats(*_histogram16(data))
    from awe.image.stats import imstat
    return ImStat(**imstat(data).as_dict()) if data.size else ImStat()


def chip_stats(data: np.ndarray, area: tuple[slice, slice]) -> tuple[ImStat, ImStat]:
    """Statistics of the whole raw extension and of ``area`` (the illuminated part).

    For 16-bit data the histogram of ``area`` is the whole one minus the
    histogram of the strips around it, so every pixel is counted once.
    """
    if not _is_small_int(data):
        return raw_imstat(data), raw_imstat(data[area])
    counts, offset = _histogram16(data)
    ys, xs = area
    inside = counts.copy()
    for strip in (data[:, : xs.start], data[:, xs.stop:], data[: ys.start, xs], data[ys.stop:, xs]):
        if strip.size:
            inside -= _histogram16(strip)[0]
    return _histogram_stats(counts, offset), _histogram_stats(inside, offset)


def check_quality(cls: type[RawFrame], stat: ImStat, params: ParamGroup, saturation: float) -> int:
    """``quality_flags`` of a raw frame from the statistics of its illuminated area (0 = fine).

    ``params`` is an :class:`IngestParams` (typed as its base: the type checker sees a group's
    attributes as their :class:`~awe.pars.Param` declarations, not as the values they hold).

    A constant frame is EMPTY; a bias whose median is outside
    ``BIAS_MIN_LEVEL..BIAS_MAX_LEVEL`` and a flat whose median is outside
    ``FLAT_MIN_LEVEL..FLAT_MAX_LEVEL`` have the WRONG_LEVEL; a flat whose median
    is above ``saturation`` is SATURATED.
    """
    flags = 0
    if stat.stdev is None or stat.stdev <= params.EMPTY_STDEV:
        flags |= QualityFlags.EMPTY
    median = stat.median if stat.median is not None else 0.0
    if issubclass(cls, RawBiasFrame) and not params.BIAS_MIN_LEVEL <= median <= params.BIAS_MAX_LEVEL:
        flags |= QualityFlags.WRONG_LEVEL
    if issubclass(cls, (RawDomeFlatFrame, RawTwilightFlatFrame)):
        if median > saturation:
            flags |= QualityFlags.SATURATED
        elif not params.FLAT_MIN_LEVEL <= median <= params.FLAT_MAX_LEVEL:
            flags |= QualityFlags.WRONG_LEVEL
    return flags


# ====================================================================== header attributes
def _date_obs(header: fits.Header) -> _dt.datetime:
    value = _get(header, "DATE-OBS")
    if value is None:
        raise IngestError("DATE-OBS is missing from the primary header: the exposure has no time")
    try:
        when = _dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise IngestError(f"DATE-OBS = {value!r} is not an ISO date-time like 2003-03-03T19:23:24.843") from None
    if when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return when


def _float(header: fits.Header, key: str) -> float | None:
    value = _get(header, key)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IngestError(f"{key} = {value!r} is not a number") from None
    if not math.isfinite(number):
        raise IngestError(f"{key} = {value!r} is not a finite number: fix the header")
    return number


def _angle(header: fits.Header, key: str, hours: bool) -> float | None:
    """RA/DEC in degrees: a number of degrees or a sexagesimal string."""
    value = _get(header, key)
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise IngestError(f"{key} = {value!r} is not a finite angle: fix the header")
        return float(value)
    from astropy.coordinates import Angle
    import astropy.units as u
    try:
        return float(Angle(str(value), unit=u.hourangle if hours else u.deg).deg)
    except (ValueError, TypeError):
        raise IngestError(f"{key} = {value!r} is neither degrees nor a sexagesimal angle") from None


#: the largest difference between MJD-OBS and DATE-OBS accepted [s]
MJD_TOLERANCE_S = 1.0


def _mjd(header: fits.Header, when: _dt.datetime) -> float:
    """MJD-OBS, which must agree with DATE-OBS within :data:`MJD_TOLERANCE_S`; from DATE-OBS when missing."""
    from astropy.time import Time
    from_date = float(Time(when, scale="utc").mjd)
    value = _float(header, "MJD-OBS")
    if value is None:
        return from_date
    difference = abs(value - from_date) * 86400.0
    if difference > MJD_TOLERANCE_S:
        raise IngestError(f"MJD-OBS = {value} differs from DATE-OBS = {when.isoformat()} (MJD {from_date:.8f}) by "
                          f"{difference:.3g} s (more than {MJD_TOLERANCE_S:g} s): the header's time is inconsistent; "
                          "fix MJD-OBS or DATE-OBS")
    return value


@dataclass
class _Exposure:
    """What the primary header says about one exposure."""

    spec: Any
    cls: type[RawFrame]
    dpr_type: str
    when: _dt.datetime
    filter_name: str | None
    attributes: dict[str, Any]
    #: quality flags of every chip from the header (suspicious but usable values), and why
    flags: int = 0
    warnings: list[str] = field(default_factory=list)


def _exposure(primary: fits.Header, raw_name: str) -> _Exposure:
    from awe.instruments import get_instrument
    instrume = _get(primary, "INSTRUME")
    if instrume is None:
        raise IngestError("INSTRUME is missing from the primary header: cannot tell the instrument")
    try:
        spec = get_instrument(str(instrume))
    except LookupError as exc:
        raise IngestError(str(exc)) from None
    cls, dpr_type = classify(primary)
    when = _date_obs(primary)
    exptime = _float(primary, "EXPTIME")
    if exptime is None:
        if cls is not RawBiasFrame:
            raise IngestError(f"EXPTIME is missing from the primary header of a {cls.__name__}")
        exptime = 0.0
    if exptime < 0:
        raise IngestError(f"EXPTIME = {exptime} s is negative: impossible; fix the header")
    airmass_key = "HIERARCH ESO TEL AIRM START"
    airmass = _float(primary, airmass_key)
    if airmass is None:
        airmass_key, airmass = "AIRMASS", _float(primary, "AIRMASS")
    if airmass is not None and airmass < 0:
        raise IngestError(f"the airmass ({airmass_key} = {airmass}) is negative: impossible; fix the header")
    ra, dec = _angle(primary, "RA", hours=True), _angle(primary, "DEC", hours=False)
    if dec is not None and not -90.0 <= dec <= 90.0:
        raise IngestError(f"DEC = {dec} deg is outside -90..+90: impossible; fix the header")
    if ra is not None and not 0.0 <= ra <= 360.0:
        raise IngestError(f"RA = {ra} deg is outside 0..360: impossible; fix the header")
    filter_name = _get(primary, "HIERARCH ESO INS FILT1 ID") or _get(primary, "HIERARCH ESO INS FILT1 NAME") \
        or _get(primary, "FILTER")
    attributes = dict(
        DATE_OBS=when, MJD_OBS=_mjd(primary, when), EXPTIME=exptime, OBJECT=_get(primary, "OBJECT"),
        AIRMASS=airmass, RA=ra, DEC=dec,
        raw_file=raw_name, DPR_TYPE=dpr_type,
    )
    exposure = _Exposure(spec, cls, dpr_type, when, str(filter_name) if filter_name is not None else None,
                         attributes)
    if exptime == 0 and cls is not RawBiasFrame:
        exposure.flags |= QualityFlags.ZERO_EXPTIME
        exposure.warnings.append(f"EXPTIME = 0 s for a {cls.__name__}: ingested with quality flag ZERO_EXPTIME "
                                 "(select() skips it)")
    return exposure


def _gain(header: fits.Header, chip: Any, exposure: _Exposure) -> tuple[float, str | None]:
    """The chip's gain from the header [e-/ADU], or the instrument's with a warning when missing or not positive."""
    key = "HIERARCH ESO DET OUT1 CONAD"
    try:
        gain = _float(header, key)
    except IngestError:
        gain = float("nan")
    if gain is not None and gain > 0:
        return gain, None
    said = "missing" if gain is None else "not a number" if math.isnan(gain) else f"{gain:g}, not positive"
    return float(chip.gain), f"{chip.name}: {key} is {said}; used the instrument's gain {chip.gain} e-/ADU"


# ====================================================================== database look-ups
class _Entities:
    """Instrument, chip and filter rows, looked up once per ingest run."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {}

    def get(self, spec: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        if spec.name not in self._cache:
            from awe.model.entities import Chip, Filter, ensure_instrument
            inst = ensure_instrument(spec.name)
            chips = {c.name: c for c in Chip.instrument.object_id == inst.object_id}
            filters = {f.name: f for f in Filter.instrument.object_id == inst.object_id}
            self._cache[spec.name] = (inst, chips, filters)
        return self._cache[spec.name]


def _holders(found: Iterable[Any]) -> str:
    """The projects holding some chips, as the caller may know them."""
    names = sorted({f.project_name for f in found if f.visible})
    hidden = any(not f.visible for f in found)
    return " and ".join(filter(None, [f"project {', '.join(names)}" if names else "",
                                      "another project you cannot see" if hidden else ""]))


# ====================================================================== one file
def _filter_row(exposure: _Exposure, filter_rows: dict[str, Any]) -> Any:
    """The Filter row of the exposure; biases may lack a (known) filter."""
    if exposure.filter_name is None:
        if exposure.cls is RawBiasFrame:
            return None
        raise IngestError(f"HIERARCH ESO INS FILT1 ID/NAME is missing: the filter of a {exposure.cls.__name__} "
                          "must be known")
    try:
        return filter_rows[exposure.spec.filter(exposure.filter_name).id]
    except LookupError as exc:
        if exposure.cls is RawBiasFrame:
            return None
        raise IngestError(str(exc)) from None


def _build_frames(path: Path, params: ParamGroup, entities: _Entities,
                  tmpdir: Path) -> tuple[_Exposure, list[tuple[RawFrame, memoryview]], str]:
    """Read, classify, split and check one raw file; the frames, their per-chip FITS files (in memory: each is
    written once, into the storage) and how the chips were identified."""
    raw_name = _uncompressed_name(path)
    with read_raw(path) as hdul:
        exposure = _exposure(hdul[0].header, raw_name)
        spec = exposure.spec
        chips = split_raw(hdul, spec, raw_name)
        inst, chip_rows, filter_rows = entities.get(spec)
        filt = _filter_row(exposure, filter_rows)
        saturation = params.SATURATION_LEVEL or spec.saturation
        stamp = exposure.when.isoformat(timespec="milliseconds")
        items: list[tuple[RawFrame, memoryview]] = []
        assumed: list[str] = []
        for chip in chips:
            whole, lit = chip_stats(chip.data, chip.geometry.data)
            gain, why = _gain(chip.header, chip.spec, exposure)
            flags = check_quality(exposure.cls, lit, params, saturation) | exposure.flags
            if why is not None:
                assumed.append(why)
                flags |= QualityFlags.GAIN_ASSUMED
            frame = exposure.cls(
                filename=f"{spec.name}.{stamp}_{chip.index}.fits", instrument=inst, chip=chip_rows[chip.spec.name],
                filter=filt, extension=chip.extension, NAXIS1=int(chip.data.shape[1]), NAXIS2=int(chip.data.shape[0]),
                gain=gain, imstat=whole, quality_flags=flags,
                process_params={"ingest_params": params.as_dict()}, **exposure.attributes)
            items.append((frame, chip.to_bytes()))
    if assumed:
        exposure.warnings.append("; ".join(assumed) + " (quality flag GAIN_ASSUMED: select() skips these chips)")
    return exposure, items, chips[0].identified_by


def _not_yet_stored(items: list[tuple[RawFrame, memoryview]]
                    ) -> tuple[list[tuple[RawFrame, memoryview]], list[str], list[str], dict[str, str | None]]:
    """The chips not ingested yet, notes on those that are, and the chips made visible or re-stored here.

    The duplicate check looks at every project (:func:`awe.db.privileged.file_status`) but names only those the
    caller may enter. A raw chip is one object (file names are unique): ingesting into a public project a file
    whose chips sit in a project the caller cannot see publishes those chips there (the caller proves he holds
    the same data by its SHA-256: :func:`awe.db.privileged.publish_raw`), so nobody can block the public ingest
    of a raw file by keeping it private. A chip whose row exists but whose stored file is gone is stored again.

    Raises
    ------
    IngestError
        If a chip of that name was ingested from a file with other content.
    """
    from awe.db import privileged
    from awe.db.session import current_session
    session = current_session()
    # the names first: a chip not ingested yet is hashed once, by the storage as it writes it; only the chips
    # found are hashed here, to compare with what is stored
    digests: dict[str, str | None] = {f.filename: None for f, _ in items}
    taken = privileged.file_status(session, list(digests))
    for frame, content in items:
        if frame.filename in taken:
            digests[frame.filename] = hashlib.sha256(content).hexdigest()
    found = privileged.file_status(session, list(taken), [digests[n] for n in taken]) if taken else {}
    for frame, _ in items:
        status = found.get(frame.filename)
        if status is not None and not status.same:
            raise IngestError(
                f"{frame.filename} is ingested already ({_holders([status])}) from a different file with the same "
                "exposure time stamp; delete it first if this file replaces it")
    project = session.project
    hidden = [(f.filename, str(digests[f.filename])) for f, _ in items  # found: hashed above
              if f.filename in found and not found[f.filename].visible]
    published: list[str] = []
    if hidden and project.kind == "public" and session.may_write(project.id):
        published = privileged.publish_raw(session, hidden, project.id)
        for name in published:
            found[name] = privileged.FileStatus(name, True, digests[name], project.id, project.name)
    restored: list[str] = []
    storage = session.storage
    for frame, content in items:
        status = found.get(frame.filename)
        if status is not None and status.visible and not storage.exists(frame.filename):
            log.warning("%s: the database has it (project %s) but its stored file is gone: storing it again",
                        frame.filename, status.project_name)
            stored = storage.store_bytes(content, frame.filename, digests[frame.filename])
            if stored != status.checksum:  # pragma: no cover - checked above
                raise IngestError(f"{frame.filename}: re-stored content differs from the recorded checksum")
            restored.append(frame.filename)
    fresh = [(f, content) for f, content in items if f.filename not in found]
    notes = [_holders(found.values())] if found else []
    if restored:
        notes.append(f"{len(restored)} chip file(s) were missing from the storage and are stored again")
    if published:
        notes.append(f"{len(published)} of them were in a project you cannot see and are now published in "
                     f"{project.name} (a raw chip is one object, shared by everyone once public)")
    own_private = {f.project_name for f in found.values()
                   if f.visible and f.project_id != project.id and f.project_name is not None
                   and f.project_name != project.name}
    if any(not f.visible for f in found.values()) and project.kind != "public":
        notes.append("a raw chip is one object in one project: ingest the file into a public project "
                     "(`awe ingest --project ALL`) to share those chips")
    if own_private and project.kind == "public":
        notes.append(f"they are in {', '.join(sorted(own_private))}, not in {project.name}: publish them with "
                     f"`context.set_project('{sorted(own_private)[0]}')` and "
                     f"`for f in RawFrame.raw_file == '{items[0][0].raw_file}': context.migrate(f, '{project.name}')`")
    return fresh, notes, restored + published, digests


def _forget_stored(session: Any, names: list[str]) -> None:
    """Remove files this ingest stored for a commit that failed, unless some object refers to them meanwhile."""
    from awe.db import privileged
    taken = privileged.file_status(session, names)
    for name in names:
        if name in taken:
            continue
        try:
            if session.storage.exists(name):
                session.storage.delete(name)
        except OSError as exc:  # vacuum removes it later
            log.warning("could not remove %s after the failed commit (awe storage vacuum removes it): %s", name, exc)


def _ingest_file(path: Path, params: IngestParams, entities: _Entities, tmpdir: Path) -> FileResult:
    from awe.db.commit import commit
    from awe.db.session import current_session

    exposure, items, identified_by = _build_frames(path, params, entities, tmpdir)
    fresh, notes, repaired, digests = _not_yet_stored(items)
    where = "; ".join(notes)
    if not fresh:
        if repaired:
            return FileResult(path, "ingested", f"no new chips: {len(items)} chips in {where}")
        return FileResult(path, "skipped", f"already ingested ({len(items)} chips in {where}); nothing added")
    session = current_session()
    try:
        for frame, content in fresh:  # the one write of each chip: into the storage, hashed as written
            frame.__dict__["checksum"] = session.storage.store_bytes(content, frame.filename, digests[frame.filename])
        commit([(frame, None) for frame, _ in fresh])
    except BaseException as exc:
        _forget_stored(session, [f.filename for f, _ in fresh])
        if isinstance(exc, sa.exc.IntegrityError):
            raise IngestError("ingested at the same time by another session; run ingest again to check") from None
        raise
    frames = [f for f, _ in fresh]
    what = " ".join(str(v) for v in (exposure.cls.__name__, exposure.attributes["OBJECT"], exposure.filter_name)
                    if v)
    message = f"{what}, {len(frames)} chips"
    if len(frames) < len(items):
        message += f" (the other {len(items) - len(frames)} were in {where} already)"
    flagged = [f for f in frames if f.quality_flags]
    if flagged:
        message += "; flagged: " + ", ".join(f"{f.chip.name} {QualityFlags.describe(f.quality_flags)}"
                                             for f in flagged)
    if identified_by != BY_DETECTOR_ID:
        message += f"; chips identified by {identified_by} (no detector ids)"
    for warning in exposure.warnings:
        log.warning("%s: %s", path.name, warning)
    return FileResult(path, "ingested", message, frames, list(exposure.warnings))


# ====================================================================== the front door
def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(RAW_SUFFIXES))
        else:
            files.append(p)
    return files


def _params(thresholds: "IngestParams | dict | None") -> IngestParams:
    if thresholds is None:
        return IngestParams()
    if isinstance(thresholds, IngestParams):
        return thresholds
    return IngestParams(**thresholds)


def ingest(paths: "str | Path | Iterable[str | Path]", progress: Callable[[int, int, str], Any] | None = None,
           thresholds: "IngestParams | dict | None" = None) -> IngestReport:
    """Ingest ESO raw mosaic files into the current project.

    The course keeps the raw data in the public project: ``context.set_project('ALL')``
    first (``awe ingest --project ALL``).

    Parameters
    ----------
    paths : path or iterable of paths
        Raw files (``.fits``, ``.fits.gz``, ``.fits.Z``) or folders of them.
    progress : callable, optional
        Called as ``progress(done, total, filename)`` after each file.
    thresholds : IngestParams or dict, optional
        Sanity thresholds (see :class:`IngestParams`).

    Returns
    -------
    IngestReport
        Every file ingested, skipped (already there) or failed, with the reason.
        Problems with single files never raise: the other files go in.

    Raises
    ------
    ParameterError
        If ``thresholds`` names an unknown parameter or has a value of the wrong type.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    params = _params(thresholds)
    files = _expand(paths)
    report = IngestReport()
    entities = _Entities()
    for done, path in enumerate(files, 1):
        with tempfile.TemporaryDirectory(prefix="awe-ingest-") as tmp:
            try:
                result = _ingest_file(path, params, entities, Path(tmp))
            except IngestError as exc:
                result = FileResult(path, "failed", str(exc).removeprefix(f"{path}: "))
            except Exception as exc:  # storage, unexpected header content: this file fails, the others go in
                log.debug("%s failed", path, exc_info=True)
                result = FileResult(path, "failed", f"{type(exc).__name__}: {exc}")
        log.debug("%s", result)  # the caller shows the report
        report.results.append(result)
        if progress is not None:
            progress(done, len(files), path.name)
    log.info("ingest: %s", report.summary())
    return report
