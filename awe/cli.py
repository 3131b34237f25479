"""The ``awe`` command: the prompt, and verbs for data, users, projects, storage and the demo.

The verbs show warnings and errors on the screen (``-v``: everything) and
write their whole log to ``awe.log`` in the working folder; progress is drawn
as one bar per step. awe's errors end a verb with one line (``AWE_DEBUG=1``:
the traceback).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

log = logging.getLogger("awe.cli")

#: The log file of the verbs, in the working folder.
LOG_FILE = "awe.log"


def _connect(project: str | None = None):
    from awe import context
    if not context.connected:
        context.connect()
    if project:
        context.set_project(project)
    return context


def _fail(message: str) -> None:
    click.echo(f"awe: {message}", err=True)
    sys.exit(1)


class _Cli(click.Group):
    """Turns awe's domain errors into one clear line instead of a traceback."""

    def invoke(self, ctx):
        from awe.config import ConfigError
        from awe.db.engine import DatabaseError
        from awe.shell import debug_enabled, is_awe_error
        try:
            return super().invoke(ctx)
        except Exception as exc:
            one_line = isinstance(exc, (ConfigError, DatabaseError, PermissionError, LookupError, ValueError,
                                        OSError)) or is_awe_error(exc)
            if debug_enabled() or not one_line or isinstance(exc, click.ClickException):
                raise
            log_file = ctx.obj.get("log_file") if isinstance(ctx.obj, dict) else None
            if log_file is not None:
                log.error("%s: %s", type(exc).__name__, exc, exc_info=True, extra={"awe_file_only": True})
            _fail(str(exc))


class _TqdmHandler(logging.Handler):
    """Log records on the screen without breaking the progress bars.

    Unless ``verbose``, a record shows its first line only (a job's traceback is for the log file) and the
    warnings that fall below the screen's level (a long run shows only its errors) are counted in ``hidden``.
    """

    def __init__(self, level: int, verbose: bool) -> None:
        super().__init__(logging.DEBUG)
        self.screen_level, self.verbose, self.hidden = level, verbose, 0

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm
        if record.levelno < self.screen_level:
            self.hidden += record.levelno >= logging.WARNING
            return
        try:
            text = self.format(record)
            if not self.verbose and "\n" in text:
                text = text.split("\n", 1)[0] + " (the details: awe.log)"
            tqdm.write(text, file=sys.stderr)
        except Exception:  # pragma: no cover - as logging.StreamHandler does
            self.handleError(record)


def _screen() -> _TqdmHandler | None:
    """The screen's log handler :func:`_configure_logging` installed."""
    return next((h for h in logging.getLogger("awe").handlers if isinstance(h, _TqdmHandler)), None)


def _configure_logging(verbose: bool) -> Path | None:
    """Screen: warnings and errors (``-v``: everything); ``awe.log`` in the working folder: everything."""
    logger = logging.getLogger("awe")
    level = logging.DEBUG if verbose else logging.INFO
    logger.setLevel(level)
    for handler in [h for h in logger.handlers if getattr(h, "_awe_cli", False)]:
        logger.removeHandler(handler)
        handler.close()
    screen = _TqdmHandler(level if verbose else logging.WARNING, verbose)
    screen.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    screen.addFilter(lambda record: not getattr(record, "awe_file_only", False))
    handlers: list[logging.Handler] = [screen]
    path = None
    try:
        from awe.config import ConfigError, load_settings
        workdir = Path(load_settings().workdir)
    except ConfigError:
        workdir = None  # the verb reports the bad setting itself
    if workdir is not None and workdir.is_dir():
        path = workdir / LOG_FILE
        try:
            file = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            click.echo(f"awe: cannot write the log file {path} ({exc}); logging to the screen only", err=True)
            path = None
        else:
            file.setLevel(level)
            file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            handlers.append(file)
    for handler in handlers:
        handler._awe_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return path


