"""The initial schema of awe 0.1.0: users, projects, objects (every product), links and reference data.

Frozen: these are the explicit operations of the tables ``metadata.create_all``
made in the first release (git 1e5206c), so a database made by that release
(stamped ``0001``) and a fresh database upgraded to ``0001`` are the same.
Never edit this file for a new column or table: write the next revision
(``python -m awe.db.migrations.autogen "what changed"``).

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('chips',
        sa.Column('object_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('class_name', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=True, comment='chip name'),
        sa.Column('index', sa.Integer(), nullable=True, comment='extension number in the raw MEF file (1..N)'),
        sa.Column('instrument_id', sa.Integer(), nullable=True, comment='instrument the chip belongs to'),
        sa.PrimaryKeyConstraint('object_id', name=op.f('pk_chips'))
    )
    op.create_index(op.f('ix_chips_class_name'), 'chips', ['class_name'], unique=False)
    op.create_index(op.f('ix_chips_instrument_id'), 'chips', ['instrument_id'], unique=False)
    op.create_index(op.f('ix_chips_name'), 'chips', ['name'], unique=False)
    op.create_table('filters',
        sa.Column('object_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('class_name', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=True, comment='Astro-WISE filter id'),
        sa.Column('eso_name', sa.String(length=64), nullable=True, comment='ESO filter name'),
        sa.Column('band', sa.String(length=16), nullable=True, comment='photometric band'),
        sa.Column('wavelength', sa.Float(), nullable=True, comment='central wavelength [nm]'),
        sa.Column('instrument_id', sa.Integer(), nullable=True, comment='instrument the filter belongs to'),
        sa.PrimaryKeyConstraint('object_id', name=op.f('pk_filters'))
    )
    op.create_index(op.f('ix_filters_class_name'), 'filters', ['class_name'], unique=False)
    op.create_index(op.f('ix_filters_instrument_id'), 'filters', ['instrument_id'], unique=False)
    op.create_index(op.f('ix_filters_name'), 'filters', ['name'], unique=False)
    op.create_table('instruments',
        sa.Column('object_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('class_name', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=True, comment='instrument name'),
        sa.Column('telescope', sa.String(length=32), nullable=True, comment='telescope name'),
        sa.Column('observatory', sa.String(length=64), nullable=True, comment='observatory'),
        sa.Column('longitude', sa.Float(), nullable=True, comment='east longitude of the observatory [deg]'),
        sa.Column('latitude', sa.Float(), nullable=True, comment='latitude of the observatory [deg]'),
        sa.Column('pixel_scale', sa.Float(), nullable=True, comment='pixel scale [arcsec/pixel]'),
        sa.PrimaryKeyConstraint('object_id', name=op.f('pk_instruments')),
        sa.UniqueConstraint('name', name=op.f('uq_instruments_name'))
    )
    op.create_index(op.f('ix_instruments_class_name'), 'instruments', ['class_name'], unique=False)
    op.create_table('objects',
        sa.Column('object_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('class_name', sa.String(length=64), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=True, comment='unique file name in the data storage'),
        sa.Column('project_id', sa.Integer(), nullable=True, comment='project (context) the object belongs to'),
        sa.Column('creator', sa.String(length=64), nullable=True, comment='user who made the object'),
        sa.Column('creation_date', sa.DateTime(), nullable=True, comment='when the object was made (UTC)'),
        sa.Column('quality_flags', sa.Integer(), nullable=True, comment='system quality bitmask, 0 = fine'),
        sa.Column('is_valid', sa.Integer(), nullable=True,
            comment='user verdict: 0 = bad, 1 = fine (default), 2 = inspected and fine'),
        sa.Column('process_params', sa.JSON(), nullable=True, comment='process parameters the object was made with'),
        sa.Column('software_version', sa.String(length=32), nullable=True, comment='awe version that made the object'),
        sa.Column('provenance', sa.String(length=40), nullable=True,
            comment='hash of (class, output-affecting parameters, input ids, code version)'),
        sa.Column('checksum', sa.String(length=64), nullable=True, comment='sha256 of the stored file'),
        sa.Column('timestamp_start', sa.DateTime(), nullable=True,
            comment='start of the validity range (calibrations)'),
        sa.Column('timestamp_end', sa.DateTime(), nullable=True, comment='end of the validity range (calibrations)'),
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
        sa.Column('raw_file', sa.String(length=255), nullable=True, comment='original raw MEF file name'),
        sa.Column('extension', sa.Integer(), nullable=True, comment='extension number in the raw MEF file'),
        sa.Column('DPR_TYPE', sa.String(length=32), nullable=True, comment='HIERARCH ESO DPR TYPE'),
        sa.Column('gain', sa.Float(), nullable=True, comment='gain from the header [e-/ADU]'),
        sa.Column('nframes', sa.Integer(), nullable=True, comment='number of raw frames combined'),
        sa.Column('overscan_correction', sa.Integer(), nullable=True,
            comment='overscan correction method (OVERSCAN_CORRECTION) of the raw frames'),
        sa.Column('n_bad_pixels', sa.Integer(), nullable=True, comment='number of pixels flagged'),
        sa.Column('bad_fraction', sa.Float(), nullable=True, comment='fraction of pixels flagged'),
        sa.Column('bad_columns', sa.JSON(), nullable=True, comment='0-based (trimmed grid) columns flagged as a whole'),
        sa.Column('level', sa.Float(), nullable=True,
            comment='mean de-biased median level of the raw flats combined [ADU]'),
        sa.Column('levels', sa.JSON(), nullable=True,
            comment='de-biased median level of each raw flat [ADU], in input order'),
        sa.Column('n_rejected', sa.Integer(), nullable=True,
            comment='values clipped while combining (cosmic rays, stars)'),
        sa.Column('flat_stdev', sa.Float(), nullable=True,
            comment='standard deviation of the normalised flat (bad pixels excluded)'),
        sa.Column('flatness', sa.Float(), nullable=True,
            comment='max - min of the 4 x 4 sub-window medians of the normalised flat'),
        sa.Column('large_scale_rms', sa.Float(), nullable=True,
            comment='rms of the large-scale structure of the normalised flat'),
        sa.Column('read_noise', sa.Float(), nullable=True,
            comment='read noise from bias pairs [ADU] (ReducedScienceFrame.read_noise is in e-)'),
        sa.Column('clipped_mean', sa.Float(), nullable=True,
            comment='sigma-clipped mean of the master bias [ADU] (QC MAXIMUM_ABS_MEAN)'),
        sa.Column('clipped_stdev', sa.Float(), nullable=True,
            comment='sigma-clipped standard deviation of the master bias [ADU] (QC MAXIMUM_STDEV)'),
        sa.Column('stdev_difference', sa.Float(), nullable=True,
            comment=('clipped standard deviation of this minus the previous valid master bias [ADU] (QC '
                     'MAXIMUM_STDEV_DIFFERENCE; None without a previous one)')),
        sa.Column('subwin_flatness', sa.Float(), nullable=True,
            comment='max - min of 4 x 4 sub-window medians [ADU] (QC MAXIMUM_SUBWIN_FLATNESS)'),
        sa.Column('subwin_stdev', sa.Float(), nullable=True,
            comment='largest sub-window standard deviation [ADU] (QC MAXIMUM_SUBWIN_STDEV)'),
        sa.Column('threshold', sa.Float(), nullable=True,
            comment='excess above the local bias level beyond which a pixel is hot [ADU]'),
        sa.Column('smoothing_scale', sa.Integer(), nullable=True,
            comment='smoothing scale used [pixels of this frame]'),
        sa.Column('name', sa.String(length=128), nullable=True, comment='catalogue name'),
        sa.Column('kind', sa.String(length=16), nullable=True, comment="'astrometric' or 'standard'"),
        sa.Column('n_sources', sa.Integer(), nullable=True, comment='number of sources'),
        sa.Column('source_columns', sa.JSON(), nullable=True,
            comment='which input column became ra, dec, mag, mag_err, name'),
        sa.Column('background', sa.Float(), nullable=True,
            comment='sky background level (mesh estimate, sources masked) [ADU]'),
        sa.Column('background_rms', sa.Float(), nullable=True, comment='sky noise [ADU]'),
        sa.Column('psf_radius', sa.Float(), nullable=True,
            comment='PSF radius: median half-light radius of the stars [arcsec]'),
        sa.Column('seeing', sa.Float(), nullable=True, comment='median FWHM of the stars [arcsec]'),
        sa.Column('n_stars_seeing', sa.Integer(), nullable=True, comment='number of stars the seeing was measured on'),
        sa.Column('n_cosmic_pixels', sa.Integer(), nullable=True, comment='pixels flagged as cosmic rays'),
        sa.Column('n_satellite_tracks', sa.Integer(), nullable=True, comment='satellite tracks found'),
        sa.Column('n_saturated_pixels', sa.Integer(), nullable=True, comment='saturated pixels'),
        sa.Column('n_zero_weight', sa.Integer(), nullable=True, comment='pixels with weight 0'),
        sa.Column('zero_weight_fraction', sa.Float(), nullable=True, comment='fraction of pixels with weight 0'),
        sa.Column('n_tracks', sa.Integer(), nullable=True, comment='number of tracks found'),
        sa.Column('n_track_pixels', sa.Integer(), nullable=True, comment='pixels masked on tracks'),
        sa.Column('tracks', sa.JSON(), nullable=True,
            comment='track parameters: rho, theta, width, length, peak, n_pixels, x0, y0, x1, y1'),
        sa.Column('fit_degree', sa.Integer(), nullable=True, comment='degree of the 2-D polynomial'),
        sa.Column('fit_coefficients', sa.JSON(), nullable=True,
            comment='coefficients c[i][j] of u**i v**j (u, v: pixel coordinates scaled to -1..1)'),
        sa.Column('fit_rms', sa.Float(), nullable=True, comment='rms of the fit residuals [fraction]'),
        sa.PrimaryKeyConstraint('object_id', name=op.f('pk_objects'))
    )
    op.create_index(op.f('ix_objects_DATE_OBS'), 'objects', ['DATE_OBS'], unique=False)
    op.create_index(op.f('ix_objects_MJD_OBS'), 'objects', ['MJD_OBS'], unique=False)
    op.create_index(op.f('ix_objects_OBJECT'), 'objects', ['OBJECT'], unique=False)
    op.create_index(op.f('ix_objects_chip_id'), 'objects', ['chip_id'], unique=False)
    op.create_index(op.f('ix_objects_class_name'), 'objects', ['class_name'], unique=False)
    op.create_index(op.f('ix_objects_creation_date'), 'objects', ['creation_date'], unique=False)
    op.create_index(op.f('ix_objects_filename'), 'objects', ['filename'], unique=True)
    op.create_index(op.f('ix_objects_filter_id'), 'objects', ['filter_id'], unique=False)
    op.create_index(op.f('ix_objects_instrument_id'), 'objects', ['instrument_id'], unique=False)
    op.create_index(op.f('ix_objects_kind'), 'objects', ['kind'], unique=False)
    op.create_index(op.f('ix_objects_name'), 'objects', ['name'], unique=False)
    op.create_index(op.f('ix_objects_project_id'), 'objects', ['project_id'], unique=False)
    op.create_index(op.f('ix_objects_provenance'), 'objects', ['provenance'], unique=False)
    op.create_index(op.f('ix_objects_raw_file'), 'objects', ['raw_file'], unique=False)
    op.create_index(op.f('ix_objects_timestamp_end'), 'objects', ['timestamp_end'], unique=False)
    op.create_index(op.f('ix_objects_timestamp_start'), 'objects', ['timestamp_start'], unique=False)
    op.create_table('users',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('password_hash', sa.String(length=256), nullable=True),
        sa.Column('created', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
        sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('links',
        sa.Column('child_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=64), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('parent_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['child_id'], ['objects.object_id'],
            name=op.f('fk_links_child_id_objects'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['parent_id'], ['objects.object_id'], name=op.f('fk_links_parent_id_objects')),
        sa.PrimaryKeyConstraint('child_id', 'role', 'position', name=op.f('pk_links'))
    )
    op.create_index(op.f('ix_links_parent_id'), 'links', ['parent_id'], unique=False)
    op.create_table('projects',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('description', sa.String(length=256), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=True),
        sa.Column('created', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
        sa.UniqueConstraint('name', name=op.f('uq_projects_name')),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_projects_owner_id_users'))
    )
    op.create_table('refcat_sources',
        sa.Column('source_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('catalog_id', sa.Integer(), nullable=False, comment='the ReferenceCatalog the source belongs to'),
        sa.Column('ra', sa.Float(), nullable=False, comment='right ascension (ICRS/J2000) [deg]'),
        sa.Column('dec', sa.Float(), nullable=False, comment='declination (ICRS/J2000) [deg]'),
        sa.Column('mag', sa.Float(), nullable=True, comment='magnitude [mag]'),
        sa.Column('mag_err', sa.Float(), nullable=True, comment='magnitude error [mag]'),
        sa.Column('name', sa.String(length=64), nullable=True, comment='source name or id'),
        sa.Column('extra', sa.JSON(), nullable=True, comment='other columns of the source (magnitudes, colours...)'),
        sa.ForeignKeyConstraint(['catalog_id'], ['objects.object_id'],
            name=op.f('fk_refcat_sources_catalog_id_objects'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('source_id', name=op.f('pk_refcat_sources'))
    )
    op.create_index(op.f('ix_refcat_sources_catalog_id'), 'refcat_sources', ['catalog_id'], unique=False)
    op.create_index('ix_refcat_sources_dec_ra', 'refcat_sources', ['dec', 'ra'], unique=False)
    op.create_table('memberships',
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'],
            name=op.f('fk_memberships_project_id_projects'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
            name=op.f('fk_memberships_user_id_users'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('project_id', 'user_id', name=op.f('pk_memberships'))
    )
        # ### end Alembic commands ###


def downgrade() -> None:
    op.drop_table('memberships')
    op.drop_index('ix_refcat_sources_dec_ra', table_name='refcat_sources')
    op.drop_index(op.f('ix_refcat_sources_catalog_id'), table_name='refcat_sources')
    op.drop_table('refcat_sources')
    op.drop_table('projects')
    op.drop_index(op.f('ix_links_parent_id'), table_name='links')
    op.drop_table('links')
    op.drop_table('users')
    op.drop_index(op.f('ix_objects_timestamp_start'), table_name='objects')
    op.drop_index(op.f('ix_objects_timestamp_end'), table_name='objects')
    op.drop_index(op.f('ix_objects_raw_file'), table_name='objects')
    op.drop_index(op.f('ix_objects_provenance'), table_name='objects')
    op.drop_index(op.f('ix_objects_project_id'), table_name='objects')
    op.drop_index(op.f('ix_objects_name'), table_name='objects')
    op.drop_index(op.f('ix_objects_kind'), table_name='objects')
    op.drop_index(op.f('ix_objects_instrument_id'), table_name='objects')
    op.drop_index(op.f('ix_objects_filter_id'), table_name='objects')
    op.drop_index(op.f('ix_objects_filename'), table_name='objects')
    op.drop_index(op.f('ix_objects_creation_date'), table_name='objects')
    op.drop_index(op.f('ix_objects_class_name'), table_name='objects')
    op.drop_index(op.f('ix_objects_chip_id'), table_name='objects')
    op.drop_index(op.f('ix_objects_OBJECT'), table_name='objects')
    op.drop_index(op.f('ix_objects_MJD_OBS'), table_name='objects')
    op.drop_index(op.f('ix_objects_DATE_OBS'), table_name='objects')
    op.drop_table('objects')
    op.drop_index(op.f('ix_instruments_class_name'), table_name='instruments')
    op.drop_table('instruments')
    op.drop_index(op.f('ix_filters_name'), table_name='filters')
    op.drop_index(op.f('ix_filters_instrument_id'), table_name='filters')
    op.drop_index(op.f('ix_filters_class_name'), table_name='filters')
    op.drop_table('filters')
    op.drop_index(op.f('ix_chips_name'), table_name='chips')
    op.drop_index(op.f('ix_chips_instrument_id'), table_name='chips')
    op.drop_index(op.f('ix_chips_class_name'), table_name='chips')
    op.drop_table('chips')
        # ### end Alembic commands ###
