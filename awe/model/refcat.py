"""Reference catalogues: astrometric reference stars and photometric standard stars.

A :class:`ReferenceCatalog` is a product like any other (a FITS table in the
data storage, a row in ``objects``, a project, a creator), and its sources are
catalogue rows (:class:`ReferenceSource`, table ``reference_sources``) with the
sky index of :mod:`awe.db.rows`, so a region is one SQL query::

    load_refcat("refcat/standards.fits", "standard")          # awe refcat FILE --kind standard
    stars = refcat_sources("standard", ra=187.28, dec=2.05, radius_deg=0.3)
    stars["ra", "dec", "mag", "name"]
    (ReferenceSource.catalog.kind == "standard") & (ReferenceSource.mag < 15)   # the query language

Besides position and main magnitude, the rows keep the positional errors (``ra_err``, ``dec_err`` in
arcsec, from the columns' TUNIT, else arcsec, or mas for Gaia-named columns), the proper motions
(``pmra`` = mu_alpha cos(dec), ``pmdec``, mas/yr) and the epoch of the positions (Julian year:
``ref_epoch``/``epoch`` columns, else the file's ``EPOCH`` keyword, else 2000.0). A query can move the
positions to the epoch of an observation and give the magnitudes of one band with a colour::

    refcat_sources("astrometric", 187.28, 2.05, 0.3, epoch=2003.17)        # positions at 2003.17
    refcat_sources("standard", 187.28, 2.05, 0.3, band="R", colour="V-R")  # mag = R, colour = V-R

Only catalogues visible in the current context are searched.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from astropy.table import MaskedColumn, Table

from awe.db.persistent import JSON, Field, Float, Integer, String
from awe.db.rows import Parent, RowQuery, Rows
from awe.db.schema import DBObject

__all__ = ["ReferenceCatalog", "ReferenceSource", "refcat_rows", "load_refcat", "refcat_sources", "refcat_box",
           "band_columns", "RefcatError", "KINDS", "DEFAULT_EPOCH"]

log = logging.getLogger(__name__)

#: the kinds of reference catalogue
KINDS = ("astrometric", "standard")

#: the columns every reference source has; the file's other columns go into ``extra``
_MAIN = ("ra", "dec", "mag", "mag_err", "name")
#: the astrometric columns every reference source has (NaN when the catalogue has none)
_ASTRO = ("ra_err", "dec_err", "pmra", "pmdec", "epoch")
#: default epoch of positions without one (J2000.0)
DEFAULT_EPOCH = 2000.0

#: positional-error columns (lower case); Gaia's names are in mas, the others in arcsec unless TUNIT says
_ERR_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ra_err": ("ra_err", "raerr", "e_ra", "e_raj2000", "e_radeg", "era", "err_ra", "errra", "sigma_ra", "ra_sigma",
               "e_ra_icrs", "ra_error", "erra", "erralpha", "err_alpha", "errx2_world"),
    "dec_err": ("dec_err", "decerr", "e_dec", "e_de", "e_dej2000", "e_dedeg", "ede", "edec", "err_dec", "errdec",
                "sigma_dec", "dec_sigma", "e_de_icrs", "dec_error", "errdelta", "err_delta", "erry2_world"),
}
_POS_ERR = ("e_pos", "pos_err", "errpos", "poserr", "sigma_pos", "e_radec")
_GAIA_NAMES = ("ra_error", "dec_error")
#: proper motions: mu_alpha cos(dec) (Gaia ``pmra``, Vizier ``pmRA``), mu_alpha itself, mu_delta
_PMRA_COS = ("pmra", "pm_ra_cosdec", "pmra_cosdec", "pmracosdec", "pmrac", "pmra_cos", "mu_alpha_star", "pmra*")
_PMRA_NOCOS = ("pm_ra", "pmra_nocos", "mu_alpha", "pmalpha")
_PMDEC = ("pmdec", "pmde", "pm_dec", "pm_de", "mu_delta", "pmdelta")
_EPOCH = ("ref_epoch", "epoch", "epoch_ra", "epra", "ep", "epoch_yr", "epocha", "obs_epoch", "ep_ra")
#: per-band magnitude columns ({band} the band's name) and their errors ({col} the magnitude column)
_BAND_PATTERNS = ("{band}", "{band}mag", "mag_{band}", "{band}_mag", "{band}c", "{band}cmag",
                  "phot_{band}_mean_mag")
_BAND_ERR_PATTERNS = ("e_{col}", "{col}_err", "err_{col}", "e{col}", "{col}err", "{col}_error", "sigma_{col}",
                      "e_{band}", "{band}_err", "err_{band}", "e{band}mag", "e_{band}mag", "{band}mag_err",
                      "magerr_{band}", "mag_{band}_err")

_CANDIDATES: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "raj2000", "_raj2000", "ra_j2000", "ra_icrs", "alpha_j2000", "alpha", "radeg", "ra_deg",
           "x_world", "ra2000"),
    "dec": ("dec", "decl", "dej2000", "_dej2000", "decj2000", "dec_j2000", "de_icrs", "dec_icrs", "delta_j2000",
            "delta", "dedeg", "dec_deg", "y_world", "dec2000", "de2000"),
    "mag": ("mag", "magnitude", "r", "rmag", "r_mag", "mag_r", "rc", "rcmag", "v", "vmag", "mag_v", "g", "gmag",
            "phot_g_mean_mag", "mag_auto"),
    "mag_err": ("mag_err", "magerr", "e_mag", "err_mag", "mag_error", "sigma_mag", "emag"),
    "name": ("name", "id", "star", "starid", "source_id", "object", "designation", "source"),
}
_ERR_PATTERNS = ("e_{}", "{}_err", "err_{}", "{}err", "e{}", "sigma_{}", "{}_error", "magerr_{}")


class RefcatError(ValueError):
    """A reference catalogue cannot be read or has unusable columns."""


class ReferenceCatalog(DBObject):
    """A reference catalogue: astrometric reference stars or photometric standard stars.

    The sources are :class:`ReferenceSource` rows (see :meth:`sources` and
    :func:`refcat_sources`); the file is the normalised FITS table.
    """

    __tablename__ = "reference_catalogs"

    name = Field(String(128), "catalogue name", index=True)
    kind = Field(String(16), "'astrometric' or 'standard'", index=True)
    n_sources = Field(Integer, "number of sources")
    source_columns = Field(JSON, "which input column became ra, dec, mag, mag_err, name")

    def sources(self) -> Table:
        """Every source of this catalogue as a table (ra, dec, mag, mag_err, name and the extra columns)."""
        if self.object_id is None:
            raise ValueError(f"{self!r} is not committed: it has no stored sources")
        return _fetch([self], ReferenceSource.catalog == self)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """Sky chart of the sources (symbol size by magnitude); returns the figure."""
        import matplotlib.pyplot as plt
        table = self.sources()
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 6))
        mag = np.asarray(table["mag"], dtype=float)
        size = 4.0 + 30.0 * np.clip((np.nanmax(mag) - mag) / max(np.nanmax(mag) - np.nanmin(mag), 1e-6), 0, 1) \
            if np.isfinite(mag).any() else 8.0
        ax.scatter(table["ra"], table["dec"], s=size, c="k", marker=".")
        ax.invert_xaxis()
        ax.set_xlabel("RA [deg]")
        ax.set_ylabel("Dec [deg]")
        ax.set_title(f"{self.kind} reference catalogue {self.name}: {len(table)} sources", fontsize=8)
        fig = fig or ax.figure
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig

    def _insert_rows(self, conn: Any) -> None:
        """Called by :func:`awe.db.commit.commit` inside its transaction: write the sources."""
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            ReferenceSource.insert(self, _row_columns(table), connection=conn)


class ReferenceSource(Rows):
    """One source of a reference catalogue (rows ordered by sky position within a catalogue)."""

    __tablename__ = "reference_sources"

    catalog = Parent("ReferenceCatalog", "the reference catalogue the source belongs to")
    ra = Field(Float, "right ascension (ICRS/J2000)", unit="deg")
    dec = Field(Float, "declination (ICRS/J2000)", unit="deg")
    mag = Field(Float, "magnitude (the catalogue's main band)", unit="mag")
    mag_err = Field(Float, "magnitude error", unit="mag")
    name = Field(String(64), "source name or id")
    ra_err = Field(Float, "error of ra, times cos(dec)", unit="arcsec")
    dec_err = Field(Float, "error of dec", unit="arcsec")
    pmra = Field(Float, "proper motion in right ascension, times cos(dec)", unit="mas/yr")
    pmdec = Field(Float, "proper motion in declination", unit="mas/yr")
    epoch = Field(Float, "epoch of the position (Julian year)", unit="yr")
    extra = Field(JSON, "the source's other columns of the input file (magnitudes, colours...)")


#: the table of the reference sources
refcat_rows = ReferenceSource.__table__


# ====================================================================== reading
def _read_table(path: Path) -> Table:
    name = path.name.lower()
    if name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")):
        fmt = "fits"
    elif name.endswith(".csv"):
        fmt = "ascii.csv"
    elif name.endswith(".ecsv"):
        fmt = "ascii.ecsv"
    else:
        fmt = "ascii"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multiple tables present, reading the first" and unit notes
            table = Table.read(path, format=fmt)
    except FileNotFoundError:
        raise RefcatError(f"{path}: no such file") from None
    except Exception as exc:  # astropy raises many kinds on malformed input
        raise RefcatError(f"{path}: cannot read it as a {fmt} table ({type(exc).__name__}: {exc})") from None
    if len(table) == 0:
        raise RefcatError(f"{path}: the table has no rows")
    return table


def _find_columns(table: Table, columns: Mapping[str, str] | None, path: Path) -> dict[str, str | None]:
    """Map ra, dec, mag, mag_err, name to the table's columns (given or auto-detected)."""
    given = dict(columns or {})
    valid = [*_CANDIDATES, "ra_err", "dec_err", "pmra", "pmra_nocos", "pmdec", "epoch"]
    unknown = set(given) - set(valid)
    if unknown:
        raise RefcatError(f"columns= has unknown key(s) {sorted(unknown)}; valid keys are {valid}")
    by_lower = {c.lower(): c for c in table.colnames}
    found: dict[str, str | None] = {}
    for role in ("ra", "dec", "mag", "name"):
        if role in given:
            if given[role] not in table.colnames:
                raise RefcatError(f"{path}: no column {given[role]!r} for {role}; the columns are {table.colnames}")
            found[role] = given[role]
        else:
            found[role] = next((by_lower[c] for c in _CANDIDATES[role] if c in by_lower), None)
    if "mag_err" in given:
        if given["mag_err"] not in table.colnames:
            raise RefcatError(f"{path}: no column {given['mag_err']!r} for mag_err; the columns are {table.colnames}")
        found["mag_err"] = given["mag_err"]
    else:
        candidates = list(_CANDIDATES["mag_err"])
        if found["mag"] is not None:
            candidates = [p.format(found["mag"].lower()) for p in _ERR_PATTERNS] + candidates
        found["mag_err"] = next((by_lower[c] for c in candidates if c in by_lower), None)
    for role in ("ra", "dec"):
        if found[role] is None:
            raise RefcatError(f"{path}: no {role.upper()} column found among {table.colnames}; "
                              f"name it with columns={{'{role}': 'YOURCOLUMN'}}")
    found.update(_find_astrometric(table.colnames, given, path))
    return found