@click.group(cls=_Cli, invoke_without_command=True)
@click.option("-v", "--verbose", is_flag=True, help="Show every log message on the screen, debug ones too.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """awe: the Astro-WISE environment. Without a command: open the awe> prompt.

    The commands write their log to awe.log in the working folder.
    """
    import awe
    awe.choose_backend()
    if ctx.invoked_subcommand is None:
        from awe.shell import configure_logging, start_prompt
        configure_logging(logging.DEBUG if verbose else logging.INFO)
        start_prompt()
    else:
        ctx.obj = {"log_file": _configure_logging(verbose)}


# ----------------------------------------------------------------- data
@main.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", default=0.125, show_default=True, help="Chip size factor (1 = full size, ~4.4 GB).")
@click.option("--seed", default=1, show_default=True, help="Random seed (the night is deterministic for it).")
def sim(outdir: Path, scale: float, seed: int) -> None:
    """Simulate the course night (WFI, 2003-03-03) as ESO raw files, with truth."""
    from awe.sim import simulate_night
    path = simulate_night(outdir, scale=scale, seed=seed, progress=_progress("simulate"))
    click.echo(f"simulated night written to {path}")


_UNITS = {"simulate": "chip", "ingest": "file"}  # the DPU's steps count jobs


def _progress(label: str):
    """A progress bar for one step: the ``(done, total, name)`` callback the library reports to."""
    from tqdm import tqdm
    bar: dict = {}
    unit = _UNITS.get(label, "job")

    def report(done: int, total: int, name: str = "") -> None:
        if "bar" not in bar:
            if done >= total:
                return
            bar["bar"] = tqdm(total=total, desc=f"{label:10s}", unit=unit, file=sys.stderr, leave=True,
                              dynamic_ncols=True)
        if bar["bar"].total != total:  # a step's follow-up jobs join it
            bar["bar"].total = total
        bar["bar"].n = done
        bar["bar"].set_postfix_str(str(name)[-40:], refresh=False)
        if done >= total:
            bar.pop("bar").close()
        else:
            bar["bar"].refresh()

    return report


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--project", default="ALL", show_default=True,
              help="Project to ingest into (the course keeps raw data in ALL).")
def ingest(paths: tuple[Path, ...], project: str) -> None:
    """Ingest ESO raw files (or folders of them) into the database and data storage."""
    from awe.tasks.ingest import ingest as run_ingest
    _connect(project)
    report = run_ingest(list(paths), progress=_progress("ingest"))
    click.echo(str(report))
    if report.failed:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(["astrometric", "standard"]), required=True)
@click.option("--name", default=None, help="Catalogue name (default: the file name).")
@click.option("--project", default=None, help="Project to load into (e.g. ALL).")
def refcat(path: Path, kind: str, name: str | None, project: str | None) -> None:
    """Load a reference catalogue (FITS or CSV with RA/Dec/magnitude columns)."""
    from awe.model.refcat import load_refcat
    _connect(project)
    cat = load_refcat(path, kind, name=name)
    click.echo(f"loaded {cat.n_sources} {kind} reference sources as {cat.filename}")


# ----------------------------------------------------------------- users and projects
@main.group()
def user() -> None:
    """Manage users (administrators create them; everyone changes his own password)."""


@user.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The new user's password (asked for when not given).")
@click.option("--admin", is_flag=True, help="Make the user an administrator.")
def user_add(name: str, password: str, admin: bool) -> None:
    """Create a user with a private project (MYDB): administrators only.

    On PostgreSQL this also creates the user's database role, whose password is this one.
    """
    _connect().add_user(name, password, admin=admin)
    click.echo(f"user {name} created with private project {name.upper()}" + (" (administrator)" if admin else ""))


@user.command("passwd")
@click.argument("name", required=False)
@click.option("--old-password", default=None, help="Your current password (asked for when you change your own).")
@click.option("--password", prompt="New password", hide_input=True, confirmation_prompt=True)
def user_passwd(name: str | None, old_password: str | None, password: str) -> None:
    """Change your own password (giving the old one) or, as an administrator, reset NAME's."""
    ctx = _connect()
    name = name or ctx.user
    if name == ctx.user and old_password is None:
        old_password = click.prompt("Current password", hide_input=True, default="", show_default=False)
    ctx.set_password(name, password, old_password)
    click.echo(f"password of {name} changed")


@main.group()
def project() -> None:
    """Manage projects (contexts)."""


@project.command("add")
@click.argument("name")
@click.option("--description", default=None)
@click.option("--member", "members", multiple=True, help="User to add (repeatable).")
@click.option("--manager", "managers", multiple=True, help="User who manages it: adds members (repeatable).")
@click.option("--public", is_flag=True, help="Readable by everyone (like ALL).")
def project_add(name: str, description: str | None, members: tuple[str, ...], managers: tuple[str, ...],
                public: bool) -> None:
    """Create a group project visible to its members only: administrators only."""
    _connect().add_project(name, description, members=members, public=public, managers=managers)
    click.echo(f"project {name} created")


@project.command("add-member")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@click.option("--manager", is_flag=True, help="Make them managers of the project.")
def project_add_member(name: str, users: tuple[str, ...], manager: bool) -> None:
    """Add users to a group project: its managers or an administrator."""
    ctx = _connect()
    for u in users:
        ctx.add_member(name, u, manager=manager)
    click.echo(f"added {', '.join(users)} to {name}" + (" as managers" if manager else ""))


@project.command("list")
def project_list() -> None:
    """List the projects you may work in."""
    for name in _connect().list_projects():
        click.echo(name)


# ----------------------------------------------------------------- exclusion lists and the audit trail
def _object(filename: str):
    import awe.model  # noqa: F401  (registers every class, so a query on DBObject sees them all)
    from awe.db.schema import DBObject
    found = list(DBObject.filename == filename)
    if not found:
        raise LookupError(f"no object with file name {filename} is visible in your current project")
    return found[0]


@main.command()
@click.argument("filenames", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (written to the task logs).")
@click.option("--project", default=None, help="Whose selections leave them out (default: your private project).")
def exclude(filenames: tuple[str, ...], reason: str, project: str | None) -> None:
    """Leave objects (e.g. shared raw frames) out of a project's task selections, without changing them."""
    ctx = _connect(project)
    for name in filenames:
        ctx.exclude(_object(name), reason)
    click.echo(f"excluded {len(filenames)} object(s) from the selections of {ctx.project.name}")


@main.command()
@click.argument("filenames", nargs=-1, required=True)
@click.option("--project", default=None, help="Whose exclusion list (default: your private project).")
def include(filenames: tuple[str, ...], project: str | None) -> None:
    """Take objects off a project's exclusion list."""
    ctx = _connect(project)
    done = sum(ctx.include(_object(name)) for name in filenames)
    click.echo(f"{done} object(s) taken off the exclusion list of {ctx.project.name}")


@main.command()
@click.argument("filename", required=False)
@click.option("--project", default=None, help="Project to look in (default: your private project and ALL).")
def history(filename: str | None, project: str | None) -> None:
    """The audit trail: who changed is_valid, quality_flags, validity ranges, published or deleted what."""
    ctx = _connect(project)
    for change in ctx.history(_object(filename) if filename else None):
        click.echo(str(change))


# ----------------------------------------------------------------- storage and database
@main.group()
def storage() -> None:
    """Data storage maintenance."""


@storage.command("vacuum")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--min-age", default=3600.0, show_default=True,
              help="Keep files younger than this [s]; at least 600 (younger ones may belong to a running ingest).")
def storage_vacuum(dry_run: bool, min_age: float) -> None:
    """Remove stored files no database row refers to (left by interrupted commits)."""
    from awe.db.privileged import referenced_files
    from awe.storage import vacuum
    ctx = _connect()
    removed = vacuum(ctx.storage, referenced_files(ctx.session), dry_run=dry_run, min_age_s=min_age)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed)} orphaned file(s)")
    for name in removed:
        click.echo(f"  {name}")


