"""The instrument description classes and their construction from a TOML mapping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["ChipSpec", "FilterSpec", "InstrumentSpec", "InstrumentDescriptionError", "spec_from_mapping"]


class InstrumentDescriptionError(ValueError):
    """An instrument description (TOML file) is incomplete or inconsistent."""


@dataclass(frozen=True)
class ChipSpec:
    """One CCD of a mosaic camera, at full size and without binning.

    Attributes
    ----------
    name : str
        Chip name (``'ccd50'``).
    index : int
        Extension number in the raw MEF file and per-chip file suffix (1..N).
    gain : float
        Conversion factor [e-/ADU] (ESO ``DET OUT1 CONAD``).
    read_noise_e : float
        Read noise [e-].
    nx, ny : int
        Size of the illuminated area [pixels].
    prescan_x, overscan_x : int
        Unlit columns left and right of the illuminated area.
    prescan_y, overscan_y : int
        Unlit rows below and above the illuminated area.
    trim : tuple of int
        Trim section used by the pipelines, ``(x0, x1, y0, y1)``, 1-based and
        inclusive in raw pixel coordinates.
    crpix : tuple of float
        Approximate reference pixel of the mosaic pointing (raw pixels, 1-based).
    cd : tuple of tuple of float
        Approximate CD matrix [deg/pixel].
    detector_ids : tuple of str
        Values of the detector id keyword (``HIERARCH ESO DET CHIP ID``) that
        name this chip, the one raw files carry first; the chip name is always
        accepted as well (see :meth:`InstrumentSpec.identify`).
    """

    name: str
    index: int
    gain: float
    read_noise_e: float
    nx: int
    ny: int
    prescan_x: int
    overscan_x: int
    prescan_y: int
    overscan_y: int
    trim: tuple[int, int, int, int]
    crpix: tuple[float, float]
    cd: tuple[tuple[float, float], tuple[float, float]]
    detector_ids: tuple[str, ...] = ()

    @property
    def detector_id(self) -> str:
        """The detector id a raw file of this chip carries (the first declared; the name if none is)."""
        return self.detector_ids[0] if self.detector_ids else self.name

    @property
    def raw_shape(self) -> tuple[int, int]:
        """Shape ``(ny, nx)`` of a full-size raw extension, unlit strips included."""
        return (self.prescan_y + self.ny + self.overscan_y, self.prescan_x + self.nx + self.overscan_x)

    @property
    def read_noise_adu(self) -> float:
        """Read noise [ADU]."""
        return self.read_noise_e / self.gain


@dataclass(frozen=True)
class FilterSpec:
    """A filter of an instrument.

    Attributes
    ----------
    id : str
        Astro-WISE filter id (``'#844'``).
    eso_name : str
        ESO name as in ``HIERARCH ESO INS FILT1 NAME`` (``'BB#Rc/162_ESO844'``).
    band : str
        Photometric band (``'Rc'``).
    wavelength_nm : float
        Central wavelength [nm].
    standard_band : str or None
        The standard-star band the filter is calibrated to (``'R'``: Landolt/Cousins R for ``#844``);
        None when the description gives none.
    standard_colour : str or None
        The colour index of the standard system used for the colour term (``'V-R'``).
    extinction : float or None
        Default atmospheric extinction [mag/airmass], used when a night's standards do not span
        enough airmass to fit it.
    """

    id: str
    eso_name: str
    band: str
    wavelength_nm: float
    standard_band: str | None = None
    standard_colour: str | None = None
    extinction: float | None = None


@dataclass(frozen=True)
class InstrumentSpec:
    """A camera on a telescope, described by data (one TOML file per instrument).

    Attributes
    ----------
    name, telescope, observatory : str
        ``'WFI'``, ``'MPI-2.2'``, ``'La Silla'``.
    longitude_deg, latitude_deg, altitude_m : float
        Site: east longitude and latitude [deg], altitude [m].
    pixel_scale : float
        [arcsec/pixel].
    saturation : float
        Level [ADU] above which pipelines treat a pixel as saturated.
    adc_limit : int
        Largest value the ADC can write [ADU].
    layout : tuple of tuple of str
        Chip names as seen on the sky, North up and East left, row by row.
    chips : tuple of ChipSpec
        In extension order.
    filters : tuple of FilterSpec
    pixel_size_um : float
        Physical pixel size [micron].
    detector_id_keys : tuple of str
        Extension keywords that carry the detector id, in the order they are
        read (``'HIERARCH ESO DET CHIP ID'``, ``'HIERARCH ESO DET CHIP1 ID'``).
    primary_detector_id_key : str or None
        Primary-header keyword listing the detector id of the n-th chip, with
        ``{n}`` for the number (``'HIERARCH ESO DET CHIP{n} ID'``).
    """

    name: str
    telescope: str
    observatory: str
    longitude_deg: float
    latitude_deg: float
    altitude_m: float
    pixel_scale: float
    saturation: float
    adc_limit: int
    layout: tuple[tuple[str, ...], ...]
    chips: tuple[ChipSpec, ...]
    filters: tuple[FilterSpec, ...]
    pixel_size_um: float = 15.0
    detector_id_keys: tuple[str, ...] = ()
    primary_detector_id_key: str | None = None

    def chip(self, name_or_index: str | int) -> ChipSpec:
        """The chip with this name (``'ccd50'``, any case) or extension index (``1``).

        Raises
        ------
        LookupError
            If the instrument has no such chip.
        """
        for chip in self.chips:
            if isinstance(name_or_index, str) and not name_or_index.strip().isdigit():
                if chip.name.lower() == name_or_index.strip().lower():
                    return chip
            elif int(name_or_index) == chip.index:
                return chip
        known = ", ".join(f"{c.name} (extension {c.index})" for c in self.chips)
        raise LookupError(f"{self.name} has no chip {name_or_index!r}; its chips are {known}")

    def identify(self, value: str) -> ChipSpec:
        """The chip a detector id or a chip name names (``'ccd50'``, any case, spaces ignored).

        Raises
        ------
        LookupError
            If no chip has this detector id or name.
        """
        key = str(value).strip().lower()
        for chip in self.chips:
            if key == chip.name.lower() or key in (i.lower() for i in chip.detector_ids):
                return chip
        known = ", ".join(f"{c.name} ({'/'.join(c.detector_ids) or c.name})" for c in self.chips)
        raise LookupError(f"{self.name} has no detector with id or name {value!r}; its chips (detector ids) "
                          f"are {known}")

    def filter(self, id_or_eso_name: str) -> FilterSpec:
        """The filter with this Astro-WISE id (``'#844'``) or ESO name (``'BB#Rc/162_ESO844'``).

        Raises
        ------
        LookupError
            If the instrument has no such filter.
        """
        key = str(id_or_eso_name).strip().lower()
        for filt in self.filters:
            if key in (filt.id.lower(), filt.eso_name.lower()):
                return filt
        known = ", ".join(f"{f.id} ({f.eso_name})" for f in self.filters)
        raise LookupError(f"{self.name} has no filter {id_or_eso_name!r}; its filters are {known}")

    @property
    def chip_names(self) -> tuple[str, ...]:
        """Chip names in extension order."""
        return tuple(c.name for c in self.chips)


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise InstrumentDescriptionError(f"{where}: missing key {key!r}; add it to the instrument's TOML file")
    return mapping[key]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    """A list of non-empty strings from a TOML value."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) and v.strip() for v in value):
        raise InstrumentDescriptionError(f"{where} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _detector(data: Mapping[str, Any], chips: tuple[ChipSpec, ...],
              source: str) -> tuple[tuple[str, ...], str | None]:
    """The ``[detector_id]`` table: extension keywords and the primary listing; every id names one chip."""
    table = data.get("detector_id", {})
    if not isinstance(table, Mapping):
        raise InstrumentDescriptionError(f"{source}: detector_id must be a table with keys 'extension_keys' "
                                         "and 'primary_key'")
    unknown = set(table) - {"extension_keys", "primary_key"}
    if unknown:
        raise InstrumentDescriptionError(f"{source}: detector_id has unknown key(s) {sorted(unknown)}; "
                                         "known: extension_keys, primary_key")
    keys = _strings(table.get("extension_keys", []), f"{source}: detector_id.extension_keys")
    primary = table.get("primary_key")
    if primary is not None and (not isinstance(primary, str) or "{n}" not in primary):
        raise InstrumentDescriptionError(f"{source}: detector_id.primary_key must be a keyword with {{n}} for the "
                                         f"chip number, like 'HIERARCH ESO DET CHIP{{n}} ID', got {primary!r}")
    if any(c.detector_ids for c in chips) and not keys:
        raise InstrumentDescriptionError(f"{source}: chips declare detector_ids but detector_id.extension_keys "
                                         "does not say which header keyword carries them")
    owner: dict[str, str] = {}
    for chip in chips:
        for value in {chip.name.lower(), *(i.lower() for i in chip.detector_ids)}:
            if value in owner and owner[value] != chip.name:
                raise InstrumentDescriptionError(f"{source}: detector id or name {value!r} names both chip "
                                                 f"{owner[value]} and chip {chip.name}: every id must name one chip")
            owner[value] = chip.name
    return keys, primary


def _chip_from_mapping(entry: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> ChipSpec:
    merged = {**defaults, **entry}
    name = str(_require(merged, "name", where))
    where = f"{where} chip {name}"
    get = lambda key: _require(merged, key, where)  # noqa: E731
    cd = get("cd")
    chip = ChipSpec(
        name=name, index=int(get("index")), gain=float(get("gain")), read_noise_e=float(get("read_noise_e")),
        nx=int(get("nx")), ny=int(get("ny")), prescan_x=int(get("prescan_x")), overscan_x=int(get("overscan_x")),
        prescan_y=int(get("prescan_y")), overscan_y=int(get("overscan_y")),
        trim=tuple(int(v) for v in get("trim")),  # type: ignore[arg-type]
        crpix=tuple(float(v) for v in get("crpix")),  # type: ignore[arg-type]
        cd=((float(cd[0][0]), float(cd[0][1])), (float(cd[1][0]), float(cd[1][1]))),
        detector_ids=_strings(entry.get("detector_ids", []), f"{where}: detector_ids"),
    )
    x0, x1, y0, y1 = chip.trim
    if not (chip.prescan_x < x0 <= x1 <= chip.prescan_x + chip.nx
            and chip.prescan_y < y0 <= y1 <= chip.prescan_y + chip.ny):
        raise InstrumentDescriptionError(
            f"{where}: trim section {chip.trim} is not inside the illuminated area "
            f"x {chip.prescan_x + 1}..{chip.prescan_x + chip.nx}, y {chip.prescan_y + 1}..{chip.prescan_y + chip.ny}")
    return chip


def spec_from_mapping(data: Mapping[str, Any], source: str = "<mapping>") -> InstrumentSpec:
    """Build an :class:`InstrumentSpec` from a parsed TOML description.

    Raises
    ------
    InstrumentDescriptionError
        If a key is missing, chips, layout and indices disagree, or a detector
        id names more than one chip.
    """
    defaults = data.get("defaults", {})
    chips = tuple(sorted((_chip_from_mapping(c, defaults, source) for c in _require(data, "chips", source)),
                         key=lambda c: c.index))
    if [c.index for c in chips] != list(range(1, len(chips) + 1)):
        raise InstrumentDescriptionError(f"{source}: chip indices must be 1..{len(chips)}, got "
                                         f"{[c.index for c in chips]}")
    layout = tuple(tuple(str(n) for n in row) for row in _require(data, "layout", source))
    if sorted(n for row in layout for n in row) != sorted(c.name for c in chips):
        raise InstrumentDescriptionError(f"{source}: the layout {layout} must name every chip exactly once")
    filters = tuple(FilterSpec(id=str(_require(f, "id", source)), eso_name=str(_require(f, "eso_name", source)),
                               band=str(_require(f, "band", source)),
                               wavelength_nm=float(_require(f, "wavelength_nm", source)),
                               standard_band=str(f["standard_band"]) if f.get("standard_band") else None,
                               standard_colour=str(f["standard_colour"]) if f.get("standard_colour") else None,
                               extinction=float(f["extinction"]) if f.get("extinction") is not None else None)
                    for f in data.get("filters", []))
    detector_id_keys, primary_detector_id_key = _detector(data, chips, source)
    get = lambda key: _require(data, key, source)  # noqa: E731
    return InstrumentSpec(
        name=str(get("name")), telescope=str(get("telescope")), observatory=str(get("observatory")),
        longitude_deg=float(get("longitude_deg")), latitude_deg=float(get("latitude_deg")),
        altitude_m=float(get("altitude_m")), pixel_scale=float(get("pixel_scale")),
        saturation=float(get("saturation")), adc_limit=int(get("adc_limit")), layout=layout, chips=chips,
        filters=filters, pixel_size_um=float(data.get("pixel_size_um", 15.0)),
        detector_id_keys=detector_id_keys, primary_detector_id_key=primary_detector_id_key,
    )