def _find_astrometric(colnames: Sequence[str], given: Mapping[str, str], path: Path | None) -> dict[str, Any]:
    """Map ra_err, dec_err, pmra (with or without cos dec), pmdec, epoch to columns (given or found by name)."""
    by_lower = {c.lower(): c for c in colnames}

    def pick(role: str, names: Sequence[str]) -> str | None:
        if role in given:
            if given[role] not in colnames:
                raise RefcatError(f"{path}: no column {given[role]!r} for {role}; the columns are {list(colnames)}")
            return given[role]
        return next((by_lower[c] for c in names if c in by_lower), None)

    found: dict[str, Any] = {}
    for role in ("ra_err", "dec_err"):
        found[role] = pick(role, _ERR_CANDIDATES[role] + _POS_ERR)
    found["pmra"] = pick("pmra", _PMRA_COS)
    found["pmra_cosdec"] = True
    if found["pmra"] is None:
        found["pmra"] = pick("pmra_nocos", _PMRA_NOCOS)
        found["pmra_cosdec"] = found["pmra"] is None
    found["pmdec"] = pick("pmdec", _PMDEC)
    found["epoch"] = pick("epoch", _EPOCH)
    return found


def _angles(column: Any, hours: bool, what: str, path: Path) -> np.ndarray:
    """Degrees from a numeric column (degrees, or its unit) or sexagesimal strings (RA in hours)."""
    import astropy.units as u
    from astropy.coordinates import Angle

    values = column.filled(np.nan) if isinstance(column, MaskedColumn) and column.dtype.kind == "f" else column
    if values.dtype.kind in "US" or values.dtype.kind == "O":
        text = [str(v).strip() for v in values]
        if any(re.search(r"[:hdms\s]", t) for t in text if t and t != "--"):
            try:
                return np.array([Angle(t, unit=u.hourangle if hours else u.deg).deg if t and t != "--" else np.nan
                                 for t in text])
            except (ValueError, TypeError) as exc:
                raise RefcatError(f"{path}: {what} column {column.name!r} has a value that is not an angle ({exc})") \
                    from None
        try:
            return np.array([float(t) if t and t != "--" else np.nan for t in text])
        except ValueError as exc:
            raise RefcatError(f"{path}: {what} column {column.name!r} is not numeric ({exc})") from None
    degrees = np.asarray(values, dtype=np.float64)
    unit = getattr(column, "unit", None)
    if unit is not None:
        try:
            degrees = (degrees * unit).to_value(u.deg)
        except u.UnitConversionError:
            raise RefcatError(f"{path}: {what} column {column.name!r} has unit {unit}, not an angle") from None
    return degrees


