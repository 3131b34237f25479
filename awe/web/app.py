"""The awe web application: DB viewer, object pages with lineage and previews, source lists and stamps through the
lineage, validity editor, publishing, the DPU job monitor.

``create_app(settings)`` builds a Starlette application on the database and
data storage of ``settings`` (the prompt's); ``awe serve`` runs it with
uvicorn. Every request that shows or changes data opens the logged-in user's
own :class:`~awe.db.session.Session` (``Session.open_as(database, user)``: on
PostgreSQL every transaction runs ``SET LOCAL ROLE user``, so row-level
security applies) in the project chosen in the cookie; nothing is read
around it. Handlers are plain functions: Starlette runs them in its thread
pool, one session per request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import logging
import re
import secrets
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, AsyncIterator, Callable, overload

import sqlalchemy as sa
from markupsafe import Markup, escape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from awe.config import Settings, load_settings
from awe.db.accounts import AuthenticationError, PrivilegeError, project_names
from awe.db.database import Database
from awe.db.persistent import Embedded, Ref, registry
from awe.db.query import Query, QueryError, load_objects
from awe.db.rows import Rows, row_registry
from awe.db.schema import DBObject
from awe.db.session import Session
from awe.web import forms, render
from awe.web.auth import LoginLimiter, SharedLoginLimiter, check_password, csrf_ok, load_secret, new_csrf_token

__all__ = ["create_app", "server_database", "serve"]

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_MAX_AGE_S = 8 * 3600
MAX_DOWNLOAD_ROWS = 200_000
MAX_STAMP_ARCSEC = 300.0
DEFAULT_STAMP_ARCSEC = 20.0
PER_PAGE = 50
#: a page by its number this deep (rows skipped) starts from a seek point; one point every SEEK_EVERY rows
SEEK_FROM = 5_000
SEEK_EVERY = 250
SEEK_TTL_S = 600.0
COUNT_TTL_S = 30.0
MAX_JOBS = 500
#: requests a server process runs at once (bench_web.py, 20 clients on 2 cores, another job on the machine: p95
#: of the cone page 225 ms with 40 threads, 144 ms with 4, 115 ms with 2, 118 ms with 1 on SQLite; 256 ms with 40,
#: 185 ms with 6, 202 ms with 2 on PostgreSQL, where 2 threads gave the other pages 90-114 ms against 112-140)
THREADS = 2
_figure_lock = threading.Lock()


# ================================================================================================ setup
def server_database(settings: Settings) -> Database:
    """The database a server opens once: the embedded one, or PostgreSQL as the authenticator of ``settings``."""
    if settings.is_embedded:
        from awe.db.accounts import ensure_public
        database = Database(settings.database_url, auto_upgrade=True)
        ensure_public(database)
        _mapped(database.engine)
        database.engine.dispose()  # the connections opened before (the schema check) go: new ones get the setting
        return database
    from awe.db.session import connect_as
    database = connect_as(settings.database_url, settings.user, settings.password)
    opened = database.engine
    database.engine = server_engine(opened.url)
    opened.dispose()  # the connections opened before (the schema check) go
    return database


#: a pooled connection idle for longer than this is pinged (one round trip) before a request uses it [s]
PING_IDLE_S = 5.0


def server_engine(url: sa.URL, ping_idle_s: float = PING_IDLE_S) -> sa.Engine:
    """The engine of a server's PostgreSQL connections: the fewest round trips a request can do with.

    * no ping on every checkout (``pool_pre_ping``: one round trip per request and connection): a connection
      idle for more than ``ping_idle_s`` is pinged, and replaced when the server dropped it (a restart, an idle
      timeout); one in use a moment ago is not. A connection that breaks mid-request fails that request, and
      SQLAlchemy then replaces every pooled connection (a disconnect invalidates the pool);
    * no server-side prepared statements (``prepare_threshold=None``): each page's query is planned with its
      own values anyway (a cone's pixel ranges differ), and psycopg forgets prepared statements at each
      ``ROLLBACK`` that ends a request, sending ``DEALLOCATE ALL`` the next time (a round trip);
    * no JIT compilation (:func:`no_jit`).
    """
    engine = sa.create_engine(url, pool_pre_ping=False, connect_args={"prepare_threshold": None})
    no_jit(engine)

    @sa.event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["awe_idle_from"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_from = record.info.get("awe_idle_from")
        if idle_from is None or time.monotonic() - idle_from <= ping_idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001  (any failure: the pool opens a new connection)
            raise sa.exc.DisconnectionError(f"pooled connection lost while idle: {exc}") from exc

    return engine


#: how much of the embedded database the server's connections read through a memory map [bytes]
SQLITE_MMAP_BYTES = 1 << 30


def _mapped(engine: sa.Engine) -> None:
    """The server's SQLite connections read the database file through one shared memory map (a cone's rows are
    scattered through the table: page reads from the map instead of a system call each)."""
    @sa.event.listens_for(engine, "connect")
    def _mmap(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA mmap_size = {SQLITE_MMAP_BYTES}")


def no_jit(engine: sa.Engine) -> None:
    """No JIT compilation on the server's PostgreSQL connections.

    A page's queries are short, but the planner's cost of a row-level security check on a large table is high
    enough to pass ``jit_above_cost``: compiling then takes longer (0.3-0.7 s) than the query itself.
    """
    @sa.event.listens_for(engine, "connect")
    def _no_jit(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET jit = off")
        finally:
            dbapi_connection.autocommit = autocommit


def create_app(settings: Settings | None = None, database: Database | None = None, *, secret: str | None = None,
               https_only: bool = False, max_age_s: int = SESSION_MAX_AGE_S,
               limiter: LoginLimiter | None = None, threads: int = THREADS, reconnect: bool = False) -> Starlette:
    """The web application on ``database`` (default: opened from ``settings``, default the prompt's settings).

    Parameters
    ----------
    secret : str, optional
        Key of the signed session cookies (default: ``AWE_HOME/web-secret``, made on first use).
    https_only : bool
        Send the cookie over HTTPS only (behind a TLS reverse proxy: ``awe serve --secure-cookies``).
    max_age_s : int
        Lifetime of a login [s].
    threads : int
        Requests of this process run at once (its thread pool; the others wait their turn, first come first
        served). Python runs one thread at a time: more threads than the requests that wait on the database or
        the storage at a time only share the core among more requests, each then slower; a few keep the
        event loop answering (:data:`THREADS`).
    reconnect : bool
        End every connection after its response (one of several server processes: see :class:`_SecurityHeaders`).
    """
    import awe
    awe.choose_backend()  # a server draws its figures off screen (Agg where there is no display)
    settings = settings or load_settings()
    database = database or server_database(settings)
    key = secret or load_secret(settings.home)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["ut"] = _ut
    templates.env.globals["flag_names"] = _flag_names
    templates.env.globals["options"] = _options
    web = _Web(settings, database, templates, limiter or SharedLoginLimiter(database), max_age_s)
    routes = [
        Route("/", web.home),
        Route("/login", web.login, methods=["GET", "POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/context", web.context, methods=["POST"]),
        Route("/classes", web.classes),
        Route("/query/{cls}", web.query),
        Route("/query/{cls}/download", web.query_download),
        Route("/rows/{cls}", web.rows),
        Route("/rows/{cls}/download", web.rows_download),
        Route("/object/{oid:int}", web.object_page),
        Route("/object/{oid:int}/lineage.svg", web.lineage),
        Route("/object/{oid:int}/preview.png", web.preview),
        Route("/object/{oid:int}/inspect.png", web.inspect),
        Route("/object/{oid:int}/fits", web.fits),
        Route("/object/{oid:int}/stamps", web.stamps),
        Route("/object/{oid:int}/update", web.update, methods=["POST"]),
        Route("/object/{oid:int}/publish", web.publish, methods=["GET", "POST"]),
        Route("/file/{name:path}", web.by_filename),
        Route("/validity", web.validity),
        Route("/jobs", web.jobs),
        Route("/jobs/table", web.jobs_table),
        Route("/jobs/{jid:int}", web.job_page),
        Route("/jobs/{jid:int}/cancel", web.job_cancel, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [Middleware(SessionMiddleware, secret_key=key, session_cookie="awe_session", max_age=max_age_s,
                             same_site="strict", https_only=https_only)]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        import anyio.to_thread
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        yield

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: web.http_error, forms.FormError: web.server_error,
                                        QueryError: web.server_error, PermissionError: web.server_error,
                                        Exception: web.server_error})
    app.state.web = web
    app.router.default = web.not_found
    app.add_middleware(_SecurityHeaders, reconnect=reconnect)
    return app


def serve(host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1, threads: int = THREADS,
          https_only: bool = False, proxy_headers: bool = False, log_level: str = "info",
          access_log: bool = True) -> None:
    """Run the application with uvicorn on ``host:port`` (what ``awe serve`` does).

    ``workers`` > 1 runs that many server processes on one socket (each with its own database connections
    and thread pool): Python runs one thread at a time per process, so one process uses one core. Sessions
    are signed cookies, valid in every worker; the failed logins are counted in the database, for all workers.
    Their responses end the connections (``reconnect``), so that requests spread over the processes.
    """
    import os

    import uvicorn
    options: dict[str, Any] = dict(host=host, port=port, proxy_headers=proxy_headers,
                                   forwarded_allow_ips="127.0.0.1", log_level=log_level, access_log=access_log)
    if workers <= 1:
        uvicorn.run(create_app(https_only=https_only, threads=threads), **options)
        return
    load_secret(load_settings().home)  # made once, here, before the workers read it
    os.environ["AWE_WEB_SECURE_COOKIES"] = "1" if https_only else ""
    os.environ["AWE_WEB_THREADS"] = str(threads)
    uvicorn.run("awe.web.app:worker_app", factory=True, workers=workers, **options)


def worker_app() -> Starlette:
    """The application of one worker process of :func:`serve` (settings from the environment, as the parent's)."""
    import os
    return create_app(https_only=os.environ.get("AWE_WEB_SECURE_COOKIES") == "1",
                      threads=int(os.environ.get("AWE_WEB_THREADS") or THREADS), reconnect=True)


class _SecurityHeaders:
    """No framing, no sniffing, scripts and styles only from this server; ``reconnect``: every response ends its
    connection (``Connection: close``).

    The processes of ``awe serve --workers N`` share one listening socket, and a kept-alive connection stays
    with the process that accepted it: a few busy clients can load one process while another idles (20 clients
    of bench_web.py came 16 to 4; the page time of the 16 was 4 times that of the 4). With ``reconnect``, each
    request goes to the process that accepts its connection first, the less busy one (the same 20 clients: mean
    page time 77-90 ms each, p95 of all 156 ms against 204 ms, the same pages per second).
    """

    def __init__(self, app: Any, reconnect: bool = False) -> None:
        self.app = app
        self.reconnect = reconnect

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"%00" in scope.get("query_string", b"") or "\x00" in scope.get("path", ""):
            response = Response("a NUL character in the request: refused", status_code=400, media_type="text/plain")
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin"),
                            (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:; "
                             b"style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'")]
                if not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"private, no-store"))
                if self.reconnect:
                    headers.append((b"connection", b"close"))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _ut(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UT")
    return "" if value is None else str(value)


def _options(names: Any, selected: Any = None) -> Markup:
    """The ``<option>`` elements of a ``<select>`` of ``names``, ``selected`` marked (one string: a form has
    several selects of every column, which as Jinja loops cost more than the page's query)."""
    return Markup("".join(f'<option value="{e}" selected>{e}</option>' if name == selected else
                          f'<option value="{e}">{e}</option>' for name, e in ((n, escape(n)) for n in names)))


def _flag_names(flags: int | None) -> str:
    if not flags:
        return "none"
    from awe.model.frames import QualityFlags
    return ", ".join(QualityFlags.describe(int(flags))) or str(flags)


class _Refused(HTTPException):
    pass


def _product_classes() -> dict[str, Any]:
    """The concrete persistent product classes by name."""
    return {name: cls for name, cls in sorted(registry.items())
            if issubclass(cls, DBObject) and not cls._abstract and "project_id" in cls.__table__.c}


def _row_classes() -> dict[str, type[Rows]]:
    return dict(sorted(row_registry.items()))


def _int(params: Any, name: str, default: int, lo: int, hi: int) -> int:
    text = params.get(name)
    if text in (None, ""):
        return default
    try:
        return min(max(int(text), lo), hi)
    except ValueError:
        raise HTTPException(400, f"{name}: {str(text)[:30]!r} is not an integer") from None


def _float(params: Any, name: str) -> float | None:
    text = params.get(name)
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise HTTPException(400, f"{name}: {str(text)[:30]!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise HTTPException(400, f"{name}: give a finite number")
    return value


# ================================================================================================ handlers
class _Web:
    def __init__(self, settings: Settings, database: Database, templates: Jinja2Templates, limiter: LoginLimiter,
                 max_age_s: int) -> None:
        self.settings = settings
        self.database = database
        self.templates = templates
        self.limiter = limiter
        self.max_age_s = max_age_s
        self._counts: dict[tuple[Any, ...], tuple[float, int]] = {}
        self._counts_lock = threading.Lock()
        self._count_locks: dict[tuple[Any, ...], threading.Lock] = {}
        #: per user: the settings and the database view acting as the user (made once, not per request)
        self._acting: dict[str, tuple[Settings, Database]] = {}
        #: seek points of deep pages by number (see :meth:`seek_point`)
        self._seeks: dict[tuple[Any, ...], tuple[float, dict[int, tuple[Any, int] | None]]] = {}
        self._seek_locks: dict[tuple[Any, ...], threading.Lock] = {}

    # ------------------------------------------------------------------------------------ plumbing
    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("user", request.session.get("user"))
        context.setdefault("project", request.session.get("project"))
        context.setdefault("csrf", request.session.get("csrf", ""))
        return self.templates.TemplateResponse(request, template, context, status_code=status)

    def session(self, request: Request) -> Session:
        """The logged-in user's session in the chosen project; 401 without a valid login."""
        user = request.session.get("user")
        issued = request.session.get("issued")
        if not isinstance(user, str) or not isinstance(issued, (int, float)) or time.time() - issued > self.max_age_s:
            request.session.clear()
            raise HTTPException(401, "log in first")
        try:
            session = self.open_session(user)
        except AuthenticationError:
            request.session.clear()
            raise HTTPException(401, "log in first") from None
        project = request.session.get("project")
        if project:
            try:
                session.set_project(str(project))
            except (PrivilegeError, LookupError):
                request.session.pop("project", None)
                raise HTTPException(403, "you are no longer a member of that project: choose another") from None
        return session

    def open_session(self, user: str) -> Session:
        """``Session.open_as(database, user)`` in one query per request.

        The directory (the user's id, his private project and the public ones; readable by the server's own
        role) is read on every request, in one query: a removed user is refused at once. The user's settings
        and the view of the database acting as him are made once; on PostgreSQL every transaction of the
        session still runs ``SET LOCAL ROLE user``, so row-level security holds.
        """
        from awe.db.accounts import Project, private_project_name
        from awe.db.schema import projects, users
        from awe.db.session import acting_as
        private = private_project_name(user)
        uid = sa.select(users.c.id).where(users.c.name == user).scalar_subquery()
        stmt = sa.select(projects.c.id, projects.c.name, projects.c.kind, projects.c.owner_id,
                         projects.c.description, uid.label("uid")).where(
            sa.or_(projects.c.kind == "public", projects.c.name == private))
        with self.database.engine.connect() as conn:
            if not self.database.is_sqlite:  # one statement: no BEGIN and ROLLBACK around it (two round trips)
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = conn.execute(stmt).all()
        user_id = rows[0].uid if rows else None
        if user_id is None:
            raise AuthenticationError(f"unknown user {user!r} in database {self.database.url}")
        own = [r for r in rows if r.name == private]
        if not own:
            raise LookupError(f"unknown project {private!r}")
        project = Project(own[0].id, own[0].name, own[0].kind, own[0].owner_id, own[0].description)
        with self._counts_lock:
            made = self._acting.get(user)
        if made is None:
            settings = self.settings.with_(user=user, password=None)
            made = (settings, self.database if self.database.is_sqlite else acting_as(self.database, user))
            with self._counts_lock:
                if len(self._acting) > 1000:
                    self._acting.clear()
                made = self._acting.setdefault(user, made)
        return Session(made[1], made[0], int(user_id), user, project=project,
                       public_ids=[r.id for r in rows if r.kind == "public"])

    def check_csrf(self, request: Request, form: FormData) -> None:
        origin = request.headers.get("origin")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.url.netloc:
            raise HTTPException(403, "cross-site request refused")
        if not csrf_ok(request.session.get("csrf"), form.get("csrf")):
            raise HTTPException(403, "the form has expired or did not come from this site: reload the page")

    def load(self, session: Session, oid: int) -> DBObject:
        """An object the session sees; 404 otherwise (the same answer whether it exists or not)."""
        found = load_objects(session, DBObject, [oid]).get(oid)
        if found is None:
            raise HTTPException(404, f"no object {oid} in project {session.project.name} or the public projects")
        return found

    def seek_point(self, session: Session, key: tuple[Any, ...], rcls: type[Rows], query: Any, sort: str,
                   desc: bool, point: int) -> tuple[Any, int] | None:
        """The (sort value, row_id) of row number ``point * SEEK_EVERY`` of ``query`` in its order (None: beyond
        its end), remembered per user, project, query, order and row count for ``SEEK_TTL_S``.

        A page by its number starts at the seek point before it (a keyset range of the index) and skips fewer
        than ``SEEK_EVERY`` rows, instead of an OFFSET that walks every row before it (on PostgreSQL each
        checked by row-level security). A point not known yet is found by walking the index entries (the sort
        value and row_id only) from the nearest known point before it, in the user's session; the pages' rows
        are always read from the database.
        """
        full = (session.user, session.project.id) + key
        now = time.monotonic()
        with self._counts_lock:
            hit = self._seeks.get(full)
            if hit is None or now - hit[0] > SEEK_TTL_S:
                if len(self._seeks) > 1000:
                    self._seeks.clear()
                    self._seek_locks.clear()
                hit = self._seeks[full] = (now, {})
            points = hit[1]
            if point in points:
                return points[point]
            lock = self._seek_locks.setdefault(full, threading.Lock())
        with lock:  # one walk at a time per query: the others then find their point, or walk less
            with self._counts_lock:
                if point in points:
                    return points[point]
                start = max((p for p in points if p < point and points[p] is not None), default=0)
            skip = (point - start) * SEEK_EVERY - 1
            fetched = [sort, "row_id"] if sort != "row_id" else ["row_id"]
            known = points.get(start)
            if known is not None:
                rows = _keyset_page(rcls, query, sort, desc, known, fetched, 1, session, skip=skip)
            else:
                rows = query._values(fetched, skip, 1)
            found = (_plain(rows[0][0]), int(rows[0][-1])) if rows else None
            with self._counts_lock:
                points[point] = found
        return found

    def check_visible(self, session: Session, oid: int) -> None:
        """404 unless the session sees object ``oid`` (the answer of :meth:`load`, without loading it)."""
        objects = DBObject.__table__
        stmt = sa.select(objects.c.object_id).where(objects.c.object_id == oid,
                                                    objects.c.project_id.in_(session.visible_project_ids()))
        with session.engine.connect() as conn:
            if conn.execute(stmt).first() is None:
                raise HTTPException(404, f"no object {oid} in project {session.project.name} or the public projects")

    @overload
    def counted(self, session: Session, key: tuple[Any, ...]) -> int | None: ...

    @overload
    def counted(self, session: Session, key: tuple[Any, ...], count: Callable[[], int]) -> int: ...

    def counted(self, session: Session, key: tuple[Any, ...], count: Callable[[], int] | None = None) -> int | None:
        """A count, remembered for 30 s per user, project and query (deep pages need not count again);
        without ``count``: the remembered one or None.

        One request counts at a time per query: while a count is renewed, the others take the last one (a
        source list's rows do not change once it is committed) or, when there is none yet, wait for it.
        """
        full = (session.user, session.project.id) + key
        now = time.monotonic()
        with self._counts_lock:
            hit = self._counts.get(full)
            if hit is not None and now - hit[0] < COUNT_TTL_S:
                return hit[1]
            if count is None:
                return None
            lock = self._count_locks.setdefault(full, threading.Lock())
        if not lock.acquire(blocking=hit is None):
            assert hit is not None
            return hit[1]
        try:
            with self._counts_lock:
                again = self._counts.get(full)
            if again is not None and again is not hit and time.monotonic() - again[0] < COUNT_TTL_S:
                return again[1]  # counted by the request this one waited for
            value = count()
            with self._counts_lock:
                if len(self._counts) > 10_000:
                    self._counts.clear()
                    self._count_locks = {full: lock}
                self._counts[full] = (time.monotonic(), value)
        finally:
            lock.release()
        return value

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login?next=" + urllib.parse.quote(_local(request.url.path)), 303)
        return self.page(request, "error.html", exc.status_code, code=exc.status_code, message=exc.detail)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, (PrivilegeError, PermissionError)):
            return self.page(request, "error.html", 403, code=403, message="not allowed: " + _first_line(exc))
        if isinstance(exc, (forms.FormError, QueryError)):
            return self.page(request, "error.html", 400, code=400, message=_first_line(exc))
        ref = secrets.token_hex(4)
        log.exception("web request %s %s failed (reference %s)", request.method, request.url.path, ref)
        return self.page(request, "error.html", 500, code=500,
                         message=f"internal error (reference {ref} in the server's log)")

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        response = self.page(request, "error.html", 404, code=404, message="no such page")
        await response(scope, receive, send)

    # ------------------------------------------------------------------------------------ login
    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request, "login.html", next=_local(request.query_params.get("next", "/")))
        form = await request.form()
        origin = request.headers.get("origin")
        if origin and origin != "null" and urllib.parse.urlsplit(origin).netloc != request.url.netloc:
            raise HTTPException(403, "cross-site login refused")
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        back = _local(str(form.get("next", "/")))
        address = request.client.host if request.client else "?"
        from starlette.concurrency import run_in_threadpool
        # the attempt counts as failed until its password is right (attempts sent at once cannot all pass)
        wait, token = await run_in_threadpool(self.limiter.reserve, name, address)
        if wait:
            return self.page(request, "login.html", 429, error=f"too many failed logins: try again in {wait:.0f} s",
                             next=back)
        try:
            ok = await run_in_threadpool(check_password, self.database, self.settings.database_url, name, password)
        except BaseException:
            await run_in_threadpool(self.limiter.release, name, address, token)
            raise
        if not ok:
            return self.page(request, "login.html", 401, error="wrong user name or password", next=back)
        await run_in_threadpool(self.limiter.succeeded, name, address)
        request.session.clear()
        request.session.update(user=name, issued=int(time.time()), csrf=new_csrf_token(), project=None)
        return RedirectResponse(back, 303)

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def context(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        session = self.session(request)
        name = str(form.get("project", ""))
        try:
            session.set_project(name)
        except LookupError:
            raise HTTPException(404, "no such project") from None
        request.session["project"] = name
        return RedirectResponse("/classes", 303)

    # ------------------------------------------------------------------------------------ browsing
    def home(self, request: Request) -> Response:
        session = self.session(request)
        return self.page(request, "home.html", projects=project_names(session.database, session.user_id),
                         current=session.project.name)

    def classes(self, request: Request) -> Response:
        session = self.session(request)
        table = DBObject.__table__
        with session.engine.connect() as conn:
            counts: dict[str, int] = dict(conn.execute(sa.select(table.c.class_name, sa.func.count())
                                       .where(table.c.project_id.in_(session.visible_project_ids()))
                                       .group_by(table.c.class_name)).all())
        products = [(name, counts.get(name, 0), (cls.__doc__ or "").strip().split("\n")[0])
                    for name, cls in _product_classes().items()]
        rows = []
        for name, rcls in _row_classes().items():
            parent = rcls._parents[0].target.__name__
            rows.append((name, parent, (rcls.__doc__ or "").strip().split("\n")[0]))
        return self.page(request, "classes.html", products=products, rows=rows, current=session.project.name)

    def query(self, request: Request) -> Response:
        session = self.session(request)
        cls = _product_classes().get(request.path_params["cls"])
        if cls is None:
            raise HTTPException(404, "no such class")
        fields = forms.queryable(cls)
        params = request.query_params
        filters = forms.parse_filters(params, fields)
        sort = params.get("sort", "object_id")
        if sort not in fields:
            raise HTTPException(400, f"sort: unknown attribute {sort[:40]!r}")
        desc = params.get("desc") == "1"
        per = _int(params, "per", PER_PAGE, 1, 500)
        page = _int(params, "page", 1, 1, 10**7)
        with session.activate():
            q = forms.compile_filters(cls, filters).using(session)
            q.order_by(sort, descending=desc)
            key = ("q", cls.__name__, tuple((a, o, str(v)) for a, o, v in filters))
            total = self.counted(session, key, q.count)
            objects = q[(page - 1) * per:page * per]
            shown = ["object_id", "filename"] + [a for a, _, _ in filters if a not in ("object_id", "filename")]
            if sort not in shown:
                shown.append(sort)
            shown += [c for c in ("creation_date", "is_valid", "quality_flags") if c not in shown]
            table = [[_value_of(o, c) for c in shown] for o in objects]
        text = forms.python_text(cls, filters)
        if sort != "object_id" or desc:
            text = f"({text}).order_by({('-' if desc else '') + sort!r})"
        return self.page(request, "query.html", cls=cls.__name__, fields=fields, filters=filters,
                         operators=list(forms.OPERATORS), rows=table, ids=[o.object_id for o in objects],
                         columns=shown, total=total, page=page, per=per, pages=max(1, -(-total // per)), sort=sort,
                         desc=desc, python=text, params=params, max_filters=forms.MAX_FILTERS,
                         link=_link_builder(request), current=session.project.name)

    def query_download(self, request: Request) -> Response:
        session = self.session(request)
        cls = _product_classes().get(request.path_params["cls"])
        if cls is None:
            raise HTTPException(404, "no such class")
        fields = forms.queryable(cls)
        filters = forms.parse_filters(request.query_params, fields)
        fmt = _format(request)
        from astropy.table import Table
        with session.activate():
            q = forms.compile_filters(cls, filters).using(session).order_by("object_id")
            objects = q[0:MAX_DOWNLOAD_ROWS + 1]
            if len(objects) > MAX_DOWNLOAD_ROWS:
                raise HTTPException(413, f"more than {MAX_DOWNLOAD_ROWS} objects: narrow the query")
            names = [n for n in fields if "." not in n or n.endswith(".name")]
            table = Table(rows=[[_plain(_value_of(o, n)) for n in names] for o in objects] or None,
                          names=names if objects else None)
            if not objects:
                table = Table(names=names, dtype=["O"] * len(names))
        return _table_response(table, fmt, f"{cls.__name__}")

    # ------------------------------------------------------------------------------------ catalogue rows
    def _row_query(self, request: Request, session: Session,
                   check_parent: bool = True) -> tuple[type[Rows], Any, dict[str, Any]]:
        rcls = _row_classes().get(request.path_params["cls"])
        if rcls is None:
            raise HTTPException(404, "no such row class")
        params = request.query_params
        fields = forms.row_queryable(rcls)
        parts: list[Query] = []
        text: list[str] = []
        name = rcls.__name__
        pcol = rcls._parents[0].name
        parent = params.get("parent")
        info: dict[str, Any] = {"fields": fields}
        if parent:
            pid = _int(params, "parent", 0, 0, 2**31 - 1)
            if check_parent:
                self.check_visible(session, pid)  # 404 unless visible
            parts.append(rcls.of(pid))
            text.append(f"({name}.{pcol} == {pid})")
            info["parent"] = pid
        ra, dec, radius = _float(params, "ra"), _float(params, "dec"), _float(params, "radius")
        if ra is not None or dec is not None or radius is not None:
            if ra is None or dec is None or radius is None or not -90 <= dec <= 90 or not 0 < radius <= 36000:
                raise HTTPException(400, "cone search: give ra and dec [deg] and a radius [arcsec] of at most 10 deg")
            parts.append(rcls.cone(ra, dec, radius))
            info["cone"] = True
            text.append(f"{name}.cone({ra!r}, {dec!r}, {radius!r})")
        mag = magnitude_column(rcls)
        info["mag"] = mag
        for bound, op in (("mag_min", ">="), ("mag_max", "<=")):
            value = _float(params, bound)
            if value is not None:
                if mag is None:
                    raise HTTPException(400, f"{name} has no magnitude column")
                parts.append(forms.OPERATORS[op](getattr(rcls, mag), value))
                text.append(f"({name}.{mag} {op} {value!r})")
        flag = flag_column(rcls)
        info["flag"] = flag
        flags_max = params.get("flags_max")
        if flags_max not in (None, ""):
            if flag is None:
                raise HTTPException(400, f"{name} has no flag column")
            fmax = _int(params, "flags_max", 0, 0, 2**62)
            parts.append(getattr(rcls, flag) <= fmax)
            text.append(f"({name}.{flag} <= {fmax})")
        filters = forms.parse_filters(params, fields)
        query = forms.compile_filters(rcls, filters, parts).using(session)
        info["python"] = forms.python_text(rcls, filters, text)
        info["filters"] = filters
        return rcls, query, info

    def rows(self, request: Request) -> Response:
        session = self.session(request)
        params = request.query_params
        with session.activate():
            # the rows are those of a visible parent (the query's condition, and row-level security): the
            # parent is checked only when there are none, for the 404
            rcls, query, info = self._row_query(request, session, check_parent=False)
            default_sort = info["mag"] or "row_id"
            sort = params.get("sort", default_sort)
            if sort not in info["fields"]:
                raise HTTPException(400, f"sort: unknown column {sort[:40]!r}")
            desc = params.get("desc") == "1"
            query.order_by(sort, descending=desc)
            per = _int(params, "per", PER_PAGE, 1, 500)
            page = _int(params, "page", 1, 1, 10**8)
            columns = [c for c in info["fields"] if c != "healpix"]
            key = ("r", rcls.__name__, tuple(sorted((k, v) for k, v in params.items()
                                                    if k not in ("page", "sort", "desc", "per", "after"))))
            after = _cursor(params.get("after"), info["fields"].get(sort, ""))
            fetched = columns + (["row_id"] if "row_id" not in columns else [])
            offset = (page - 1) * per
            with_count = bool(info.get("cone")) and after is None and not offset
            total = self.counted(session, key) if with_count else None
            rows: list[tuple] | None = None
            if with_count and total is None:  # a cone's rows are collected and sorted anyway: counted at once
                rows, found = query._values_and_count(fetched, per)
                total = self.counted(session, key, lambda: found)
            elif total is None:
                total = self.counted(session, key, query.count)
            if rows is not None:
                pass
            elif after is not None:  # keyset: the rows after the previous page's last one (deep pages stay fast)
                rows = _keyset_page(rcls, query, sort, desc, after, fetched, per, session)
            elif offset >= max(SEEK_FROM, SEEK_EVERY):  # a deep page by number: from its seek point, keyset
                point = offset // SEEK_EVERY
                start = self.seek_point(session, key + (sort, desc, total), rcls, query, sort, desc, point)
                if start is not None:
                    rows = _keyset_page(rcls, query, sort, desc, start, fetched, per, session,
                                        skip=offset - point * SEEK_EVERY)
                else:  # beyond the end
                    rows = query._values(fetched, offset, per)
            else:
                rows = query._values(fetched, offset, per)
            if not rows and "parent" in info:
                self.check_visible(session, info["parent"])
            data = [[v if type(v) in _PLAIN_TYPES else _plain(v) for v in row] for row in rows]
            last = (data[-1][fetched.index(sort)], data[-1][fetched.index("row_id")]) if data else None
            next_after = f"{last[0]!r}:{int(last[1])}" if last is not None and page * per < total else ""
            if len(fetched) > len(columns):
                data = [row[:len(columns)] for row in data]
            units = {c: str(col.unit) if col.unit else "" for c, col in
                     ((c, rcls._columns[c]) for c in columns)}
            body = _rows_html(data, columns, rcls._parents[0].column, _row_stamps(rcls, columns))
        python = info["python"]
        if sort != "row_id" or desc:
            python = f"({python}).order_by({('-' if desc else '') + sort!r})"
        return self.page(request, "rows.html", cls=rcls.__name__, columns=columns, units=units, rows=data,
                         total=total, page=page, per=per, pages=max(1, -(-total // per)), sort=sort, desc=desc,
                         python=python, params=params, info=info, operators=list(forms.OPERATORS),
                         max_filters=forms.MAX_FILTERS, link=_link_builder(request), current=session.project.name,
                         parent_column=rcls._parents[0].column, next_after=next_after,
                         stamps=_row_stamps(rcls, columns), body=body)

    def rows_download(self, request: Request) -> Response:
        session = self.session(request)
        fmt = _format(request)
        with session.activate():
            rcls, query, info = self._row_query(request, session)
            query.order_by("row_id")
            table = query._table(None, None, MAX_DOWNLOAD_ROWS + 1)
        if len(table) > MAX_DOWNLOAD_ROWS:
            raise HTTPException(413, f"more than {MAX_DOWNLOAD_ROWS} rows: narrow the query (cone, magnitudes)")
        return _table_response(table, fmt, rcls.__name__)

    # ------------------------------------------------------------------------------------ objects
    def object_page(self, request: Request) -> Response:
        session = self.session(request)
        oid = request.path_params["oid"]
        from awe.db.audit import history
        with session.activate():
            obj = self.load(session, oid)
            attributes = _attributes(obj)
            inputs = {role: [(o.object_id, type(o).__name__, getattr(o, "filename", None)) for o in values
                             if isinstance(o, DBObject)] for role, values in obj.inputs().items()}
            changes = history(session, obj)
            overlays = _overlays(session, obj)
            row_classes = [(name, rcls._parents[0].column) for name, rcls in _row_classes().items()
                           if isinstance(obj, rcls._parents[0].target)]
            has_image = bool(obj.filename and obj.checksum and obj.filename.endswith((".fits", ".fits.fz")))
            targets = [p for p in project_names(session.database, session.user_id) if p != obj.project]
            lineage = _lineage_svg(session, obj)
            has_stamps = _has_stamps(obj)
        params = obj.process_params or {}
        return self.page(request, "object.html", obj=obj, cls=type(obj).__name__, attributes=attributes,
                         inputs=inputs, changes=changes, overlays=overlays, row_classes=row_classes,
                         has_image=has_image, has_inspect=has_image and hasattr(obj, "inspect"),
                         process_params=params, qc=obj.qc_report or [], targets=targets,
                         overlay=request.query_params.get("overlay", ""), current=session.project.name,
                         project_of=obj.project, lineage=lineage, has_stamps=has_stamps)

    def lineage(self, request: Request) -> Response:
        session = self.session(request)
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            svg = _lineage_svg(session, obj)
        return Response(svg, media_type="image/svg+xml")

    def preview(self, request: Request) -> Response:
        session = self.session(request)
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            if not obj.filename or not obj.checksum:
                raise HTTPException(404, "this object has no file")
            overlay_path = None
            wanted = request.query_params.get("overlay")
            if wanted:
                ids = {o[0] for o in _overlays(session, obj)}
                try:
                    oid = int(wanted)
                except ValueError:
                    raise HTTPException(400, "overlay: an object id") from None
                if oid not in ids:
                    raise HTTPException(404, "no such overlay for this object")
                overlay_path = session.open_file(self.load(session, oid).filename)
            path = session.open_file(obj.filename)
        try:
            png, info = render.preview_png(path, overlay_path)
        except (OSError, ValueError) as exc:
            raise HTTPException(415, "no image to preview in this file") from exc
        return Response(png, media_type="image/png", headers={"x-awe-preview": _json(info)})

    def inspect(self, request: Request) -> Response:
        session = self.session(request)
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            if not hasattr(obj, "inspect") or not obj.filename or not obj.checksum:
                raise HTTPException(404, "this object has no inspect figure")
            import matplotlib.pyplot as plt
            with _figure_lock:
                fig = obj.inspect()
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=80)
                plt.close(fig)
        return Response(buf.getvalue(), media_type="image/png")

    def fits(self, request: Request) -> Response:
        session = self.session(request)
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            if not obj.filename or not obj.checksum:
                raise HTTPException(404, "this object has no file")
            path = session.open_file(obj.filename)  # verified against the checksum in the database
        digest = base64.b64encode(bytes.fromhex(obj.checksum)).decode()
        etag = f'"{obj.checksum}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        safe = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(obj.filename).name)
        return FileResponse(path, media_type="application/fits", filename=safe,
                            headers={"etag": etag, "digest": f"sha-256={digest}",
                                     "repr-digest": f"sha-256=:{digest}:", "cache-control": "private"})

    def stamps(self, request: Request) -> Response:
        """The stamps of (ra, dec) through every image below an image product or a source list's image.

        The PNGs are part of the page (data URIs), made in this request's session: nothing to fetch by another URL.
        """
        session = self.session(request)
        params = request.query_params
        ra, dec = _float(params, "ra"), _float(params, "dec")
        size = _float(params, "size")
        size = DEFAULT_STAMP_ARCSEC if size is None else size
        if ra is None or dec is None or not -90 <= dec <= 90:
            raise HTTPException(400, "stamps: give ra and dec [deg] (dec between -90 and 90)")
        if not 0 < size <= MAX_STAMP_ARCSEC:
            raise HTTPException(400, f"size: the stamps' width [arcsec], above 0 and at most {MAX_STAMP_ARCSEC:g}")
        ra = ra % 360.0
        from awe.model.stamps import stamps as stamps_of
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            try:
                found = stamps_of(obj, ra, dec, size)
            except (TypeError, LookupError) as exc:
                raise HTTPException(400, f"no stamps of {type(obj).__name__} {obj.object_id}: "
                                         f"{_first_line(exc)}") from None
            visible = set(load_objects(session, DBObject, [s.object_id for s in found if s.object_id]))
            shown = [(s.role, s.cls, s.filename, s.object_id if s.object_id in visible else 0, s.grid, s.x, s.y,
                      s.data.shape, base64.b64encode(render.stamp_png(s.data)).decode()) for s in found]
        source = params.get("sid", "")
        return self.page(request, "stamps.html", obj=obj, cls=type(obj).__name__, ra=ra, dec=dec, size=size,
                         stamps=shown, sid=source if source.isdigit() else "", current=session.project.name)

    def by_filename(self, request: Request) -> Response:
        session = self.session(request)
        name = request.path_params["name"]
        table = DBObject.__table__
        with session.engine.connect() as conn:
            oid = conn.execute(sa.select(table.c.object_id).where(
                table.c.filename == name, table.c.project_id.in_(session.visible_project_ids()))).scalar()
        if oid is None:
            raise HTTPException(404, "no visible object has that file")
        return RedirectResponse(f"/object/{int(oid)}", 303)

    # ------------------------------------------------------------------------------------ changes
    async def update(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        from starlette.concurrency import run_in_threadpool
        return await run_in_threadpool(self._update, request, form)

    def _update(self, request: Request, form: FormData) -> Response:
        session = self.session(request)
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            changes: dict[str, Any] = {}
            for name in ("timestamp_start", "timestamp_end"):
                text = str(form.get(name, "")).strip()
                if not text:
                    continue
                try:
                    when = dt.datetime.fromisoformat(text.replace("Z", "")).replace(tzinfo=None)
                except ValueError:
                    raise HTTPException(400, f"{name}: {text[:40]!r} is not a UT date and time "
                                             "(2003-03-03T12:00:00)") from None
                if when != getattr(obj, name):
                    changes[name] = when
            valid = str(form.get("is_valid", "")).strip()
            if valid:
                if valid not in ("0", "1", "2"):
                    raise HTTPException(400, "is_valid: 0 (bad), 1 (fine) or 2 (inspected and fine)")
                if int(valid) != obj.is_valid:
                    changes["is_valid"] = int(valid)
            start = changes.get("timestamp_start", obj.timestamp_start)
            end = changes.get("timestamp_end", obj.timestamp_end)
            if start is not None and end is not None and end < start:
                raise HTTPException(400, "timestamp_end is before timestamp_start")
            if changes:
                obj.update(**changes)  # rights checked in the UPDATE itself, audit trail written with it
        back = _local(str(form.get("next", f"/object/{obj.object_id}")))
        return RedirectResponse(back, 303)

    async def publish(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool
        if request.method == "GET":
            return await run_in_threadpool(self._publish_confirm, request)
        form = await request.form()
        self.check_csrf(request, form)
        return await run_in_threadpool(self._publish, request, form)

    def _moving(self, session: Session, obj: DBObject, target: str) -> list[DBObject]:
        from awe.db.accounts import find_project
        from awe.db.lineage import dependencies
        try:
            project = find_project(session.database, target)
        except LookupError:
            raise HTTPException(404, "no such project") from None
        if target not in project_names(session.database, session.user_id):
            raise HTTPException(403, f"you are not a member of project {target}")
        public = set(session.database.public_project_ids())
        return [o for o in [obj] + dependencies(obj, session=session)
                if o.project_id != project.id and o.project_id not in public]

    def _publish_confirm(self, request: Request) -> Response:
        session = self.session(request)
        target = request.query_params.get("project", "ALL")
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            moving = self._moving(session, obj, target)
        return self.page(request, "publish.html", obj=obj, target=target, moving=moving,
                         current=session.project.name)

    def _publish(self, request: Request, form: FormData) -> Response:
        from awe.db.publish import migrate
        session = self.session(request)
        target = str(form.get("project", ""))
        with session.activate():
            obj = self.load(session, request.path_params["oid"])
            self._moving(session, obj, target)
            migrate(session, obj, target)
        return RedirectResponse(f"/object/{obj.object_id}", 303)

    # ------------------------------------------------------------------------------------ validity editor
    def validity(self, request: Request) -> Response:
        session = self.session(request)
        params = request.query_params
        table = DBObject.__table__
        with session.activate():
            with session.engine.connect() as conn:
                kinds = sorted(conn.execute(sa.select(table.c.class_name).distinct().where(
                    table.c.project_id.in_(session.visible_project_ids()),
                    table.c.timestamp_start.is_not(None))).scalars())
            from awe.model import Chip
            chips = sorted(c.name for c in Chip.all().using(session))
            cname, chip = params.get("cls", kinds[0] if kinds else ""), params.get("chip", chips[0] if chips else "")
            bars: list[render.ValidityBar] = []
            objects: list[Any] = []
            if cname:
                cls = _product_classes().get(cname)
                if cls is None or cname not in kinds:
                    raise HTTPException(404, "no calibrations of that class")
                q = Query(cls, None, session)
                if "chip" in cls._fields and chip:
                    if chip not in chips:
                        raise HTTPException(404, "no such chip")
                    q = q & (cls.chip.name == chip).using(session)
                objects = list(q.order_by("creation_date"))
                bars = [render.ValidityBar(o.object_id, o.filename, o.creation_date, o.timestamp_start,
                                           o.timestamp_end, o.is_valid) for o in objects
                        if o.creation_date is not None]
            eclipsed = render.eclipsed_parts(bars)
            from awe.db.audit import history
            changes = [c for o in objects for c in history(session, o)
                       if c.attribute in ("timestamp_start", "timestamp_end", "is_valid")]
        return self.page(request, "validity.html", kinds=kinds, chips=chips, cname=cname, chip=chip,
                         svg=render.validity_svg(bars), objects=objects,
                         eclipsed={k: bool(v) for k, v in eclipsed.items()}, changes=changes,
                         current=session.project.name, next_url=_local(str(request.url.path) + "?" +
                                                                       str(request.url.query)))


    # ------------------------------------------------------------------------------------ job monitor
    def _jobs(self, request: Request) -> dict[str, Any]:
        """The user's DPU jobs (newest first, at most ``MAX_JOBS``), filtered by recipe and state."""
        from awe.dpu.jobs import STATES, dpu_jobs
        from awe.db.schema import projects
        session = self.session(request)
        params = request.query_params
        recipe, state = params.get("recipe", ""), params.get("state", "")
        if state and state not in STATES:
            raise HTTPException(400, f"state: one of {', '.join(STATES)}")
        c = dpu_jobs.c
        mine = c.user_name == session.user  # and on PostgreSQL row-level security: the user's rows only
        with session.engine.connect() as conn:
            recipes = sorted(conn.execute(sa.select(c.recipe).distinct().where(mine)).scalars())
            if recipe and recipe not in recipes:
                recipe = ""
            stmt = (sa.select(c.id, c.user_name, c.recipe, c.label, c.state, c.submitted, c.started, c.ended, c.host,
                              c.worker, c.attempts, c.error, projects.c.name.label("project"))
                    .join(projects, projects.c.id == c.project_id, isouter=True).where(mine)
                    .order_by(c.id.desc()).limit(MAX_JOBS))
            if recipe:
                stmt = stmt.where(c.recipe == recipe)
            if state:
                stmt = stmt.where(c.state == state)
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
            counts: dict[str, int] = dict(conn.execute(
                sa.select(c.state, sa.func.count()).where(mine).group_by(c.state)).all())
        query = urllib.parse.urlencode({k: v for k, v in (("recipe", recipe), ("state", state)) if v})
        return {"jobs": rows, "recipes": recipes, "states": STATES, "recipe": recipe, "state": state,
                "counts": {s: int(counts.get(s, 0)) for s in STATES}, "query": query, "live": _live(rows),
                "current": session.project.name, "now": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)}

    def jobs(self, request: Request) -> Response:
        return self.page(request, "jobs.html", **self._jobs(request))

    def jobs_table(self, request: Request) -> Response:
        """The jobs table alone: what the page's HTMX polling swaps in."""
        return self.page(request, "_jobs_table.html", **self._jobs(request))

    def _job(self, session: Session, jid: int) -> Any:
        from awe.dpu.jobs import job
        try:
            return job(session, jid)
        except LookupError:
            raise HTTPException(404, f"no DPU job {jid} of yours") from None

    def job_page(self, request: Request) -> Response:
        session = self.session(request)
        found = self._job(session, request.path_params["jid"])
        fragment = request.query_params.get("part") == "1"
        return self.page(request, "_job_detail.html" if fragment else "job.html", job=found,
                         live=found.state not in ("done", "failed", "cancelled"), current=session.project.name)

    async def job_cancel(self, request: Request) -> Response:
        form = await request.form()
        self.check_csrf(request, form)
        from starlette.concurrency import run_in_threadpool
        return await run_in_threadpool(self._job_cancel, request, form)

    def _job_cancel(self, request: Request, form: FormData) -> Response:
        from awe.dpu.jobs import mark_cancelled
        session = self.session(request)
        found = self._job(session, request.path_params["jid"])
        mark_cancelled(session, [found.id])  # a queued job never starts; a running one's end is not recorded
        return RedirectResponse(_local(str(form.get("next", f"/jobs/{found.id}"))), 303)


# ================================================================================================ helpers
def _live(rows: list[dict[str, Any]]) -> bool:
    """Whether a jobs page polls: some job has not ended."""
    return any(r["state"] in ("queued", "running") for r in rows)


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n")[0][:300]


def _local(url: str) -> str:
    """A same-site path to go back to (never another host: no open redirect)."""
    if not url.startswith("/") or url.startswith("//") or "\\" in url or any(ord(c) < 32 for c in url):
        return "/"
    return url


def _json(value: Any) -> str:
    import json
    return json.dumps(value, separators=(",", ":"))


def _link_builder(request: Request) -> Callable[..., str]:
    """``link(name=value, ...)``: this page's URL with those parameters changed (an empty value drops one)."""
    path = request.url.path
    encoded = {k: urllib.parse.urlencode({k: v}) if v != "" else "" for k, v in request.query_params.items()}

    def link(**changes: Any) -> str:
        params = dict(encoded)
        for k, v in changes.items():
            text = str(v)
            params[k] = urllib.parse.urlencode({k: text}) if text != "" else ""
        return path + "?" + "&".join(p for p in params.values() if p)
    return link


def _cursor(text: str | None, kind: str) -> tuple[Any, int] | None:  # noqa: C901
    """The keyset cursor ``value:row_id`` of a "next" link (None: none given)."""
    if not text:
        return None
    value, sep, rid = text.rpartition(":")
    try:
        if not sep or kind not in ("int", "float", "str"):
            raise ValueError
        row_id = int(rid)
        if value == "None":
            return None, row_id
        parsed: Any = int(value) if kind == "int" else float(value) if kind == "float" else None
        if kind == "str":
            import ast
            parsed = ast.literal_eval(value)
            if not isinstance(parsed, str):
                raise ValueError
        if isinstance(parsed, float) and (parsed != parsed or parsed in (float("inf"), float("-inf"))):
            raise ValueError
    except (ValueError, SyntaxError):
        raise HTTPException(400, "after: not a cursor of this page's links (value:row_id)") from None
    return parsed, row_id


def _keyset_page(rcls: type[Rows], query: Query, sort: str, desc: bool, after: tuple[Any, int],
                 columns: list[str], per: int, session: Session, skip: int = 0) -> list[tuple]:
    """The ``per`` rows (tuples of ``columns``) after ``after`` = (value, row_id) in the order (sort, row_id), in
    the query language (after the first ``skip`` of them).

    Each condition is a range of the (parent, sort, row_id) index: the rest of the cursor's zone (the rows with a
    value, or those without, which row queries sort last), then the zone after it.
    """
    from awe.db.query import Attr
    value, row_id = after
    column = getattr(rcls, sort)
    rid = Attr(rcls, (), None, column="row_id", label="row_id", type_=sa.BigInteger())
    if sort == "row_id":
        zones = [((rid < row_id) if desc else (rid > row_id), None)]
    else:
        # rows without a value come last on every database (awe.db.rows' ORDER BY ... NULLS LAST)
        if value is None:
            zones = [((column == None) & (rid > row_id), None)]  # noqa: E711  (the query language's IS NULL)
        else:
            beyond = (column <= value) & ((column < value) | (rid > row_id)) if desc else \
                (column >= value) & ((column > value) | (rid > row_id))
            zones = [(beyond, None), (column == None, None)]  # noqa: E711
    parts: list[tuple] = []
    wanted = per
    for i, (cond, _) in enumerate(zones):
        part_query = (query & cond).using(session)
        part_query.order_by(sort, descending=desc)
        part = part_query._values(columns, skip or None, wanted)  # type: ignore[attr-defined]  # a RowQuery
        parts += part
        wanted -= len(part)
        if wanted <= 0 or i == len(zones) - 1:
            break
        if skip:  # the rows skipped that were in this zone (fewer than skip + per: a short range to count)
            skip = max(0, skip - part_query.count())
    return parts


def _rows_html(data: list[list[Any]], columns: list[str], parent_column: str,
               stamps: tuple[int, int, int, int] | None) -> list[Markup]:
    """The table rows of a rows page (one string each: 50 rows of 10 columns through Jinja cost more than the
    query)."""
    link = [c == parent_column for c in columns]
    out = []
    for row in data:
        cells = []
        for is_link, v in zip(link, row):
            if is_link:
                text = escape(v)
                cells.append(f'<td><a href="/object/{text}">{text}</a></td>')
            elif isinstance(v, float):
                cells.append(f"<td>{'%.6g' % v}</td>")  # digits, sign, e, inf or nan: nothing to escape
            elif isinstance(v, int):
                cells.append(f"<td>{v}</td>")
            else:
                cells.append(f"<td>{escape('' if v is None else v)}</td>")
        if stamps:
            p, r, d, n = (escape(row[i]) for i in stamps)
            cells.append(f'<td><a class="stamps-link" href="/object/{p}/stamps?ra={r}&amp;dec={d}&amp;sid={n}">'
                         f"stamps</a></td>")
        out.append(Markup("<tr>" + "".join(cells) + "</tr>\n"))
    return out


def magnitude_column(rcls: type[Rows]) -> str | None:
    """The row class's magnitude column: MAG_AUTO, else the first column in mag named like a magnitude."""
    cols = rcls._columns
    for name in ("MAG_AUTO", "mag_auto", "mag", "MAG"):
        if name in cols:
            return name
    for name, col in cols.items():
        if col.unit == "mag" and "err" not in name.lower():
            return name
    return None


def flag_column(rcls: type[Rows]) -> str | None:
    for name in ("FLAGS", "flags", "flag"):
        if name in rcls._columns:
            return name
    return None


def _value_of(obj: Any, path: str) -> Any:
    value = obj
    for part in path.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


#: values :func:`_plain` leaves as they are (a float NaN excepted, which catalogue rows give as None already)
_PLAIN_TYPES = frozenset({int, float, str, bool, type(None)})


def _plain(value: Any) -> Any:
    import numpy as np
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is np.ma.masked:
        return None
    return value


def _attributes(obj: DBObject) -> list[tuple[str, Any, str, int]]:
    """(name, shown value, doc, link object id or 0) of every declared attribute."""
    out = []
    for name, fld in type(obj)._fields.items():
        if name in ("process_params", "qc_report"):
            continue
        doc = getattr(fld, "doc", "")
        if isinstance(fld, Ref):
            target = getattr(obj, name, None)
            out.append((name, getattr(target, "name", None) if target is not None else None, doc, 0))
        elif isinstance(fld, Embedded):
            value = getattr(obj, name, None)
            shown = ", ".join(f"{p}={getattr(value, p):.5g}" if isinstance(getattr(value, p), float)
                              else f"{p}={getattr(value, p)}" for p in fld.parts) if value is not None else None
            out.append((name, shown, doc, 0))
        else:
            value = getattr(obj, name, None)
            if isinstance(value, dt.datetime):
                value = _ut(value)
            link = int(value) if name == "superseded_by" and value else 0
            out.append((name, value, doc, link))
    return out


def _has_stamps(obj: DBObject) -> bool:
    """Whether stamps start at ``obj``: an image of the sky, or a source list (its image)."""
    from awe.model.sourcelist import SourceList
    from awe.model.stamps import _is_sky_image
    return isinstance(obj, SourceList) or (_is_sky_image(obj) and bool(obj.checksum))


def _row_stamps(rcls: type[Rows], columns: list[str]) -> tuple[int, int, int, int] | None:
    """(parent, RA, Dec, number) column indices of a row class whose parent makes stamps (a source list)."""
    from awe.model.sourcelist import Source
    if not issubclass(rcls, Source):
        return None
    wanted = [rcls._parents[0].column, *rcls.__position__, "SID"]
    if any(c not in columns for c in wanted):
        return None
    p, r, d, n = (columns.index(c) for c in wanted)
    return p, r, d, n


_OVERLAY_CLASSES = ("WeightFrame", "SatelliteMap", "HotPixelMap", "ColdPixelMap")


def _overlays(session: Session, obj: DBObject) -> list[tuple[int, str, str]]:
    """Weight maps and pixel masks drawn over this object's preview: its direct inputs and products of those kinds."""
    from awe.db.schema import links
    if not obj.filename:
        return []
    with session.engine.connect() as conn:
        ids = set(conn.execute(sa.select(links.c.parent_id).where(links.c.child_id == obj.object_id)).scalars())
        ids |= set(conn.execute(sa.select(links.c.child_id).where(links.c.parent_id == obj.object_id)).scalars())
    found = load_objects(session, DBObject, sorted(ids))
    return [(o.object_id, type(o).__name__, o.filename) for o in found.values()
            if any(c.__name__ in _OVERLAY_CLASSES for c in type(o).__mro__) and o.filename and o.checksum
            and getattr(o, "NAXIS1", None) == getattr(obj, "NAXIS1", None)]


MAX_LINEAGE_NODES = 400


def _lineage_svg(session: Session, obj: DBObject) -> str:
    from awe.db.lineage import dependencies, derived
    from awe.db.schema import links
    objects = [obj] + dependencies(obj, session=session) + derived(obj, session=session)
    objects = objects[:MAX_LINEAGE_NODES]
    nodes = {o.object_id: render.Node(o.object_id, type(o).__name__, o.filename, o.object_id == obj.object_id)
             for o in objects}
    ids = list(nodes)
    with session.engine.connect() as conn:
        edges = [(int(p), int(c)) for p, c in conn.execute(sa.select(links.c.parent_id, links.c.child_id).where(
            links.c.child_id.in_(ids), links.c.parent_id.in_(ids))).all()]
    return render.lineage_svg(nodes, edges)


_FORMATS = {"csv": ("ascii.csv", "text/csv", "csv"), "fits": ("fits", "application/fits", "fits"),
            "votable": ("votable", "application/x-votable+xml", "vot")}


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "csv")
    if fmt not in _FORMATS:
        raise HTTPException(400, "format: csv, fits or votable")
    return fmt


def _table_response(table: Any, fmt: str, name: str) -> Response:
    writer, media, ext = _FORMATS[fmt]
    for col in table.colnames:
        if table[col].dtype.kind == "O":
            values = ["" if v is None else str(v) for v in table[col]]
            table[col] = values if values else table[col].astype(str)
    buf = io.BytesIO()
    if fmt == "csv":
        text = io.StringIO()
        table.write(text, format=writer)
        buf.write(text.getvalue().encode())
    else:
        table.write(buf, format=writer)
    return Response(buf.getvalue(), media_type=media,
                    headers={"content-disposition": f'attachment; filename="{name}.{ext}"'})
