"""Reference sources become catalogue rows: ``refcat_sources`` -> ``reference_sources`` with a sky index.

Also: ``objects.qc_report`` (the quality checks run) and the clarified comments
of some fields (:data:`COMMENTS`; PostgreSQL only, SQLite keeps no comments).

The sources keep their catalogue, position, magnitude, error, name and extra
columns; each gets its sky index (HEALPix pixel, nested, order 12 = nside 4096,
as ``astropy-healpix`` computes it) and position unit vector, and the rows of
each catalogue are stored in sky order (by pixel), as a new insert stores them.

Written by ``python -m awe.db.migrations.autogen "reference sources as catalogue rows"``,
with the data copy (and the downgrade's copy back) added by hand.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
from typing import Any

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: the sky index of this revision (nested HEALPix of this order); frozen here, whatever awe uses later
HEALPIX_ORDER = 12
#: sources read, indexed and written per round of the copy
CHUNK = 50_000
#: changed column comments (the fields' docs): (table, column, type) -> (before, after)
COMMENTS: dict[tuple[str, str, sa.types.TypeEngine[Any]], tuple[str, str]] = {
    ("objects", "bad_columns", sa.JSON()): (
        "0-based (trimmed grid) columns flagged as a whole",
        "0-based (trimmed grid) columns with a flagged run (hot: from a defect to one end; cold: the bad runs, "
        "or the whole column when most of it is bad)"),
    ("objects", "stdev_difference", sa.Float()): (
        "clipped standard deviation of this minus the previous valid master bias [ADU] "
        "(QC MAXIMUM_STDEV_DIFFERENCE; None without a previous one)",
        "standard deviation of this minus the previous valid master bias, the defects of both left out [ADU] "
        "(QC MAXIMUM_STDEV_DIFFERENCE; None without a previous one)"),
}


def _comments(after: int) -> None:
    """Set the comments of :data:`COMMENTS` to their state ``after`` (1) or before (0) this revision."""
    if not op.get_context().dialect.supports_comments:  # SQLite keeps no comments (and would rebuild the table)
        return
    for (table, column, type_), texts in COMMENTS.items():
        op.alter_column(table, column, existing_type=type_, existing_nullable=True,
                        comment=texts[after], existing_comment=texts[1 - after])


def _sky_index(conn: sa.Connection) -> None:
    """Fill ``_refcat_sky`` with (source_id, healpix, cx, cy, cz) of every row of ``refcat_sources``."""
    import astropy.units as u
    import numpy as np
    from astropy_healpix import HEALPix

    healpix = HEALPix(nside=2 ** HEALPIX_ORDER, order="nested")
    sky = sa.table("_refcat_sky", *(sa.column(c) for c in ("source_id", "healpix", "cx", "cy", "cz")))
    last = -1
    while True:
        rows = conn.execute(sa.text(
            "SELECT source_id, ra, dec FROM refcat_sources WHERE source_id > :last ORDER BY source_id LIMIT :n"),
            {"last": last, "n": CHUNK}).all()
        if not rows:
            return
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        ra = np.array([r[1] for r in rows], dtype=np.float64)
        dec = np.array([r[2] for r in rows], dtype=np.float64)
        pix = np.asarray(healpix.lonlat_to_healpix(ra * u.deg, dec * u.deg), dtype=np.int64)
        ra_r, dec_r = np.radians(ra), np.radians(dec)
        cx, cy, cz = np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r), np.sin(dec_r)
        conn.execute(sky.insert(), [
            {"source_id": int(i), "healpix": int(p), "cx": float(x), "cy": float(y), "cz": float(z)}
            for i, p, x, y, z in zip(ids, pix, cx, cy, cz)])
        last = int(ids[-1])


def upgrade() -> None:
    op.create_table(
        'reference_sources',
        sa.Column('row_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False, comment='row id'),
        sa.Column('catalog_id', sa.Integer(), nullable=False,
                  comment='the reference catalogue the source belongs to (objects.object_id)'),
        sa.Column('ra', sa.Float(), nullable=True, comment='right ascension (ICRS/J2000) [deg]'),
        sa.Column('dec', sa.Float(), nullable=True, comment='declination (ICRS/J2000) [deg]'),
        sa.Column('mag', sa.Float(), nullable=True, comment="magnitude (the catalogue's main band) [mag]"),
        sa.Column('mag_err', sa.Float(), nullable=True, comment='magnitude error [mag]'),
        sa.Column('name', sa.String(length=64), nullable=True, comment='source name or id'),
        sa.Column('extra', sa.JSON(), nullable=True,
                  comment="the source's other columns of the input file (magnitudes, colours...)"),
        sa.Column('healpix', sa.Integer(), nullable=False,
                  comment='HEALPix pixel of the position (nested, order 12, nside 4096)'),
        sa.Column('cx', sa.Float(), nullable=False, comment='unit vector of the position: cos(dec) cos(ra)'),
        sa.Column('cy', sa.Float(), nullable=False, comment='unit vector of the position: cos(dec) sin(ra)'),
        sa.Column('cz', sa.Float(), nullable=False, comment='unit vector of the position: sin(dec)'),
        sa.PrimaryKeyConstraint('row_id', name=op.f('pk_reference_sources')),
        comment=("rows of ReferenceSource: One source of a reference catalogue (rows ordered by sky position "
                 "within a catalogue)."),
    )
    op.create_index('ix_reference_sources_catalog_id_row_id', 'reference_sources', ['catalog_id', 'row_id'],
                    unique=False)
    op.create_index(op.f('ix_reference_sources_healpix'), 'reference_sources', ['healpix'], unique=False)

    # the data: sky index computed in Python, everything else copied in SQL (JSON as it is stored)
    conn = op.get_bind()
    op.create_table(
        '_refcat_sky',
        sa.Column('source_id', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('healpix', sa.Integer(), nullable=False),
        sa.Column('cx', sa.Float(), nullable=False),
        sa.Column('cy', sa.Float(), nullable=False),
        sa.Column('cz', sa.Float(), nullable=False),
    )
    _sky_index(conn)
    op.execute(
        "INSERT INTO reference_sources (catalog_id, ra, dec, mag, mag_err, name, extra, healpix, cx, cy, cz) "
        "SELECT r.catalog_id, r.ra, r.dec, r.mag, r.mag_err, r.name, r.extra, s.healpix, s.cx, s.cy, s.cz "
        "FROM refcat_sources r JOIN _refcat_sky s ON s.source_id = r.source_id "
        "ORDER BY r.catalog_id, s.healpix, r.source_id"
    )
    op.drop_table('_refcat_sky')

    op.drop_index('ix_refcat_sources_dec_ra', table_name='refcat_sources')
    op.drop_index(op.f('ix_refcat_sources_catalog_id'), table_name='refcat_sources')
    op.drop_table('refcat_sources')

    with op.batch_alter_table('objects', schema=None) as batch_op:  # SQLite: ALTER TABLE ADD COLUMN, no rebuild
        batch_op.add_column(sa.Column('qc_report', sa.JSON(), nullable=True, comment=(
            'the automatic quality checks run: a list of {check, value, limit, parameter, relation, failed, flag} '
            '(None: none run)')))

    _comments(after=1)


def downgrade() -> None:
    _comments(after=0)
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.drop_column('qc_report')
    op.create_table(
        'refcat_sources',
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
        sa.PrimaryKeyConstraint('source_id', name=op.f('pk_refcat_sources')),
    )
    op.create_index(op.f('ix_refcat_sources_catalog_id'), 'refcat_sources', ['catalog_id'], unique=False)
    op.create_index('ix_refcat_sources_dec_ra', 'refcat_sources', ['dec', 'ra'], unique=False)
    op.execute(
        "INSERT INTO refcat_sources (catalog_id, ra, dec, mag, mag_err, name, extra) "
        "SELECT catalog_id, ra, dec, mag, mag_err, name, extra FROM reference_sources ORDER BY row_id"
    )
    op.drop_index(op.f('ix_reference_sources_healpix'), table_name='reference_sources')
    op.drop_index('ix_reference_sources_catalog_id_row_id', table_name='reference_sources')
    op.drop_table('reference_sources')
