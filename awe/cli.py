"""The ``awe`` command: the prompt, and verbs for data, users, projects, storage and the demo."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from awe.shell import configure_logging

log = logging.getLogger("awe.cli")


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
        try:
            return super().invoke(ctx)
        except (ConfigError, DatabaseError, PermissionError, LookupError, ValueError, OSError) as exc:
            _fail(str(exc))


@click.group(cls=_Cli, invoke_without_command=True)
@click.option("-v", "--verbose", is_flag=True, help="Show debug messages.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """awe: the Astro-WISE environment. Without a command: open the awe> prompt."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)
    if ctx.invoked_subcommand is None:
        from awe.shell import start_prompt
        start_prompt()


# ----------------------------------------------------------------- data
@main.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scale", default=0.125, show_default=True, help="Chip size factor (1 = full size, ~4.4 GB).")
@click.option("--seed", default=1, show_default=True, help="Random seed (the night is deterministic for it).")
def sim(outdir: Path, scale: float, seed: int) -> None:
    """Simulate the course night (WFI, 2003-03-03) as ESO raw files, with truth."""
    from awe.sim import simulate_night
    path = simulate_night(outdir, scale=scale, seed=seed, progress=_progress("simulating"))
    click.echo(f"simulated night written to {path}")


def _progress(label: str):
    from tqdm import tqdm
    bar: dict = {}

    def report(done: int, total: int, name: str = "") -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=label, unit="file", file=sys.stderr, leave=False)
        bar["bar"].n = done
        bar["bar"].set_postfix_str(str(name)[-40:])
        bar["bar"].refresh()
        if done >= total:
            bar.pop("bar").close()

    return report


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--project", default=None, help="Project to ingest into (the course keeps raw data in ALL).")
def ingest(paths: tuple[Path, ...], project: str | None) -> None:
    """Ingest ESO raw files (or folders of them) into the database and data storage."""
    from awe.tasks.ingest import ingest as run_ingest
    _connect(project)
    report = run_ingest(list(paths), progress=_progress("ingesting"))
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
    """Manage users."""


@user.command("add")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, default="",
              help="Password (asked for when not given; empty for none).")
def user_add(name: str, password: str) -> None:
    """Create a user with a private project (MYDB)."""
    from awe import context
    from awe.config import load_settings
    settings = load_settings()
    context.connect(settings, create_user=True)
    context.add_user(name, password or None)
    click.echo(f"user {name} created with private project {name.upper()}")


@user.command("passwd")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, default="")
def user_passwd(name: str, password: str) -> None:
    """Change a user's password."""
    _connect().set_password(name, password or None)
    click.echo(f"password of {name} changed")


@main.group()
def project() -> None:
    """Manage projects (contexts)."""


@project.command("add")
@click.argument("name")
@click.option("--description", default=None)
@click.option("--member", "members", multiple=True, help="User to add (repeatable).")
@click.option("--public", is_flag=True, help="Readable by everyone (like ALL).")
def project_add(name: str, description: str | None, members: tuple[str, ...], public: bool) -> None:
    """Create a group project visible to its members only."""
    _connect().add_project(name, description, members=members, public=public)
    click.echo(f"project {name} created")


@project.command("add-member")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
def project_add_member(name: str, users: tuple[str, ...]) -> None:
    """Add users to a group project."""
    ctx = _connect()
    for u in users:
        ctx.add_member(name, u)
    click.echo(f"added {', '.join(users)} to {name}")


@project.command("list")
def project_list() -> None:
    """List the projects you may work in."""
    for name in _connect().list_projects():
        click.echo(name)


# ----------------------------------------------------------------- storage and database
@main.group()
def storage() -> None:
    """Data storage maintenance."""


@storage.command("vacuum")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--min-age", default=3600.0, show_default=True, help="Keep files younger than this [s].")
def storage_vacuum(dry_run: bool, min_age: float) -> None:
    """Remove stored files no database row refers to (left by interrupted commits)."""
    import sqlalchemy as sa
    from awe.db.schema import DBObject
    from awe.storage import vacuum
    ctx = _connect()
    table = DBObject.__table__
    with ctx.engine.connect() as conn:
        known = set(conn.execute(sa.select(table.c.filename).where(table.c.filename.is_not(None))).scalars())
    removed = vacuum(ctx.storage, known, dry_run=dry_run, min_age_s=min_age)
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(removed)} orphaned file(s)")
    for name in removed:
        click.echo(f"  {name}")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to this awe's revision (Alembic)."""
    from awe.config import load_settings
    from awe.db.engine import make_engine, schema_revision, upgrade
    engine = make_engine(load_settings().database_url)
    before = schema_revision(engine)
    upgrade(engine)
    click.echo(f"schema upgraded from {before} to {schema_revision(engine)}")


# ----------------------------------------------------------------- the course
@main.command()
@click.option("--outdir", default="course-night", show_default=True, type=click.Path(path_type=Path),
              help="Where the simulated raw night goes.")
@click.option("--scale", default=0.125, show_default=True, help="Chip size factor (1 = full size).")
@click.option("--seed", default=1, show_default=True)
@click.option("--chip", "chips", multiple=True, help="Chips to reduce (default: all 8).")
def demo(outdir: Path, scale: float, seed: int, chips: tuple[str, ...]) -> None:
    """The course reduction (spec sections 5-6) on a simulated WFI night, on the embedded database."""
    from awe.demo import run_course
    summary = run_course(outdir, scale=scale, seed=seed, chips=list(chips) or None,
                         progress=_progress("ingesting"))
    click.echo(summary)


if __name__ == "__main__":  # pragma: no cover
    main()
