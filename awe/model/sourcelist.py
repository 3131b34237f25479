"""Source lists and associations (spec section 10: SourceListTask, AssociateListTask).

* :class:`SourceList`: the sources extracted from one image product (a reduced frame, a regridded frame, a
  coadd: anything with pixels, a weight map, a WCS and a zero point), one :class:`Source` catalogue row per
  source. ``SLID`` is the list's identifier (its ``object_id``), which every row carries too, so the spec's
  queries work as written::

      sl = ((SourceList.OBJECT == '3C273') & (SourceList.chip.name == 'ccd50')).max('creation_date')
      q = (Source.SLID == sl.SLID) & (Source.MAG_AUTO < 22)
      sl.cone(187.28, 2.05, 30.0).table()          # RA, Dec [deg], radius [arcsec]
      sl.table(); sl.write('sl.fits' | 'sl.parquet' | 'sl.vot')
      sl.stamps(ra, dec, 20.0)                      # cut-outs through the lineage (awe.model.stamps)

* :class:`AssociateList`: sources of two or more source lists (or associate lists) matched one-to-one on the
  sky, one :class:`Association` row per member (``AID``, ``SLID``, ``SID``, ``distance``).

Columns follow SExtractor's names and awe's units: positions in degrees, position errors, sizes and FWHM in
arcsec, ``X``/``Y`` in 0-based pixels of the image, fluxes in ADU of the image, magnitudes on the list's
``zeropoint`` (``MAG = -2.5 log10(FLUX) + zeropoint``; NaN when the flux is not positive), ``THETA`` in degrees
counter-clockwise from +x, ``FLAGS`` SExtractor's bits (1 neighbours/blended, 2 deblended, 4 saturated,
8 truncated, 16 bad pixels in the aperture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from astropy.table import Table

from awe.db.persistent import JSON, DateTime, Field, Float, Input, Inputs, Integer, Ref, String
from awe.db.rows import Parent, Rows
from awe.db.schema import DBObject
from awe.pars import Param, ParamGroup

__all__ = ["SourceList", "Source", "AssociateList", "Association", "SourceListParams", "AssociateListParams",
           "N_APERTURES", "write_table", "read_table", "image_wcs"]

#: number of circular apertures of a source list (columns FLUX_APER_1 .. FLUX_APER_3)
N_APERTURES = 3


class _IdAlias:
    """``SourceList.SLID``: the object id under the spec's name, on the class (a query attribute) and objects."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: type) -> Any:
        if obj is None:
            return cls.object_id  # type: ignore[attr-defined]
        return obj.object_id


# ---------------------------------------------------------------------------- parameters
class SourceListParams(ParamGroup):
    """``SourceList.process_params``: detection, measurement and the zero point."""

    DETECT_THRESHOLD = Param(1.5, "detection threshold, per pixel of the filtered image (SExtractor's "
                                  "DETECT_THRESH)", unit="sigma")
    MINAREA = Param(0, "fewest pixels of a source; 0: 3 when the stars' FWHM is below 2 pixels, else 5",
                    unit="pixel")
    DEBLEND_MINCONT = Param(0.005, "minimum contrast of a deblended component (SExtractor's DEBLEND_MINCONT)")
    APERTURE_DIAMETERS = Param([3.0, 6.0, 12.0], f"diameters of the {N_APERTURES} circular apertures "
                               "(FLUX_APER_1..3)", unit="arcsec")
    MAG_ZEROPOINT = Param(0.0, "zero point used when the image has none and no PhotometricParameters cover it "
                               "(0: instrumental magnitudes of 1 ADU)", unit="mag")
    STELLARITY_SNR = Param(30.0, "the stars that calibrate CLASS_STAR (the PSF's half-light radius): S/N above "
                                 "this, unflagged")


class AssociateListParams(ParamGroup):
    """``AssociateList.process_params``: the matching radius."""

    SEARCH_DISTANCE = Param(1.0, "two sources are associated when they are closer than this (one-to-one, the "
                                 "nearest first)", unit="arcsec")


