"""The operator's commands: `glimpse jobs ...`, `glimpse users ...`, `glimpse storage verify`,
`glimpse backup` and `glimpse restore`. Each one builds the same container as the server (so the
same backends, chosen by the same settings), does one thing, and exits 0, or 1 with one line
that says what is wrong."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from glimpse.cli_options import DataDir, settings_for
from glimpse.errors import StorageUnavailable
from glimpse.ops import backup

if TYPE_CHECKING:
    from glimpse.container import Container

# (admin_jobs, admin_users and storage_check are imported by the commands that use them: they
# import the container, whose metrics must not load before `glimpse serve` has set up
# Prometheus's multiprocess folder.)

T = TypeVar("T")

# The largest id and count a database column holds (a signed 64-bit integer): past it a number
# is refused as the operator typed it, not in a traceback from the driver.
_LARGEST = 2**63 - 1

jobs_app = typer.Typer(help="The jobs table: list, retry dead jobs, purge them.")
users_app = typer.Typer(help="Accounts: create, disable, enable, reset a password.")
storage_app = typer.Typer(help="The media store.")
media_app = typer.Typer(help="Photos and videos: what processing makes of them.")


@contextlib.contextmanager
def _operator_errors() -> Iterator[None]:
    try:
        yield
    except backup.OperatorError as exc:
        typer.echo(f"glimpse: {exc}", err=True)
        raise typer.Exit(1) from None
    except (OSError, SQLAlchemyError, StorageUnavailable) as exc:
        reason = getattr(exc, "orig", None) or exc
        typer.echo(
            f"glimpse: the data folder, database or store cannot be used: {reason}", err=True
        )
        raise typer.Exit(1) from None


def _with_container(data_dir: Path | None, work: Callable[[Container], Awaitable[T]]) -> T:
    from glimpse.container import build_container
    from glimpse.db.migrate import upgrade_to_head

    settings = settings_for(data_dir)

    async def run() -> T:
        container = build_container(settings)
        await container.start()
        try:
            return await work(container)
        finally:
            await container.close()

    with _operator_errors():
        if settings.is_sqlite:
            upgrade_to_head(settings.resolved_database_url)
        return asyncio.run(run())


# --- jobs ------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    state: Annotated[
        str, typer.Option(help="queued, running, dead, or all.", show_default=True)
    ] = "all",
    limit: Annotated[
        int, typer.Option(min=1, max=_LARGEST, help="At most this many, oldest due first.")
    ] = 100,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Jobs and where they stand: id, kind, state, attempts, when due, the last error."""
    from glimpse.ops import admin_jobs

    if state != "all" and state not in admin_jobs.STATES:
        raise typer.BadParameter(
            f"one of {', '.join(admin_jobs.STATES)} or all", param_hint="--state"
        )
    lines = _with_container(
        data_dir,
        lambda c: admin_jobs.list_jobs(c, None if state == "all" else state, limit),
    )
    now = time.time()
    for line in lines:
        typer.echo(line.as_json() if json_lines else line.as_text(now))