def _floats(column: Any) -> np.ndarray:
    if isinstance(column, MaskedColumn):
        column = column.filled(np.nan) if column.dtype.kind in "fiu" else column
    try:
        return np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        return np.array([_to_float(v) for v in column])


def _to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _plain(value: Any) -> Any:
    """A JSON-safe Python value, or None for missing/NaN."""
    if value is None or value is np.ma.masked:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _normalise(table: Table, found: dict[str, str | None], path: Path) -> Table:
    """The table with ra, dec (deg), mag, mag_err, name first and the other columns after."""
    ra = _angles(table[found["ra"]], hours=True, what="RA", path=path)
    dec = _angles(table[found["dec"]], hours=False, what="Dec", path=path)
    good = np.isfinite(ra) & np.isfinite(dec)
    if not good.any():
        raise RefcatError(f"{path}: no source has a usable position")
    if (np.abs(dec[good]) > 90).any():
        raise RefcatError(f"{path}: Dec column {found['dec']!r} has values beyond +-90 deg; is it in degrees?")
    if (~good).any():
        log.warning("%s: %d source(s) without a position dropped", path.name, int((~good).sum()))
    n = len(table)
    out = Table()
    out["ra"] = np.mod(ra, 360.0)
    out["dec"] = dec
    out["mag"] = _floats(table[found["mag"]]) if found["mag"] else np.full(n, np.nan)
    out["mag_err"] = _floats(table[found["mag_err"]]) if found["mag_err"] else np.full(n, np.nan)
    names = [_plain(v) for v in table[found["name"]]] if found["name"] else [None] * n
    out["name"] = [str(v) if v is not None else "" for v in names]
    for role in ("ra_err", "dec_err"):
        col = found.get(role)
        default = "mas" if col and col.lower() in _GAIA_NAMES else "arcsec"
        out[role] = _quantity(table[col], default, "arcsec", path) if col else np.full(n, np.nan)
    for role in ("pmra", "pmdec"):
        col = found.get(role)
        out[role] = _quantity(table[col], "mas/yr", "mas/yr", path) if col else np.full(n, np.nan)
    if found.get("pmra") and not found.get("pmra_cosdec", True):
        out["pmra"] = out["pmra"] * np.cos(np.radians(dec))
    out["epoch"] = _epochs(table[found["epoch"]], path) if found.get("epoch") else \
        np.full(n, _header_epoch(table.meta, path))
    used = {c for c in found.values() if isinstance(c, str) and c}
    taken = {c.lower() for c in out.colnames}
    for col in table.colnames:
        if col in used or table[col].ndim > 1:
            continue
        new = col if col.lower() not in taken else f"orig_{col}"
        out[new] = table[col]
        taken.add(new.lower())
    return out[good]