# ---------------------------------------------------------------------------- source lists
class SourceList(DBObject):
    """The sources of one image product (rows: :class:`Source`); no file of its own (``write`` exports).

    ``image`` is the lineage role of the image the sources come from; ``chip`` is None for an image of
    several chips (a coadd).
    """

    __tablename__ = "source_lists"

    parameter_groups = {"process_params": SourceListParams}

    image = Input("DBObject", "the image the sources were extracted from (reduced, regridded or coadded frame)")
    weight = Input("DBObject", "its weight map (weight 0: never detected)", optional=True)
    astrometry = Inputs("DBObject", "the astrometric solution the sky positions come from (none: the image's "
                                    "header WCS)", optional=True)
    photometry = Inputs("DBObject", "the photometric calibration the zero point comes from (none: the image's own "
                                    "zero point, or MAG_ZEROPOINT)", optional=True)

    SLID = _IdAlias()

    instrument = Ref("Instrument", "instrument")
    chip = Ref("Chip", "chip (CCD); None for an image of several chips (a coadd)")
    filter = Ref("Filter", "filter")
    OBJECT = Field(String(80), "target name of the image", index=True)
    DATE_OBS = Field(DateTime, "start of the (first) exposure (UTC)", index=True)
    n_sources = Field(Integer, "number of sources (rows)")
    aperture_diameters = Field(JSON, "diameters of the apertures FLUX_APER_1.. [arcsec]")
    zeropoint = Field(Float, "zero point of the magnitudes: MAG = -2.5 log10(FLUX [ADU]) + zeropoint [mag]")
    zeropoint_source = Field(String(255), "where the zero point came from: the image's 'zeropoint', the "
                                          "PhotometricParameters (file) with the airmass and exposure time, or "
                                          "'MAG_ZEROPOINT'")
    detection = Field(JSON, "detection parameters: threshold [sigma], minarea [pix], deblend_mincont, "
                            "saturation [ADU], background and rms [ADU]")
    pixel_scale = Field(Float, "pixel scale of the image [arcsec]")
    wcs_source = Field(String(255), "the astrometric solution of the sky positions (class and file, or 'header')")
    psf_flux_radius = Field(Float, "half-light radius of the image's stars (CLASS_STAR's reference) [arcsec]")
    n_psf_stars = Field(Integer, "stars the PSF's half-light radius was measured on")
    mag_limit = Field(Float, "magnitude of a point source at S/N 5 (the median of the sources' AUTO errors) [mag]")

    # ------------------------------------------------------------------ rows
    def table(self) -> Table:
        """The sources (the :class:`Source` rows, by SID) as an astropy Table with units."""
        if self.object_id is None:
            pending = self.__dict__.get("_pending_rows")
            if pending is None:
                raise ValueError(f"{self!r} is not committed and has no sources")
            return Table(pending)
        query: Any = Source.of(self).order_by("SID")
        return query.table()

    sources = table

    def cone(self, ra: float, dec: float, radius_arcsec: Any) -> Any:
        """The sources within ``radius_arcsec`` of (``ra``, ``dec``) [deg] (a row query: ``.table()``, len)."""
        return Source.cone(ra, dec, radius_arcsec) & (Source.SLID == self.object_id)

    def write(self, path: str | Path, overwrite: bool = True) -> Path:
        """The sources to ``x.fits``, ``x.parquet`` or ``x.vot``/``x.xml`` (units and the list's identity kept)."""
        table = self.table()
        table.meta.update({"SLID": self.object_id, "OBJECT": self.OBJECT or "", "FILENAME": self.filename or "",
                           "MAGZERO": self.zeropoint})
        return write_table(table, path, overwrite=overwrite)

    def stamps(self, ra: float, dec: float, size_arcsec: float = 20.0) -> list[Any]:
        """Cut-outs around (``ra``, ``dec``) of every image that contributed to this list (``awe.model.stamps``)."""
        from awe.model.stamps import stamps
        return stamps(self.image, ra, dec, size_arcsec)

    def inspect(self, ax: Any = None, path: str | Path | None = None) -> Any:
        """MAG_AUTO against the half-light radius (stars: the vertical locus), coloured by CLASS_STAR."""
        import matplotlib.pyplot as plt
        table = self.table()
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 4.5))
        sc = ax.scatter(table["FLUX_RADIUS"], table["MAG_AUTO"], c=table["CLASS_STAR"], s=6, cmap="coolwarm_r",
                        vmin=0, vmax=1)
        ax.invert_yaxis()
        ax.set_xlabel("FLUX_RADIUS [arcsec]")
        ax.set_ylabel("MAG_AUTO [mag]")
        ax.figure.colorbar(sc, ax=ax, label="CLASS_STAR")
        ax.set_title(f"SLID {self.object_id}: {len(table)} sources of {self.OBJECT}\n{self.filename}", fontsize=7)
        fig = fig or ax.figure
        if path is not None:
            fig.savefig(path, dpi=90)
        return fig

    def _insert_rows(self, conn: Any) -> None:
        """Called by :func:`awe.db.commit.commit` inside its transaction: the rows, with this list's SLID."""
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            table = Table(table)
            table["SLID"] = np.full(len(table), self.object_id, dtype=np.int64)
            Source.insert(self, table, connection=conn)