@storage.command("check")
@click.option("--repair", is_flag=True, help="Re-make raw chips from --source; mark the rest FILE_LOST.")
@click.option("--source", "sources", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder with the original raw files (repeatable).")
@click.option("--quick", is_flag=True, help="Check existence only (no checksums).")
def storage_check(repair: bool, sources: tuple[Path, ...], quick: bool) -> None:
    """Verify every file of the database against the data storage (exists; SHA-256, hence size too)."""
    from awe.tasks.check_storage import check_storage
    ctx = _connect()
    report = check_storage(ctx.session, repair=repair, sources=sources, checksums=not quick)
    click.echo(str(report))
    if report.unresolved:
        sys.exit(1)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to this awe's revision (Alembic); a new database gets its administrator.

    The administrator of a new database is the user who runs this first: on
    PostgreSQL the role AWE_USER (the database owner: it needs CREATEROLE), on
    the embedded database AWE_USER (by default your login name).
    """
    from awe.config import load_settings
    from awe.db.accounts import administrators
    from awe.db.engine import make_engine, schema_revision, upgrade
    from awe.db.session import Session, login_url
    settings = load_settings()
    engine = make_engine(login_url(settings))
    before = schema_revision(engine)
    upgrade(engine)
    engine.dispose()
    session = Session.open(settings)
    click.echo(f"schema upgraded from {before} to {schema_revision(session.engine)}; "
               f"administrators: {', '.join(administrators(session.database))}")
    session.dispose()


@db.command("authenticator")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def db_authenticator(name: str, password: str) -> None:
    """PostgreSQL: a login role for the web server and DPU workers that can only act as awe users (SET ROLE)."""
    from awe.db.accounts import PrivilegeError
    from awe.db.rls import create_authenticator
    ctx = _connect()
    if ctx.session.database.is_sqlite:
        raise ValueError("the embedded database has no roles: an authenticator is for PostgreSQL")
    if not ctx.is_admin:
        raise PrivilegeError(f"user {ctx.user} may not create an authenticator: only an administrator may")
    with ctx.engine.begin() as conn:
        create_authenticator(conn, name, password)
    click.echo(f"authenticator {name} created: it can act as every awe user of this database, nothing else")


# ----------------------------------------------------------------- the course
@main.command()
@click.option("--outdir", default="course-night", show_default=True, type=click.Path(path_type=Path),
              help="Where the simulated raw night goes.")
@click.option("--scale", default=0.125, show_default=True, help="Chip size factor (1 = full size).")
@click.option("--seed", default=1, show_default=True)
@click.option("--chip", "chips", multiple=True, help="One chip to reduce (e.g. --chip ccd50; default: all 8).")
@click.option("--executor", default=None, help="The DPU's engine: in-process (default), 'pool', 'dask' (a local "
              "cluster) or a scheduler address tcp://HOST:8786.")
@click.option("--prompt-command", default=None, hidden=True,
              help="The command that opens the prompt on this data (run.sh gives its own).")
@click.pass_context
def demo(ctx: click.Context, outdir: Path, scale: float, seed: int, chips: tuple[str, ...], executor: str | None,
         prompt_command: str | None) -> None:
    """The course (spec sections 5-10) on a simulated WFI night, on the embedded database: the coadd of 3C273 and
    its source list by target processing.

    Ends with the command that opens the awe> prompt on the demo's data.
    """
    from awe.demo import prepare_prompt, run_course
    session = _connect()
    screen = _screen()
    if screen is not None and not screen.verbose:
        screen.screen_level = logging.ERROR  # the warnings of a whole night: counted here, each in awe.log
    report = run_course(outdir, scale=scale, seed=seed, chips=list(chips) or None, progress=_progress,
                        executor=executor)
    click.echo(report.summary())
    log_file = (ctx.obj or {}).get("log_file")
    if screen is not None and screen.hidden:
        click.echo(f"{screen.hidden} warning(s) logged (quality checks, seeing, ...), each in {log_file or 'the log'}")
    if log_file is not None:
        click.echo(f"Every step in detail: {log_file}")
    command = prepare_prompt(session.settings, prompt_command)
    click.echo("Open the awe> prompt on this data (the course works there as written; `awe serve` shows it in a "
               "browser):")
    click.echo(f"    {command}")
    if report.failed:
        sys.exit(1)


# ----------------------------------------------------------------- the web application
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (a TLS reverse proxy "
              "in front for a team: README).")
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--secure-cookies", is_flag=True, help="Send the login cookie over HTTPS only (behind a TLS proxy).")
@click.option("--proxy-headers", is_flag=True, help="Trust X-Forwarded-For/-Proto from the proxy on 127.0.0.1.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (one core each: as many as the machine's cores for many users).")
@click.option("--threads", default=None, type=click.IntRange(1, 256),
              help="Requests each process runs at once, the others waiting their turn (default: 2).")
def serve(host: str, port: int, secure_cookies: bool, proxy_headers: bool, workers: int, threads: int | None
          ) -> None:
    """The web application (DB viewer, lineage, previews, validity editor, publishing) on the prompt's database.

    On PostgreSQL the server logs in as AWE_USER/AWE_PASSWORD, which should be an authenticator role
    (`awe db authenticator NAME`): each request then acts as the logged-in user (row-level security).
    """
    from awe.config import load_settings
    from awe.web.app import THREADS, serve as run
    settings = load_settings()
    threads = threads or THREADS
    click.echo(f"awe web on http://{host}:{port}/ (database {settings.database_url}, {workers} worker(s) of "
               f"{threads} thread(s)); Ctrl-C stops it")
    run(host, port, workers=workers, threads=threads, https_only=secure_cookies, proxy_headers=proxy_headers)
# ----------------------------------------------------------------- the DPU and target processing
from awe.dpu.cli import dpu_group, make_command  # noqa: E402

main.add_command(dpu_group)
main.add_command(make_command)


if __name__ == "__main__":  # pragma: no cover
    main()
