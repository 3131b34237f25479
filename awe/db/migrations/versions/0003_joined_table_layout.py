"""Joined-table layout: common columns stay in ``objects``, each product family gets its own table.

Up to 0002 every product's attributes were columns of the one ``objects``
table, merged by name (``read_noise`` held a master bias's noise in ADU and a
reduced frame's in electrons). Now ``objects`` keeps what every product has
(file name, project, creator, dates, flags, provenance, validity) and each
family of classes has a table of its own columns keyed by ``object_id``:
:data:`FAMILIES` says which classes' rows each table gets. The data are copied
(``read_noise`` of master biases becomes ``bias_frames.read_noise_adu``, a
master flat's ``smoothing_scale`` ``flat_frames.smoothing_scale_pix``) and the
moved columns dropped from ``objects``. The downgrade copies them back.

The create_table operations were written by ``python -m awe.db.migrations.autogen``;
the data copy and the downgrade by hand.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_RAW = ["RawBiasFrame", "RawDomeFlatFrame", "RawTwilightFlatFrame", "RawScienceFrame", "RawStandardFrame"]
_FLATS = ["DomeFlatFrame", "TwilightFlatFrame", "MasterFlatFrame"]
_CALIBRATIONS = ["BiasFrame", "HotPixelMap", "ColdPixelMap", *_FLATS, "IlluminationCorrection"]
_SCIENCE = ["ReducedScienceFrame", "WeightFrame", "SatelliteMap"]

#: family table -> the classes whose rows it holds (as of this revision), parents before children
FAMILIES = {
    "frames": _RAW + _CALIBRATIONS + _SCIENCE,
    "raw_frames": _RAW,
    "calibration_frames": _CALIBRATIONS,
    "bias_frames": ["BiasFrame"],
    "pixel_maps": ["HotPixelMap", "ColdPixelMap"],
    "flat_frames": _FLATS,
    "illumination_corrections": ["IlluminationCorrection"],
    "reduced_frames": ["ReducedScienceFrame"],
    "weight_frames": ["WeightFrame"],
    "satellite_maps": ["SatelliteMap"],
    "reference_catalogs": ["ReferenceCatalog"],
}
#: (family table, its column) -> the column of ``objects`` it was before (where the name changed)
RENAMED = {("bias_frames", "read_noise_adu"): "read_noise", ("flat_frames", "smoothing_scale_pix"): "smoothing_scale"}
#: the columns of ``objects`` at 0002, in order (what the downgrade gives back)
OBJECTS_0002 = [
    'object_id', 'class_name', 'filename', 'project_id', 'creator', 'creation_date', 'quality_flags',
    'is_valid', 'process_params', 'software_version', 'provenance', 'checksum', 'timestamp_start',
    'timestamp_end', 'instrument_id', 'chip_id', 'filter_id', 'OBJECT', 'DATE_OBS', 'MJD_OBS', 'EXPTIME',
    'AIRMASS', 'RA', 'DEC', 'NAXIS1', 'NAXIS2', 'imstat_mean', 'imstat_median', 'imstat_stdev', 'imstat_min',
    'imstat_max', 'raw_file', 'extension', 'DPR_TYPE', 'gain', 'nframes', 'overscan_correction',
    'n_bad_pixels', 'bad_fraction', 'bad_columns', 'level', 'levels', 'n_rejected', 'flat_stdev', 'flatness',
    'large_scale_rms', 'read_noise', 'clipped_mean', 'clipped_stdev', 'stdev_difference', 'subwin_flatness',
    'subwin_stdev', 'threshold', 'smoothing_scale', 'name', 'kind', 'n_sources', 'source_columns',
    'background', 'background_rms', 'psf_radius', 'seeing', 'n_stars_seeing', 'n_cosmic_pixels',
    'n_satellite_tracks', 'n_saturated_pixels', 'n_zero_weight', 'zero_weight_fraction', 'n_tracks',
    'n_track_pixels', 'tracks', 'fit_degree', 'fit_coefficients', 'fit_rms', 'qc_report',
]
#: indexes of ``objects`` 0002 had on columns that move
OLD_INDEXES = ["DATE_OBS", "MJD_OBS", "OBJECT", "chip_id", "filter_id", "instrument_id", "kind", "name", "raw_file"]


def _columns(table: str) -> list[str]:
    return [c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)]


def _pairs(family: str, objects_columns: set[str]) -> list[tuple[str, str]]:
    """(family column, objects column) of the values to move (columns new in this revision stay empty)."""
    pairs = []
    for column in _columns(family):
        old = RENAMED.get((family, column), column)
        if column != "object_id" and old in objects_columns:
            pairs.append((column, old))
    return pairs


def _quote(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote(name)


def upgrade() -> None:

    op.create_table('bias_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('read_noise_adu', sa.Float(), nullable=True, comment='read noise from bias pairs [ADU] (ReducedScienceFrame.read_noise is in e-)'),
    sa.Column('n_rejected', sa.Integer(), nullable=True, comment='values clipped while combining (cosmic rays)'),
    sa.Column('clipped_mean', sa.Float(), nullable=True, comment='sigma-clipped mean of the master bias [ADU] (QC MAXIMUM_ABS_MEAN)'),
    sa.Column('clipped_stdev', sa.Float(), nullable=True, comment='sigma-clipped standard deviation of the master bias [ADU] (QC MAXIMUM_STDEV)'),
    sa.Column('stdev_difference', sa.Float(), nullable=True, comment='standard deviation of this minus the previous valid master bias, the defects of both left out [ADU] (QC MAXIMUM_STDEV_DIFFERENCE; None without a previous one)'),
    sa.Column('subwin_flatness', sa.Float(), nullable=True, comment='max - min of 4 x 4 sub-window medians [ADU] (QC MAXIMUM_SUBWIN_FLATNESS)'),
    sa.Column('subwin_stdev', sa.Float(), nullable=True, comment='largest sub-window standard deviation [ADU] (QC MAXIMUM_SUBWIN_STDEV)'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_bias_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_bias_frames'))
    )
    op.create_table('calibration_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('nframes', sa.Integer(), nullable=True, comment='number of raw frames combined'),
    sa.Column('overscan_correction', sa.Integer(), nullable=True, comment='overscan correction method (OVERSCAN_CORRECTION) of the raw frames'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_calibration_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_calibration_frames'))
    )
    op.create_table('flat_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('level', sa.Float(), nullable=True, comment='mean de-biased median level of the raw flats combined [ADU]'),
    sa.Column('levels', sa.JSON(), nullable=True, comment='de-biased median level of each raw flat [ADU], in input order'),
    sa.Column('n_rejected', sa.Integer(), nullable=True, comment='values clipped while combining (cosmic rays, stars)'),
    sa.Column('flat_stdev', sa.Float(), nullable=True, comment='standard deviation of the normalised flat (bad pixels excluded)'),
    sa.Column('flatness', sa.Float(), nullable=True, comment='max - min of the 4 x 4 sub-window medians of the normalised flat'),
    sa.Column('large_scale_rms', sa.Float(), nullable=True, comment='rms of the large-scale structure of the normalised flat'),
    sa.Column('gain', sa.Float(), nullable=True, comment='gain from flat/bias pairs [e-/ADU] (None when it could not be measured)'),
    sa.Column('smoothing_scale_pix', sa.Integer(), nullable=True, comment='smoothing scale used [pixels of this frame]'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_flat_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_flat_frames'))
    )
    op.create_table('frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('instrument_id', sa.Integer(), nullable=True, comment='instrument'),
    sa.Column('chip_id', sa.Integer(), nullable=True, comment='chip (CCD)'),
    sa.Column('filter_id', sa.Integer(), nullable=True, comment='filter'),
    sa.Column('OBJECT', sa.String(length=80), nullable=True, comment='target name from the header'),
    sa.Column('DATE_OBS', sa.DateTime(), nullable=True, comment='start of the exposure (UTC)'),
    sa.Column('MJD_OBS', sa.Float(), nullable=True, comment='modified Julian date of the start of the exposure'),
    sa.Column('EXPTIME', sa.Float(), nullable=True, comment='exposure time [s]'),
    sa.Column('AIRMASS', sa.Float(), nullable=True, comment='airmass at the start of the exposure'),
    sa.Column('RA', sa.Float(), nullable=True, comment='telescope pointing right ascension [deg]'),
    sa.Column('DEC', sa.Float(), nullable=True, comment='telescope pointing declination [deg]'),
    sa.Column('NAXIS1', sa.Integer(), nullable=True, comment='image width [pixels]'),
    sa.Column('NAXIS2', sa.Integer(), nullable=True, comment='image height [pixels]'),
    sa.Column('imstat_mean', sa.Float(), nullable=True, comment='mean of the data area [ADU]'),
    sa.Column('imstat_median', sa.Float(), nullable=True, comment='median of the data area [ADU]'),
    sa.Column('imstat_stdev', sa.Float(), nullable=True, comment='stdev of the data area [ADU]'),
    sa.Column('imstat_min', sa.Float(), nullable=True, comment='min of the data area [ADU]'),
    sa.Column('imstat_max', sa.Float(), nullable=True, comment='max of the data area [ADU]'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_frames'))
    )
    with op.batch_alter_table('frames', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_frames_DATE_OBS'), ['DATE_OBS'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_MJD_OBS'), ['MJD_OBS'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_OBJECT'), ['OBJECT'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_chip_id'), ['chip_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_filter_id'), ['filter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_frames_instrument_id'), ['instrument_id'], unique=False)

    op.create_table('illumination_corrections',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('fit_degree', sa.Integer(), nullable=True, comment='degree of the 2-D polynomial'),
    sa.Column('fit_coefficients', sa.JSON(), nullable=True, comment='coefficients c[i][j] of u**i v**j (u, v: pixel coordinates scaled to -1..1)'),
    sa.Column('fit_rms', sa.Float(), nullable=True, comment='rms of the fit residuals [fraction]'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_illumination_corrections_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_illumination_corrections'))
    )
    op.create_table('pixel_maps',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('n_bad_pixels', sa.Integer(), nullable=True, comment='number of pixels flagged'),
    sa.Column('bad_fraction', sa.Float(), nullable=True, comment='fraction of pixels flagged'),
    sa.Column('bad_columns', sa.JSON(), nullable=True, comment='0-based (trimmed grid) columns with a flagged run (hot: from a defect to one end; cold: the bad runs, or the whole column when most of it is bad)'),
    sa.Column('threshold', sa.Float(), nullable=True, comment='excess above the local bias level beyond which a pixel is hot [ADU]'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_pixel_maps_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_pixel_maps'))
    )
    op.create_table('raw_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('raw_file', sa.String(length=255), nullable=True, comment='original raw MEF file name'),
    sa.Column('extension', sa.Integer(), nullable=True, comment='extension number in the raw MEF file'),
    sa.Column('DPR_TYPE', sa.String(length=32), nullable=True, comment='HIERARCH ESO DPR TYPE'),
    sa.Column('gain', sa.Float(), nullable=True, comment='gain from the header [e-/ADU]'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_raw_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_raw_frames'))
    )
    with op.batch_alter_table('raw_frames', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_raw_frames_raw_file'), ['raw_file'], unique=False)

    op.create_table('reduced_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('overscan_correction', sa.Integer(), nullable=True, comment='overscan correction method used'),
    sa.Column('gain', sa.Float(), nullable=True, comment='gain [e-/ADU]'),
    sa.Column('read_noise', sa.Float(), nullable=True, comment='read noise used for the noise model [e-]'),
    sa.Column('background', sa.Float(), nullable=True, comment='sky background level (mesh estimate, sources masked) [ADU]'),
    sa.Column('background_rms', sa.Float(), nullable=True, comment='sky noise [ADU]'),
    sa.Column('psf_radius', sa.Float(), nullable=True, comment='PSF radius: median half-light radius of the stars [arcsec]'),
    sa.Column('seeing', sa.Float(), nullable=True, comment='median FWHM of the stars [arcsec]'),
    sa.Column('seeing_error', sa.Float(), nullable=True, comment='standard error of the seeing (bootstrap over the fitted stars) [arcsec]'),
    sa.Column('seeing_reliable', sa.Boolean(), nullable=True, comment='False when the seeing is uncertain: its error exceeds SEEING_MAX_ERROR of it, or the stars may have been mistaken for compact galaxies'),
    sa.Column('n_stars_seeing', sa.Integer(), nullable=True, comment='number of stars the seeing was measured on'),
    sa.Column('n_cosmic_pixels', sa.Integer(), nullable=True, comment='pixels flagged as cosmic rays'),
    sa.Column('n_satellite_tracks', sa.Integer(), nullable=True, comment='satellite tracks found'),
    sa.Column('n_saturated_pixels', sa.Integer(), nullable=True, comment='saturated pixels'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_reduced_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_reduced_frames'))
    )
    op.create_table('reference_catalogs',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=True, comment='catalogue name'),
    sa.Column('kind', sa.String(length=16), nullable=True, comment="'astrometric' or 'standard'"),
    sa.Column('n_sources', sa.Integer(), nullable=True, comment='number of sources'),
    sa.Column('source_columns', sa.JSON(), nullable=True, comment='which input column became ra, dec, mag, mag_err, name'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_reference_catalogs_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_reference_catalogs'))
    )
    with op.batch_alter_table('reference_catalogs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reference_catalogs_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_reference_catalogs_name'), ['name'], unique=False)

    op.create_table('satellite_maps',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('n_tracks', sa.Integer(), nullable=True, comment='number of tracks found (followed ones included)'),
    sa.Column('n_followed_tracks', sa.Integer(), nullable=True, comment='tracks found by following those of other chips (mosaic pass)'),
    sa.Column('n_track_pixels', sa.Integer(), nullable=True, comment='pixels masked on tracks'),
    sa.Column('tracks', sa.JSON(), nullable=True, comment='track parameters: rho, theta, width, length, peak, n_pixels, x0, y0, x1, y1 (and for a followed track, followed_from: the chips it was followed from)'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_satellite_maps_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_satellite_maps'))
    )
    op.create_table('weight_frames',
    sa.Column('object_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('n_zero_weight', sa.Integer(), nullable=True, comment='pixels with weight 0'),
    sa.Column('zero_weight_fraction', sa.Float(), nullable=True, comment='fraction of pixels with weight 0'),
    sa.ForeignKeyConstraint(['object_id'], ['objects.object_id'], name=op.f('fk_weight_frames_object_id_objects')),
    sa.PrimaryKeyConstraint('object_id', name=op.f('pk_weight_frames'))
    )
    # the data: each family's columns of its classes' rows, then the moved columns leave objects
    objects_columns = set(_columns("objects"))
    moved: set[str] = set()
    for family, classes in FAMILIES.items():
        pairs = _pairs(family, objects_columns)
        moved |= {old for _, old in pairs}
        new = ", ".join(["object_id"] + [_quote(c) for c, _ in pairs])
        old = ", ".join(["object_id"] + [_quote(o) for _, o in pairs])
        names = ", ".join(f"'{c}'" for c in classes)
        op.execute(f"INSERT INTO {family} ({new}) SELECT {old} FROM objects WHERE class_name IN ({names})")
    indexes = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("objects")}
    with op.batch_alter_table("objects", schema=None) as batch_op:
        for column in OLD_INDEXES:
            if f"ix_objects_{column}" in indexes:
                batch_op.drop_index(f"ix_objects_{column}")
        for column in sorted(moved):
            batch_op.drop_column(column)
    if op.get_context().dialect.supports_comments:  # SQLite keeps no comments (and would rebuild the table)
        for column in ("timestamp_start", "timestamp_end"):
            op.alter_column("objects", column, existing_type=sa.DateTime(), existing_nullable=True,
                            comment=f"{column.split('_')[1]} of the validity range (calibrations), UTC",
                            existing_comment=f"{column.split('_')[1]} of the validity range (calibrations)")


def downgrade() -> None:
    if op.get_context().dialect.supports_comments:
        for column in ("timestamp_start", "timestamp_end"):
            op.alter_column("objects", column, existing_type=sa.DateTime(), existing_nullable=True,
                            comment=f"{column.split('_')[1]} of the validity range (calibrations)",
                            existing_comment=f"{column.split('_')[1]} of the validity range (calibrations), UTC")
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    added: dict[str, sa.types.TypeEngine] = {}
    for family in FAMILIES:
        for reflected in inspector.get_columns(family):
            old = RENAMED.get((family, reflected["name"]), reflected["name"])
            if old in OBJECTS_0002 and old != "object_id":
                added.setdefault(old, reflected["type"])
    with op.batch_alter_table("objects", schema=None) as batch_op:
        for name, type_ in added.items():
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        for column in OLD_INDEXES:
            if column in added:
                batch_op.create_index(f"ix_objects_{column}", [column], unique=False)
    for family in FAMILIES:
        pairs = _pairs(family, set(added))
        if pairs:
            sets = ", ".join(f"{_quote(o)} = (SELECT f.{_quote(c)} FROM {family} f WHERE f.object_id = "
                             f"objects.object_id)" for c, o in pairs)
            op.execute(f"UPDATE objects SET {sets} WHERE object_id IN (SELECT object_id FROM {family})")
    for family in reversed(list(FAMILIES)):
        op.drop_table(family)
    if bind.dialect.name == "sqlite":  # the columns in 0002's order (PostgreSQL keeps them where they were added)
        with op.batch_alter_table("objects", recreate="always", partial_reordering=[tuple(OBJECTS_0002)]):
            pass