class Source(Rows):
    """One source of a :class:`SourceList` (SExtractor's columns; see the module for units)."""

    __tablename__ = "sources"
    __position__ = ("RA", "DEC")

    sourcelist = Parent("SourceList", "the source list")
    SLID = Field(Integer, "the source list's identifier (SourceList.SLID)", index=True)
    SID = Field(Integer, "the source's number in its list (1.., brightest first)")
    RA = Field(Float, "right ascension (ICRS)", unit="deg")
    DEC = Field(Float, "declination (ICRS)", unit="deg")
    RA_ERR = Field(Float, "error of RA (times cos Dec)", unit="arcsec")
    DEC_ERR = Field(Float, "error of DEC", unit="arcsec")
    X = Field(Float, "position on the image, x (0-based)", unit="pix")
    Y = Field(Float, "position on the image, y (0-based)", unit="pix")
    X_ERR = Field(Float, "error of X", unit="pix")
    Y_ERR = Field(Float, "error of Y", unit="pix")
    FLUX_APER_1 = Field(Float, "flux in aperture 1 (SourceList.aperture_diameters[0])", unit="adu")
    FLUXERR_APER_1 = Field(Float, "its error", unit="adu")
    MAG_APER_1 = Field(Float, "magnitude in aperture 1", unit="mag")
    MAGERR_APER_1 = Field(Float, "its error", unit="mag")
    FLUX_APER_2 = Field(Float, "flux in aperture 2", unit="adu")
    FLUXERR_APER_2 = Field(Float, "its error", unit="adu")
    MAG_APER_2 = Field(Float, "magnitude in aperture 2", unit="mag")
    MAGERR_APER_2 = Field(Float, "its error", unit="mag")
    FLUX_APER_3 = Field(Float, "flux in aperture 3", unit="adu")
    FLUXERR_APER_3 = Field(Float, "its error", unit="adu")
    MAG_APER_3 = Field(Float, "magnitude in aperture 3", unit="mag")
    MAGERR_APER_3 = Field(Float, "its error", unit="mag")
    FLUX_AUTO = Field(Float, "flux in the Kron aperture (2.5 Kron radii)", unit="adu")
    FLUXERR_AUTO = Field(Float, "its error", unit="adu")
    MAG_AUTO = Field(Float, "magnitude in the Kron aperture", unit="mag", index=True)
    MAGERR_AUTO = Field(Float, "its error", unit="mag")
    SNR = Field(Float, "FLUX_AUTO / FLUXERR_AUTO")
    BACKGROUND = Field(Float, "sky level at the source", unit="adu")
    A = Field(Float, "semi-major axis (isophotal second moments)", unit="arcsec")
    B = Field(Float, "semi-minor axis", unit="arcsec")
    THETA = Field(Float, "position angle of A, counter-clockwise from +x", unit="deg")
    ELLIPTICITY = Field(Float, "1 - B / A")
    FWHM = Field(Float, "FWHM (twice the half-light radius)", unit="arcsec")
    FLUX_RADIUS = Field(Float, "half-light radius", unit="arcsec")
    CLASS_STAR = Field(Float, "stellarity: 1 a point source, 0 extended, 0.5 cannot tell")
    FLAGS = Field(Integer, "SExtractor's flags (1 blended, 2 deblended, 4 saturated, 8 truncated, 16 bad pixels)")


