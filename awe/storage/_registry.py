"""One :class:`DataStorage` per URL in a process."""

from __future__ import annotations

import threading
from pathlib import Path

from awe.storage._storage import DataStorage

__all__ = ["get_storage"]

_storages: dict[tuple[str, str | None], DataStorage] = {}
_lock = threading.Lock()


def get_storage(url: str | None = None, cache_dir: str | Path | None = None) -> DataStorage:
    """The process-wide :class:`DataStorage` for a URL.

    Parameters
    ----------
    url : str, optional
        Storage URL; default: the ``storage`` setting (``AWE_STORAGE``, awe.toml).
    cache_dir : str or Path, optional
        Local cache folder; default with ``url`` unset: the ``cache`` setting.

    Returns
    -------
    DataStorage
        The same object for the same URL and cache folder.
    """
    if url is None:
        from awe.config import load_settings

        settings = load_settings()
        url = settings.storage
        cache_dir = cache_dir if cache_dir is not None else settings.cache
    storage = DataStorage(url, cache_dir)
    key = (storage.url, str(storage.cache_dir) if storage.cache_dir else None)
    with _lock:
        return _storages.setdefault(key, storage)
