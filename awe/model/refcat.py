"""Reference catalogues: astrometric reference stars and photometric standard stars.

A :class:`ReferenceCatalog` is a product like any other (a FITS table in the
data storage, a row in ``objects``, a project, a creator), and its sources are
catalogue rows (:class:`ReferenceSource`, table ``reference_sources``) with the
sky index of :mod:`awe.db.rows`, so a region is one SQL query::

    load_refcat("refcat/standards.fits", "standard")          # awe refcat FILE --kind standard
    stars = refcat_sources("standard", ra=187.28, dec=2.05, radius_deg=0.3)
    stars["ra", "dec", "mag", "name"]
    (ReferenceSource.catalog.kind == "standard") & (ReferenceSource.mag < 15)   # the query language

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
           "RefcatError", "KINDS"]

log = logging.getLogger(__name__)

#: the kinds of reference catalogue
KINDS = ("astrometric", "standard")

#: the columns every reference source has; the file's other columns go into ``extra``
_MAIN = ("ra", "dec", "mag", "mag_err", "name")

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
    unknown = set(given) - set(_CANDIDATES)
    if unknown:
        raise RefcatError(f"columns= has unknown key(s) {sorted(unknown)}; valid keys are {list(_CANDIDATES)}")
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
    used = {c for c in found.values() if c}
    taken = {c.lower() for c in out.colnames}
    for col in table.colnames:
        if col in used or table[col].ndim > 1:
            continue
        new = col if col.lower() not in taken else f"orig_{col}"
        out[new] = table[col]
        taken.add(new.lower())
    return out[good]


# ====================================================================== loading
def _write_fits(table: Table, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # long/hierarch column metadata
        table.write(path, format="fits", overwrite=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:48] or "catalogue"


def _row_columns(table: Table) -> dict[str, Any]:
    """The normalised table as :class:`ReferenceSource` columns: the other columns become ``extra``."""
    extra_cols = [c for c in table.colnames if c not in _MAIN]
    values = [[_plain(v) for v in table[c].tolist()] for c in extra_cols]  # one list per column
    extra = np.empty(len(table), dtype=object)
    extra[:] = [({c: v for c, v in zip(extra_cols, row) if v is not None} or None) for row in zip(*values)] \
        if extra_cols else [None] * len(table)
    names = np.asarray(table["name"], dtype=str)
    return {"ra": np.asarray(table["ra"], dtype=np.float64), "dec": np.asarray(table["dec"], dtype=np.float64),
            "mag": np.asarray(table["mag"], dtype=np.float64),
            "mag_err": np.asarray(table["mag_err"], dtype=np.float64),
            "name": np.ma.masked_array(names, mask=names == ""), "extra": extra}


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


def _fetch(catalogs: Sequence[ReferenceCatalog], query: RowQuery) -> Table:
    """Sources of ``catalogs`` selected by ``query`` as a table, extra columns expanded."""
    names = {c.object_id: c.name for c in catalogs}
    rows = (query & ReferenceSource.catalog.in_(list(names))).table(["catalog_id", *_MAIN, "extra"])
    table = rows[list(_MAIN)]
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
    table.meta["catalogs"] = [c.filename for c in catalogs]
    return table


def refcat_sources(kind: str, ra: float, dec: float, radius_deg: float, name: str | None = None) -> Table:
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

    Returns
    -------
    astropy.table.Table
        ``ra``, ``dec`` [deg], ``mag``, ``mag_err`` [mag], ``name``, ``catalog``
        and the extra columns of the catalogue, in sky order (HEALPix) per catalogue.

    Raises
    ------
    LookupError
        If no catalogue of that kind is visible in the current context.
    """
    if not radius_deg > 0:
        raise ValueError(f"radius_deg must be positive, got {radius_deg!r}")
    catalogs = _visible_catalogs(kind, name)
    return _fetch(catalogs, ReferenceSource.cone(ra, dec, radius_deg * 3600.0))


def refcat_box(kind: str, ra_min: float, ra_max: float, dec_min: float, dec_max: float,
               name: str | None = None) -> Table:
    """Reference sources with ``ra_min <= ra <= ra_max`` and ``dec_min <= dec <= dec_max`` [deg].

    ``ra_min > ra_max`` means a box through RA 0 (e.g. 359.5 .. 0.5). Columns as
    :func:`refcat_sources`.
    """
    if dec_min > dec_max:
        raise ValueError(f"dec_min {dec_min} is above dec_max {dec_max}")
    catalogs = _visible_catalogs(kind, name)
    return _fetch(catalogs, ReferenceSource.box(ra_min, ra_max, dec_min, dec_max))