# sorted pages of one list (the web's sources table, keyset pages by MAG_AUTO): one index range per page
sa.Index("ix_sources_sourcelist_id_MAG_AUTO_row_id", Source.__table__.c.sourcelist_id, Source.__table__.c.MAG_AUTO,
         Source.__table__.c.row_id)


# ---------------------------------------------------------------------------- associations
class AssociateList(DBObject):
    """Sources of several lists associated one-to-one on the sky (rows: :class:`Association`).

    An association (``AID``) has at most one member per input source list; ``n_matched`` associations have
    members of two lists or more, ``n_single`` one only.
    """

    __tablename__ = "associate_lists"

    parameter_groups = {"process_params": AssociateListParams}

    sourcelists = Inputs("SourceList", "the source lists associated (those of the associate lists included)")
    associatelists = Inputs("AssociateList", "the associate lists extended", optional=True)

    ALID = _IdAlias()

    OBJECT = Field(String(80), "target name of the first list", index=True)
    filter = Ref("Filter", "filter of the first list")
    n_lists = Field(Integer, "number of source lists")
    search_distance = Field(Float, "largest distance of two associated sources [arcsec]")
    n_associations = Field(Integer, "number of associations (AIDs)")
    n_matched = Field(Integer, "associations with members of two lists or more")
    n_single = Field(Integer, "associations with one member")
    n_members = Field(Integer, "rows (members of all associations)")

    def table(self) -> Table:
        """The members (the :class:`Association` rows, by AID then SLID) as an astropy Table."""
        if self.object_id is None:
            pending = self.__dict__.get("_pending_rows")
            if pending is None:
                raise ValueError(f"{self!r} is not committed and has no rows")
            return Table(pending)
        query: Any = Association.of(self).order_by("AID", "SLID")
        return query.table()

    def pairs(self, slid1: int, slid2: int) -> Table:
        """The associations with a member in both lists: AID, SID_1, SID_2, distance [arcsec]."""
        table = self.table()
        aid = np.asarray(table["AID"])
        slid = np.asarray(table["SLID"])
        one = {int(a): i for i, a in enumerate(aid) if slid[i] == slid1}
        two = {int(a): i for i, a in enumerate(aid) if slid[i] == slid2}
        common = sorted(set(one) & set(two))
        ra1 = np.radians(np.asarray(table["RA"], float))
        dec1 = np.radians(np.asarray(table["DEC"], float))
        i1 = np.array([one[a] for a in common], dtype=int)
        i2 = np.array([two[a] for a in common], dtype=int)
        from awe.db.rows import _separation_deg
        dist = _separation_deg(np.degrees(ra1[i1]), np.degrees(dec1[i1]), np.degrees(ra1[i2]),
                               np.degrees(dec1[i2])) * 3600.0 if common else np.zeros(0)
        return Table({"AID": np.array(common, dtype=np.int64), "SID_1": np.asarray(table["SID"])[i1],
                      "SID_2": np.asarray(table["SID"])[i2], "distance": dist}, units={"distance": "arcsec"})

    def write(self, path: str | Path, overwrite: bool = True) -> Path:
        """The members to ``x.fits``, ``x.parquet`` or ``x.vot``."""
        table = self.table()
        table.meta.update({"ALID": self.object_id, "OBJECT": self.OBJECT or ""})
        return write_table(table, path, overwrite=overwrite)

    def _insert_rows(self, conn: Any) -> None:
        table = self.__dict__.pop("_pending_rows", None)
        if table is not None:
            Association.insert(self, table, connection=conn)