@jobs_app.command("retry")
def jobs_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(min=1, max=_LARGEST, help="Ids of dead jobs.")
    ] = None,
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead job.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Give dead jobs another full set of attempts, due now (their posts are processing again)."""
    from glimpse.ops import admin_jobs

    if bool(ids) == all_dead:
        raise typer.BadParameter("give job ids, or --all-dead")
    revived = _with_container(
        data_dir, lambda c: admin_jobs.retry_dead_jobs(c, None if all_dead else ids)
    )
    missed = sorted(set(ids or ()) - set(revived))
    typer.echo(f"{len(revived)} job(s) queued again")
    if missed:
        typer.echo(f"not dead jobs (left alone): {' '.join(map(str, missed))}", err=True)
        raise typer.Exit(1)


@jobs_app.command("purge-dead")
def jobs_purge_dead(
    older_than_days: Annotated[
        float, typer.Option(min=0, help="Only those whose last run ended this long ago.")
    ] = 30.0,
    data_dir: DataDir = None,
) -> None:
    """Delete dead jobs (the errors that buried them go with them)."""
    from glimpse.ops import admin_jobs

    purged = _with_container(
        data_dir, lambda c: admin_jobs.purge_dead_jobs(c, older_than_days * 86400)
    )
    typer.echo(f"{purged} dead job(s) deleted")


# --- media -----------------------------------------------------------------------------------


@media_app.command("backfill-avif")
def media_backfill_avif(
    batch_size: Annotated[
        int, typer.Option(min=1, max=_LARGEST, help="Photos queued per transaction.")
    ] = 500,
    after: Annotated[
        int,
        typer.Option(
            min=0, max=_LARGEST, help="Start past this media id (what an earlier run printed)."
        ),
    ] = 0,
    limit: Annotated[
        int | None, typer.Option(min=1, max=_LARGEST, help="Queue at most this many in all.")
    ] = None,
    pause: Annotated[
        float, typer.Option(min=0, help="Seconds between batches, to let a busy queue drain.")
    ] = 0.0,
    data_dir: DataDir = None,
) -> None:
    """Queue AVIF copies (w1080, w640) for photos of ready posts that have none. Safe to run
    again: photos that have them are skipped; --after resumes where a run stopped."""
    from glimpse.ops.avif_backfill import BackfillProgress, backfill_avif

    def report(progress: BackfillProgress) -> None:
        typer.echo(f"queued {progress.queued} (through media id {progress.last_media_id})")

    done = _with_container(
        data_dir,
        lambda c: backfill_avif(
            c, batch_size=batch_size, after=after, limit=limit, pause_seconds=pause, report=report
        ),
    )
    typer.echo(f"{done.queued} photo(s) queued for AVIF copies")


# --- users -----------------------------------------------------------------------------------


def _read_password(from_stdin: bool, generate: bool) -> tuple[str, bool]:
    """The password, and whether it was made here (then it is printed for the operator)."""
    if generate and from_stdin:
        # (Either would be a guess: a password piped in for nothing, or one set but not made.)
        raise typer.BadParameter("give --generate or --password-stdin, not both")
    if generate:
        return secrets.token_urlsafe(15), True  # 20 characters, 120 bits
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True), False


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
Generate = Annotated[bool, typer.Option("--generate", help="Make a strong password and print it.")]


@users_app.command("create")
def users_create(
    username: str,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
    data_dir: DataDir = None,
) -> None:
    """Create an account (as the API's sign-up does, without its throttling)."""
    from glimpse.ops import admin_users

    with _operator_errors():
        admin_users.check_username(username)
    password, made = _read_password(password_stdin, generate)
    user = _with_container(data_dir, lambda c: admin_users.create_user(c, username, password))
    typer.echo(f"created {user.username} ({user.id})")
    if made:
        typer.echo(f"password: {password}")


@users_app.command("disable")
def users_disable(username: str, data_dir: DataDir = None) -> None:
    """Stop an account signing in, and sign it out everywhere; what it posted stays."""
    from glimpse.ops import admin_users

    changed = _with_container(data_dir, lambda c: admin_users.set_disabled(c, username, True))
    typer.echo(f"{username} disabled" if changed else f"{username} was already disabled")


@users_app.command("enable")
def users_enable(username: str, data_dir: DataDir = None) -> None:
    """Let a disabled account sign in again."""
    from glimpse.ops import admin_users

    changed = _with_container(data_dir, lambda c: admin_users.set_disabled(c, username, False))
    typer.echo(f"{username} enabled" if changed else f"{username} was not disabled")


@users_app.command("reset-password")
def users_reset_password(
    username: str,
    password_stdin: PasswordStdin = False,
    generate: Generate = False,
    data_dir: DataDir = None,
) -> None:
    """Set a new password, and sign the account out everywhere."""
    from glimpse.ops import admin_users

    password, made = _read_password(password_stdin, generate)
    _with_container(data_dir, lambda c: admin_users.reset_password(c, username, password))
    typer.echo(f"new password set for {username}; every session of it is signed out")
    if made:
        typer.echo(f"password: {password}")


# --- storage, backups --------------------------------------------------------------------------


@storage_app.command("verify")
def storage_verify(
    show: Annotated[int, typer.Option(help="List at most this many keys of each kind.")] = 20,
    data_dir: DataDir = None,
) -> None:
    """Check that the store holds every object the database records; report what it holds that
    nothing records. Exits 1 when an object is missing."""
    from glimpse.ops import storage_check

    report = _with_container(data_dir, storage_check.verify_storage)
    typer.echo(f"{report.recorded} key(s) recorded, {report.stored} object(s) stored")
    typer.echo(f"{len(report.missing)} missing")
    for key in report.missing[:show]:
        typer.echo(f"  missing: {key}")
    typer.echo(f"{len(report.unrecorded)} not recorded (awaiting a purge or the hourly sweep)")
    for key in report.unrecorded[:show]:
        typer.echo(f"  not recorded: {key}")
    if not report.sound:
        raise typer.Exit(1)


def backup_command(destination: Path, data_dir: DataDir = None) -> None:
    """Copy the embedded database (a consistent snapshot, taken while Glimpse runs), the media
    it records and the secret key into DESTINATION (a new or empty folder)."""
    with _operator_errors():
        manifest = backup.take_backup(settings_for(data_dir), destination)
    typer.echo(f"backed up {manifest.files} file(s), {manifest.bytes} bytes, to {destination}")
    if manifest.missing:
        typer.echo(f"{manifest.missing} file(s) were deleted during the backup", err=True)


def restore_command(source: Path, data_dir: DataDir = None) -> None:
    """Restore a backup into a data folder that has no database, then migrate it."""
    from glimpse.db.migrate import upgrade_to_head

    settings = settings_for(data_dir)
    kept_ours = backup.keeps_another_secret(settings, source)
    with _operator_errors():
        manifest = backup.restore_backup(settings, source)
        upgrade_to_head(settings.resolved_database_url)
    typer.echo(f"restored {manifest.files} file(s) and the database into {settings.data_dir}")
    if kept_ours:
        typer.echo(
            f"kept the secret_key already in {settings.data_dir}, not the backup's other one:"
            " sessions and signed links made before the backup are no longer valid (copy the"
            " backup's secret_key over it, before the server starts, to keep them)",
            err=True,
        )


def add_commands(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(users_app, name="users")
    app.add_typer(storage_app, name="storage")
    app.add_typer(media_app, name="media")
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
