"""Login, the rate limit on failed logins, the cookie secret and CSRF tokens of the web application.

The password is the awe password: on the embedded database the argon2 hash in
``users`` (:func:`awe.db.accounts.verify_password`); on PostgreSQL the login
role's own password, checked by connecting once as that role (the
authenticator the server runs as cannot read password hashes). A user without
a password (the embedded database's first user may have none) cannot log in
over the web: anyone could.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from awe.db.accounts import verify_password
from awe.db.database import Database

__all__ = ["check_password", "LoginLimiter", "SharedLoginLimiter", "load_secret", "new_csrf_token", "csrf_ok"]

log = logging.getLogger(__name__)

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
    """At most ``attempts`` failed logins per (user, client address) in ``window_s`` seconds, in this process.

    :meth:`reserve` before the password is checked counts the attempt as failed at once (so requests sent at the
    same time cannot all pass the check before any of them fails); :meth:`succeeded` forgets the failures.
    :class:`SharedLoginLimiter` keeps the count in the database, for all the server's processes.
    """

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
            return max(failures[-self.attempts] + self.window_s - now, 1.0)

    def reserve(self, user: str, address: str) -> tuple[float, object]:
        """Count an attempt as failed before its password is checked: (0, its token), or (seconds to wait, None)
        when the limit is reached (nothing counted). :meth:`release` takes the token back (the check could not
        run); :meth:`succeeded` forgets every failure."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent((user, address), now)
            if len(failures) >= self.attempts:
                return max(failures[-self.attempts] + self.window_s - now, 1.0), None
            failures.append(now)
            self._forget_flood()
        return 0.0, (user, address, now)

    def release(self, user: str, address: str, token: object) -> None:
        with self._lock:
            failures = self._failures.get((user, address))
            if failures is not None and isinstance(token, tuple) and token[2] in failures:
                failures.remove(token[2])

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            self._recent((user, address), time.monotonic()).append(time.monotonic())
            self._forget_flood()

    def _forget_flood(self) -> None:
        if len(self._failures) > 100_000:  # a flood of made-up names: forget the oldest keys
            for key in list(self._failures)[:50_000]:
                del self._failures[key]

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop((user, address), None)


class SharedLoginLimiter(LoginLimiter):
    """:class:`LoginLimiter` counted in the database's ``login_failures`` table: one limit for every process of
    the server (``awe serve --workers N``) and every server on the same database, on SQLite and PostgreSQL.

    The server's own connections (on PostgreSQL the authenticator, which alone may read and write the table)
    record the failures with the wall-clock time. :meth:`reserve` inserts the attempt and then counts: the k-th
    attempt committed sees at least k, so of attempts sent at the same time at most ``attempts`` pass.
    """

    def __init__(self, database: Database, attempts: int = 5, window_s: float = 300.0) -> None:
        super().__init__(attempts, window_s)
        self.database = database
        #: (counted in the database, the role to act as for it), found at first use
        self._mode: tuple[bool, str | None] | None = None

    def _shared(self) -> bool:
        """Whether the failures are counted in the database. On PostgreSQL the server's role must be an
        authenticator (the table is granted to their marker role) or the table's owner; any other role (a
        server run as an ordinary awe user) counts in this process, as before the table, with a warning."""
        if self._mode is None:
            if self.database.is_sqlite:
                self._mode = (True, None)
            else:
                from awe.db.rls import authenticator_marker
                with self.database.engine.connect() as conn:
                    marker = authenticator_marker(conn)
                    own, member = conn.execute(sa.text(
                        "SELECT has_table_privilege('login_failures', 'INSERT') AND "
                        "has_table_privilege('login_failures', 'DELETE'), "
                        "CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :m) THEN pg_has_role(:m, 'MEMBER') "
                        "ELSE false END"),
                        {"m": marker}).one()
                self._mode = (True, None) if own else (True, marker) if member else (False, None)
                if not self._mode[0]:
                    log.warning("the server's database role is neither an authenticator (awe db authenticator) "
                                "nor the owner: failed logins are counted in each server process")
        return self._mode[0]

    @contextlib.contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A transaction of the server's own role; on PostgreSQL an authenticator acts as its marker role, the one
        the table is granted to (an authenticator is ``NOINHERIT``); an owner or superuser as itself."""
        self._shared()
        assert self._mode is not None
        with self.database.engine.begin() as conn:
            if self._mode[1] is not None:
                from awe.db.rls import quote
                conn.exec_driver_sql(f"SET LOCAL ROLE {quote(self._mode[1])}")
            yield conn

    @staticmethod
    def _key(user: str, address: str) -> tuple[str, str]:
        return user[:64], address[:64]

    def _wait(self, conn: sa.Connection, user: str, address: str, now: float, limit: int) -> float:
        """Seconds until fewer than ``limit`` failures of (user, address) are in the window (0: now)."""
        from awe.db.schema import login_failures as t
        recent = conn.execute(sa.select(t.c.at).where(t.c.user_name == user, t.c.address == address,
                                                      t.c.at >= now - self.window_s)
                              .order_by(t.c.at.desc()).limit(limit)).scalars().all()
        if len(recent) < limit:
            return 0.0
        return max(float(recent[-1]) + self.window_s - now, 1.0)

    def blocked_for(self, user: str, address: str) -> float:
        if not self._shared():
            return super().blocked_for(user, address)
        user, address = self._key(user, address)
        with self._begin() as conn:
            return self._wait(conn, user, address, time.time(), self.attempts)

    def reserve(self, user: str, address: str) -> tuple[float, object]:
        if not self._shared():
            return super().reserve(user, address)
        from awe.db.schema import login_failures as t
        user, address = self._key(user, address)
        token, now = secrets.token_hex(16), time.time()
        with self._begin() as conn:
            conn.execute(t.insert().values(token=token, user_name=user, address=address, at=now))
        with self._begin() as conn:
            wait = self._wait(conn, user, address, now, self.attempts + 1)  # this attempt's row included
            if wait:  # over the limit: this attempt is refused, not counted
                conn.execute(t.delete().where(t.c.token == token))
                return wait, None
            if secrets.randbelow(16) == 0:  # now and then: the failures older than the window go
                conn.execute(t.delete().where(t.c.at < now - self.window_s))
        return 0.0, token

    def release(self, user: str, address: str, token: object) -> None:
        if not self._shared():
            super().release(user, address, token)
            return
        from awe.db.schema import login_failures as t
        with self._begin() as conn:
            conn.execute(t.delete().where(t.c.token == str(token)))

    def failed(self, user: str, address: str) -> None:
        if not self._shared():
            super().failed(user, address)
            return
        from awe.db.schema import login_failures as t
        user, address = self._key(user, address)
        with self._begin() as conn:
            conn.execute(t.insert().values(token=secrets.token_hex(16), user_name=user, address=address,
                                           at=time.time()))

    def succeeded(self, user: str, address: str) -> None:
        if not self._shared():
            super().succeeded(user, address)
            return
        from awe.db.schema import login_failures as t
        user, address = self._key(user, address)
        with self._begin() as conn:
            conn.execute(t.delete().where(t.c.user_name == user, t.c.address == address))


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
