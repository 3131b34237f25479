"""Data storage (DS): the FITS files of the products, by unique file name.

The database holds every product's metadata and the SHA-256 of its file; the
data storage holds the files, immutable, in a local folder (the default), an
S3 bucket or behind any fsspec URL (HTTP read-only)::

    from awe.storage import get_storage
    ds = get_storage("s3://awe-data/wfi")
    name = "Sci-AWUSER-WFI-----#844-ccd50-Red---Sci-54637.9045189-f077a92d.fits"
    digest = ds.store(name)                            # record digest in the DB
    path = ds.retrieve(name, "work", checksum=digest)  # verified copy in work/

Stores are atomic (temporary name, then rename or server-side copy), reads
are verified against the recorded checksum, and :func:`vacuum` removes files
left behind by failed commits.
"""

from awe.storage._errors import CorruptFileError, MissingFileError, StorageError
from awe.storage._hashing import sha256_file
from awe.storage._registry import get_storage
from awe.storage._storage import DataStorage
from awe.storage._vacuum import MIN_SAFE_AGE_S, vacuum

__all__ = [
    "DataStorage",
    "StorageError",
    "MissingFileError",
    "CorruptFileError",
    "sha256_file",
    "vacuum",
    "MIN_SAFE_AGE_S",
    "get_storage",
]