def _quantity(column: Any, default_unit: str, unit: str, path: Path) -> np.ndarray:
    """A numeric column in ``unit``: from its own unit (TUNIT) when it has one, else ``default_unit``."""
    import astropy.units as u

    values = _floats(column)
    given = getattr(column, "unit", None)
    source = given if given is not None and str(given) not in ("", "-") else u.Unit(default_unit)
    try:
        return np.asarray((values * u.Unit(source)).to_value(u.Unit(unit)), dtype=np.float64)
    except (u.UnitConversionError, ValueError, TypeError):
        raise RefcatError(f"{path}: column {column.name!r} has unit {given}, which is not convertible to "
                          f"{unit}") from None


def _epochs(column: Any, path: Path) -> np.ndarray:
    """Epochs as Julian years: from years, or from JD/MJD values (recognised by their size)."""
    values = _floats(column)
    good = np.isfinite(values)
    if good.any() and np.nanmedian(values[good]) > 2.0e6:        # Julian dates
        values = 2000.0 + (values - 2451545.0) / 365.25
    elif good.any() and np.nanmedian(values[good]) > 1.0e4:      # modified Julian dates
        values = 2000.0 + (values - 51544.5) / 365.25
    if good.any() and ((values[good] < 1800) | (values[good] > 2200)).any():
        raise RefcatError(f"{path}: epoch column {column.name!r} has values outside 1800-2200 "
                          "(expected Julian years, JD or MJD)")
    return np.where(good, values, _header_epoch({}, path))