class Association(Rows):
    """One member of an association: which source (SLID, SID) of which association (AID)."""

    __tablename__ = "associations"
    __position__ = ("RA", "DEC")

    associatelist = Parent("AssociateList", "the associate list")
    AID = Field(Integer, "the association's number in its list (1..)", index=True)
    SLID = Field(Integer, "the member's source list (SourceList.SLID)", index=True)
    SID = Field(Integer, "the member's source (Source.SID in that list)")
    RA = Field(Float, "the member's right ascension", unit="deg")
    DEC = Field(Float, "the member's declination", unit="deg")
    distance = Field(Float, "distance to the association's position when it was matched (0: its first member)",
                     unit="arcsec")


# ---------------------------------------------------------------------------- the WCS of an image
def image_wcs(image: Any) -> tuple[Any, Any, str]:
    """The WCS of an image product: (astropy WCS, the solution product or None, a description)."""
    from awe.model.astrometry import best_wcs, header_wcs
    from awe.model.science import ReducedScienceFrame
    from awe.model.regrid import _GridImage
    if isinstance(image, ReducedScienceFrame):
        wcs, solution = best_wcs(image)
    elif isinstance(image, _GridImage):  # a regridded frame, a coadd: its grid's WCS moved by its offset
        if image.grid is None:
            raise ValueError(f"{getattr(image, 'filename', image)}: its RegridGrid is not visible")
        return image.wcs(), None, (f"RegridGrid {image.grid.object_id} at offset ({int(image.grid_x0)}, "
                                   f"{int(image.grid_y0)})")
    else:
        best = getattr(image, "best_wcs", None)
        if callable(best):
            wcs, solution = best()
        else:
            wcs, solution = header_wcs(image), None
    what = f"{type(solution).__name__} {solution.filename}" if solution is not None else "header"
    return wcs, solution, what


# ---------------------------------------------------------------------------- export
def write_table(table: Table, path: str | Path, overwrite: bool = True) -> Path:
    """Write ``table`` by the file's suffix: FITS (``.fits``, ``.fit``), Parquet (``.parquet``, pyarrow) or a
    VOTable (``.vot``, ``.xml``); units are kept. Other suffixes raise ``ValueError`` naming the choices."""
    path = Path(path)
    suffix = path.suffix.lower()
    formats = {".fits": "fits", ".fit": "fits", ".parquet": "parquet", ".vot": "votable", ".xml": "votable"}
    if suffix not in formats:
        raise ValueError(f"{path}: write a source list to .fits, .parquet or .vot (not {suffix or 'no suffix'!r})")
    out = Table(table, copy=True)
    for name in out.colnames:
        if isinstance(out[name], np.ma.MaskedArray) and out[name].dtype.kind in "iu":
            out[name] = out[name].filled(-1)
    if formats[suffix] == "votable":
        out.meta = {k: v for k, v in out.meta.items() if v is not None}
        for name in out.colnames:  # VOTable descriptions must be plain text
            out[name].description = out[name].description or ""
    elif formats[suffix] == "fits":
        out.meta = {k: v for k, v in out.meta.items() if v is not None}
    out.write(path, format=formats[suffix], overwrite=overwrite)
    return path


def read_table(path: str | Path) -> Table:
    """Read a table written by :func:`write_table` (FITS, Parquet, VOTable), units included.

    Parquet is read with pyarrow alone (astropy's reader needs pandas): the columns, then the units and
    descriptions astropy stored in the file's ``table_meta_yaml`` metadata.
    """
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        return Table.read(path)
    import pyarrow.parquet as pq
    from astropy.table.meta import get_header_from_yaml

    stored = pq.read_table(path)
    table = Table({name: stored.column(name).to_numpy() for name in stored.column_names})
    metadata = stored.schema.metadata or {}
    yaml = metadata.get(b"table_meta_yaml")
    if yaml:
        header = get_header_from_yaml(yaml.decode("utf-8").splitlines())
        for col in header.get("datatype", []):
            name = col.get("name")
            if name in table.colnames:
                if col.get("unit"):
                    table[name].unit = col["unit"]
                if col.get("description"):
                    table[name].description = col["description"]
        table.meta.update(header.get("meta", {}))
    return table
