"""Login, the rate limit on failed logins, the cookie secret and CSRF tokens of the web application.

The password is the awe password: on the embedded database the argon2 hash in
``users`` (:func:`awe.db.accounts.verify_password`); on PostgreSQL the login
role's own password, checked by connecting once as that role (the
authenticator the server runs as cannot read password hashes). A user without
a password (the embedded database's first user may have none) cannot log in
over the web: anyone could.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

import sqlalchemy as sa

from awe.db.accounts import verify_password
from awe.db.database import Database

__all__ = ["check_password", "LoginLimiter", "load_secret", "new_csrf_token", "csrf_ok"]

SECRET_FILE = "web-secret"


def check_password(database: Database, url: str, name: str, password: str) -> bool:
    """Whether ``password`` is the awe password of user ``name`` (False for unknown users and empty passwords)."""
    from awe.db.schema import users
    if not name or not password or len(name) > 64 or len(password) > 1024:
        return False
    with database.engine.connect() as conn:
        uid = conn.execute(sa.select(users.c.id).where(users.c.name == name)).scalar()
    if database.is_sqlite:
        with database.engine.connect() as conn:
            hashed = conn.execute(sa.select(users.c.password_hash).where(users.c.name == name)).scalar()
        if uid is None or hashed is None:
            verify_password(_DUMMY_HASH(), password)  # the same time for unknown users
            return False
        return verify_password(hashed, password)
    if uid is None:
        return False
    from awe.db.session import _as_role
    engine = sa.create_engine(_as_role(url, name, password), poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


_dummy: list[str] = []


def _DUMMY_HASH() -> str:  # noqa: N802
    if not _dummy:
        from awe.db.accounts import hash_password
        _dummy.append(hash_password(secrets.token_hex(8)))
    return _dummy[0]


class LoginLimiter:
    """At most ``attempts`` failed logins per (user, client address) in ``window_s`` seconds."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] < now - self.window_s:
            failures.popleft()
        return failures

    def blocked_for(self, user: str, address: str) -> float:
        """Seconds until ``user`` may try again from ``address`` (0: now)."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent((user, address), now)
            if len(failures) < self.attempts:
                return 0.0
            return max(failures[0] + self.window_s - now, 1.0)

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            self._recent((user, address), time.monotonic()).append(time.monotonic())
            if len(self._failures) > 100_000:  # a flood of made-up names: forget the oldest keys
                for key in list(self._failures)[:50_000]:
                    del self._failures[key]

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop((user, address), None)


def load_secret(home: Path) -> str:
    """The key that signs the session cookies: ``AWE_HOME/web-secret`` (made, readable by its owner only)."""
    path = Path(home) / SECRET_FILE
    if path.exists():
        text = path.read_text().strip()
        if len(text) < 32:
            raise ValueError(f"{path}: the web secret is shorter than 32 characters: delete the file and restart "
                             "`awe serve` (a new one is made; everyone logs in again)")
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    try:
        os.link(tmp, path)  # complete or absent: a server starting at the same time reads the same key
    except FileExistsError:
        return load_secret(home)
    finally:
        tmp.unlink()
    return secret


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: object, given: object) -> bool:
    """Whether the form's token is the session's (constant time)."""
    return (isinstance(expected, str) and isinstance(given, str) and len(expected) > 16
            and hmac.compare_digest(expected.encode(), given.encode()))