def _header_epoch(meta: Mapping[str, Any], path: Path) -> float:
    """The epoch of the positions from the file's EPOCH keyword, else J2000.0."""
    for key in ("EPOCH", "REF_EPOCH", "EPOCH_OBS"):
        value = meta.get(key)
        if value is not None:
            try:
                epoch = float(str(value).lstrip("JjBb"))
            except ValueError:
                continue
            if 1800 < epoch < 2200:
                return epoch
    return DEFAULT_EPOCH


# ====================================================================== loading
def _write_fits(table: Table, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long/hierarch column metadata
        table.write(path, format="fits", overwrite=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:48] or "catalogue"


def _row_columns(table: Table) -> dict[str, Any]:
    """The normalised table as :class:`ReferenceSource` columns: the other columns become ``extra``."""
    extra_cols = [c for c in table.colnames if c not in _MAIN + _ASTRO]
    values = [[_plain(v) for v in table[c].tolist()] for c in extra_cols]  # one list per column
    extra = np.empty(len(table), dtype=object)
    extra[:] = [({c: v for c, v in zip(extra_cols, row) if v is not None} or None) for row in zip(*values)] \
        if extra_cols else [None] * len(table)
    names = np.asarray(table["name"], dtype=str)
    columns: dict[str, Any] = {"ra": np.asarray(table["ra"], dtype=np.float64),
                               "dec": np.asarray(table["dec"], dtype=np.float64),
                               "mag": np.asarray(table["mag"], dtype=np.float64),
                               "mag_err": np.asarray(table["mag_err"], dtype=np.float64),
                               "name": np.ma.masked_array(names, mask=names == ""), "extra": extra}
    for col in _ASTRO:
        columns[col] = np.asarray(table[col], dtype=np.float64)
    return columns


def load_refcat(path: str | Path, kind: str, name: str | None = None,
                columns: Mapping[str, str] | None = None) -> ReferenceCatalog:
    """Load a reference catalogue (FITS or CSV/ASCII table) into the current project.

    Parameters
    ----------
    path : str or Path
        The table: FITS (first table extension), CSV, ECSV or any ASCII table astropy reads.
    kind : {'astrometric', 'standard'}
        What the catalogue is for.
    name : str, optional
        Catalogue name (default: the file name without its suffix).
    columns : dict, optional
        Column names for ``ra``, ``dec``, ``mag``, ``mag_err``, ``name``. Missing
        ones are found automatically (RA/RAJ2000/ALPHA_J2000..., DEC/DEJ2000/
        DELTA_J2000..., MAG/R/Rmag/V..., e_<mag>/<mag>_err..., NAME/ID...).
        Positions are degrees, or sexagesimal strings (RA in hours).

    Returns
    -------
    ReferenceCatalog
        The committed catalogue; the same catalogue loaded again into the same
        project is returned as it is.

    Raises
    ------
    RefcatError
        If the file cannot be read or has no usable RA/Dec columns.
    """
    from awe.db.commit import commit
    from awe.db.session import current_session

    if kind not in KINDS:
        raise RefcatError(f"kind must be one of {list(KINDS)}, not {kind!r}")
    path = Path(path)
    table = _read_table(path)
    found = _find_columns(table, columns, path)
    normalised = _normalise(table, found, path)
    name = name or re.sub(r"\.(fits|fit|fts|csv|ecsv|txt|dat)(\.gz)?$", "", path.name, flags=re.I)
    with tempfile.TemporaryDirectory(prefix="awe-refcat-") as tmp:
        local = Path(tmp) / "refcat.fits"
        _write_fits(normalised, local)
        key = f"|{kind}|{name}|{current_session().project.name}".encode()
        digest = hashlib.sha1(local.read_bytes() + key).hexdigest()
        filename = f"RefCat-{kind}-{_slug(name)}-{digest[:20]}.fits"
        same = list(ReferenceCatalog.filename == filename)
        if same:
            log.info("reference catalogue %s is loaded already in %s as %s", name, same[0].project, filename)
            return same[0]
        catalog = ReferenceCatalog(filename=filename, name=name, kind=kind, n_sources=len(normalised),
                                   source_columns=found)
        catalog.__dict__["_pending_rows"] = normalised
        commit([(catalog, local)])
    log.info("loaded %d %s reference sources from %s as %s", catalog.n_sources, kind, path.name, filename)
    return catalog


# ====================================================================== querying
def _visible_catalogs(kind: str, name: str | None) -> list[ReferenceCatalog]:
    """Valid catalogues of ``kind`` visible in the current context, one per content (current project first)."""
    from awe.db.session import current_session

    if kind not in KINDS:
        raise RefcatError(f"kind must be one of {list(KINDS)}, not {kind!r}")
    project = current_session().project
    query = (ReferenceCatalog.kind == kind) & (ReferenceCatalog.quality_flags == 0) & \
        (ReferenceCatalog.is_valid != 0)
    if name is not None:
        query &= ReferenceCatalog.name == name
    found = list(query)
    if not found:
        what = f"{kind} reference catalogue" + (f" named {name!r}" if name else "")
        raise LookupError(f"no {what} is visible in project {project.name}: load one with "
                          f"`awe refcat FILE --kind {kind}` (or load_refcat)")
    current = project.id
    found.sort(key=lambda c: (c.project_id != current, -(c.object_id or 0)))
    unique: dict[str | None, ReferenceCatalog] = {}
    for cat in found:
        unique.setdefault(cat.checksum or str(cat.object_id), cat)
    return list(unique.values())


def _fetch(catalogs: Sequence[ReferenceCatalog], query: RowQuery, epoch: Any = None, band: str | None = None,
           colour: str | None = None) -> Table:
    """Sources of ``catalogs`` selected by ``query`` as a table, extra columns expanded (see refcat_sources)."""
    names = {c.object_id: c.name for c in catalogs}
    rows = (query & ReferenceSource.catalog.in_(list(names))).table(["catalog_id", *_MAIN, *_ASTRO, "extra"])
    table = rows[list(_MAIN) + list(_ASTRO)]
    ids, where = np.unique(np.asarray(rows["catalog_id"]), return_inverse=True)
    table["catalog"] = np.array([names[int(i)] for i in ids], dtype=str)[where] if len(rows) else \
        np.array([], dtype=str)
    extras = list(rows["extra"])
    keys: dict[str, None] = {}
    for extra in extras:
        keys.update(dict.fromkeys(extra or {}))
    for key in keys:
        values = [(e or {}).get(key) for e in extras]
        if all(isinstance(v, (int, float)) or v is None for v in values):
            table[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            table[key] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    _fill_old_rows(table, catalogs, np.asarray(rows["catalog_id"]))
    table.meta["catalogs"] = [c.filename for c in catalogs]
    if epoch is not None:
        _propagate(table, _julian_year(epoch))
    if band is not None or colour is not None:
        _select_band(table, catalogs, band, colour)
    return table


def _fill_old_rows(table: Table, catalogs: Sequence[ReferenceCatalog], catalog_ids: np.ndarray) -> None:
    """Rows of catalogues loaded before the astrometric columns existed: take them from the extra columns.

    Such a catalogue's ``source_columns`` has no ``ra_err`` key; its errors, proper motions and epochs
    are found by name among the extra columns (arcsec, mas for Gaia names; mas/yr; J2000.0 when none).
    """
    for cat in catalogs:
        if "ra_err" in (cat.source_columns or {}):
            continue
        rows = catalog_ids == cat.object_id
        if not rows.any():
            continue
        extra = [c for c in table.colnames if c not in _MAIN + _ASTRO + ("catalog",) and table[c].dtype.kind == "f"]
        found = _find_astrometric(extra, {}, None)
        dec = np.asarray(table["dec"], dtype=float)[rows]
        for role in ("ra_err", "dec_err"):
            col = found.get(role)
            if col:
                scale = 1e-3 if col.lower() in _GAIA_NAMES else 1.0
                table[role][rows] = np.asarray(table[col], dtype=float)[rows] * scale
        for role in ("pmra", "pmdec"):
            if found.get(role):
                table[role][rows] = np.asarray(table[found[role]], dtype=float)[rows]
        if found.get("pmra") and not found.get("pmra_cosdec", True):
            table["pmra"][rows] = table["pmra"][rows] * np.cos(np.radians(dec))
        epochs = np.asarray(table[found["epoch"]], dtype=float)[rows] if found.get("epoch") else \
            np.full(int(rows.sum()), DEFAULT_EPOCH)
        table["epoch"][rows] = np.where(np.isfinite(epochs), epochs, DEFAULT_EPOCH)


def _julian_year(epoch: Any) -> float:
    """A Julian year from a float (year), an astropy Time, a datetime or an ISO date string."""
    from astropy.time import Time

    if isinstance(epoch, (int, float, np.floating, np.integer)):
        value = float(epoch)
    else:
        try:
            value = float(Time(epoch).jyear)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"epoch {epoch!r} is not a Julian year, a date or an astropy Time ({exc})") from None
    if not 1800 < value < 2200:
        raise ValueError(f"epoch {epoch!r} is not a plausible Julian year (1800-2200)")
    return value


def _propagate(table: Table, epoch: float) -> None:
    """Move ``ra``, ``dec`` by the proper motions from each row's ``epoch`` to ``epoch`` (linear, tangent plane).

    Rows without proper motions keep their positions; the table's ``meta['epoch']`` records the epoch.
    """
    pmra = np.nan_to_num(np.asarray(table["pmra"], dtype=float))
    pmdec = np.nan_to_num(np.asarray(table["pmdec"], dtype=float))
    start = np.asarray(table["epoch"], dtype=float)
    dt = np.where(np.isfinite(start), epoch - start, 0.0)
    dec = np.asarray(table["dec"], dtype=float)
    new_dec = dec + pmdec * dt / 3.6e6
    cosdec = np.maximum(np.cos(np.radians(0.5 * (dec + new_dec))), 1e-6)
    table["ra"] = np.mod(np.asarray(table["ra"], dtype=float) + pmra * dt / 3.6e6 / cosdec, 360.0)
    table["dec"] = np.clip(new_dec, -90.0, 90.0)
    table["ra"].unit = table["dec"].unit = "deg"
    table.meta["epoch"] = epoch
    moved = (pmra != 0) | (pmdec != 0)
    log.debug("reference positions moved to epoch %.3f for %d of %d sources", epoch, int(moved.sum()), len(table))


def band_columns(table: Table, band: str, main_column: str | None = None) -> tuple[str, str | None]:
    """The columns of ``table`` with the magnitudes in ``band`` and their errors.

    ``band`` (``'R'``), ``<band>mag``, ``mag_<band>``, ``phot_<band>_mean_mag``... (case-insensitive, an
    exact-case match first), or ``mag``/``mag_err`` when the catalogue's main magnitude came from such a
    column (``main_column``, from ``ReferenceCatalog.source_columns['mag']``).

    Raises
    ------
    LookupError
        If no column has magnitudes in ``band``.
    """
    names = [p.format(band=band) for p in _BAND_PATTERNS]
    exact = {c: c for c in table.colnames}
    lower = {c.lower(): c for c in table.colnames if c not in _MAIN + _ASTRO}
    column = next((exact[n] for n in names if n in exact and n not in _MAIN + _ASTRO), None) or \
        next((lower[n.lower()] for n in names if n.lower() in lower), None)
    if column is None and main_column is not None and main_column.lower() in {n.lower() for n in names}:
        return "mag", "mag_err"
    if column is None:
        raise LookupError(f"no {band} magnitudes among the columns {table.colnames}")
    errs = [p.format(col=column, band=band) for p in _BAND_ERR_PATTERNS]
    err = next((exact[n] for n in errs if n in exact), None) or \
        next((lower[n.lower()] for n in errs if n.lower() in lower), None)
    return column, err


def _select_band(table: Table, catalogs: Sequence[ReferenceCatalog], band: str | None, colour: str | None) -> None:
    """Make ``mag``/``mag_err`` the magnitudes in ``band`` and add ``colour``/``colour_err`` (e.g. ``'V-R'``)."""
    mains = {str((c.source_columns or {}).get("mag") or "") for c in catalogs} - {""}
    main = next(iter(mains)) if len(mains) == 1 else None
    what = [c.name for c in catalogs]

    def values(name: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            col, err = band_columns(table, name, main)
        except LookupError:
            raise LookupError(f"the {'/'.join(what)} reference catalogue has no {name} magnitudes (columns "
                              f"{table.colnames}): load one that has") from None
        mag = np.asarray(table[col], dtype=float)
        return mag, (np.asarray(table[err], dtype=float) if err else np.full(len(table), np.nan))

    bands: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if band is not None:
        bands[band] = values(band)
    if colour is not None:
        if "-" not in colour or colour.count("-") != 1:
            raise ValueError(f"colour must name two bands as 'V-R', not {colour!r}")
        first, second = (b.strip() for b in colour.split("-"))
        lower = {c.lower(): c for c in table.colnames}
        direct = next((lower[n.lower()] for n in (f"{first}_{second}", f"{first}-{second}", f"{first}{second}",
                                                  f"{first}minus{second}") if n.lower() in lower), None)
        if direct is not None:
            err_name = next((lower[n.lower()] for n in (f"e_{direct}", f"{direct}_err", f"e{direct}")
                             if n.lower() in lower), None)
            cvals = np.asarray(table[direct], dtype=float)
            if err_name:
                cerr = np.asarray(table[err_name], dtype=float)
            else:  # no error column of the colour: from the two bands' errors when the catalogue has them
                try:
                    (_, e1), (_, e2) = (bands[b] if b in bands else values(b) for b in (first, second))
                    cerr = np.hypot(e1, e2)
                except LookupError:
                    cerr = np.full(len(table), np.nan)
        else:
            (m1, e1), (m2, e2) = (bands[b] if b in bands else values(b) for b in (first, second))
            cvals, cerr = m1 - m2, np.hypot(e1, e2)
        table["colour"] = cvals
        table["colour_err"] = cerr
        table["colour"].unit = table["colour_err"].unit = "mag"
        table.meta["colour"] = f"{first}-{second}"
    if band is not None:
        table["mag"], table["mag_err"] = bands[band]
        table["mag"].unit = table["mag_err"].unit = "mag"
        table.meta["band"] = band


def refcat_sources(kind: str, ra: float, dec: float, radius_deg: float, name: str | None = None, *,
                   epoch: Any = None, band: str | None = None, colour: str | None = None) -> Table:
    """Reference sources within ``radius_deg`` of (``ra``, ``dec``), from the catalogues visible here.

    Parameters
    ----------
    kind : {'astrometric', 'standard'}
    ra, dec : float
        Centre [deg].
    radius_deg : float
        Search radius [deg].
    name : str, optional
        Only the catalogue of this name.
    epoch : float, astropy.time.Time, datetime or str, optional
        Move the positions by their proper motions to this epoch (a Julian year such as 2003.17, or the
        observation's DATE-OBS); ``meta['epoch']`` records it. ``None``: the catalogue's positions.
    band : str, optional
        Make ``mag`` and ``mag_err`` the magnitudes in this band (``'R'``: a column ``R``/``Rmag``/
        ``mag_R``... with its error ``e_R``/``R_err``...); ``meta['band']`` records it.
    colour : str, optional
        Add ``colour`` and ``colour_err`` [mag], e.g. ``'V-R'``: a colour column (``V_R``, ``V-R``...) or
        the difference of the two bands' magnitudes; ``meta['colour']`` records it.

    Returns
    -------
    astropy.table.Table
        ``ra``, ``dec`` [deg], ``mag``, ``mag_err`` [mag], ``name``, ``ra_err``, ``dec_err`` [arcsec],
        ``pmra`` (times cos dec), ``pmdec`` [mas/yr], ``epoch`` [yr] (of the catalogue position),
        ``catalog`` and the extra columns of the catalogue, in sky order (HEALPix) per catalogue.

    Raises
    ------
    LookupError
        If no catalogue of that kind is visible in the current context, or it lacks ``band``/``colour``.
    """
    if not radius_deg > 0:
        raise ValueError(f"radius_deg must be positive, got {radius_deg!r}")
    catalogs = _visible_catalogs(kind, name)
    return _fetch(catalogs, ReferenceSource.cone(ra, dec, radius_deg * 3600.0), epoch, band, colour)


def refcat_box(kind: str, ra_min: float, ra_max: float, dec_min: float, dec_max: float,
               name: str | None = None, *, epoch: Any = None, band: str | None = None,
               colour: str | None = None) -> Table:
    """Reference sources with ``ra_min <= ra <= ra_max`` and ``dec_min <= dec <= dec_max`` [deg].

    ``ra_min > ra_max`` means a box through RA 0 (e.g. 359.5 .. 0.5). Columns and options as
    :func:`refcat_sources` (the box selects on the catalogue positions).
    """
    if dec_min > dec_max:
        raise ValueError(f"dec_min {dec_min} is above dec_max {dec_max}")
    catalogs = _visible_catalogs(kind, name)
    return _fetch(catalogs, ReferenceSource.box(ra_min, ra_max, dec_min, dec_max), epoch, band, colour)
