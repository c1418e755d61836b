"""`glimpse serve | worker | migrate`. Flags win over their GLIMPSE_* variables."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import math
import multiprocessing
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from glimpse import __version__
from glimpse.cli_options import DataDir, settings_for
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head
from glimpse.ops.admin_cli import add_commands
from glimpse.ops.logs import setup_logging

# Named here, not imported from ops.metrics: importing prometheus_client would be too early.
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

app = typer.Typer(help="Glimpse: self-hostable photo and video sharing.", no_args_is_help=True)
log = logging.getLogger("glimpse")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"glimpse {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Glimpse: self-hostable photo and video sharing."""


def worker_count(settings: Settings, workers: int | None, no_workers: bool) -> int:
    """Worker processes beside the API: --no-workers, else the flag, else GLIMPSE_WORKERS;
    unset or 0 means one per core."""
    if no_workers:
        return 0
    chosen = workers if workers is not None else settings.workers
    return chosen or os.cpu_count() or 1


def _setup_logging(data_dir: Path | None = None) -> Settings:
    """Logging as the settings say (GLIMPSE_LOG_FORMAT), and those settings."""
    settings = settings_for(data_dir)
    setup_logging(settings.log_format)
    return settings


async def _run_worker(
    settings: Settings,
    concurrency: int,
    stop_signals: tuple[int, ...],
    parent_pid: int | None = None,
) -> None:
    from glimpse.container import build_container
    from glimpse.worker import run_worker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)

    async def stop_when_orphaned() -> None:
        # A `glimpse serve` killed outright (SIGKILL, OOM) cannot stop its workers; they notice
        # that their parent is gone and stop themselves rather than run on unsupervised.
        while not stop.is_set():
            if os.getppid() != parent_pid:
                log.warning("the glimpse serve process is gone; stopping")
                stop.set()
            await asyncio.sleep(1.0)

    watchdog = asyncio.create_task(stop_when_orphaned()) if parent_pid is not None else None
    container = build_container(settings)
    # A start that waits (a full disk, a database not up yet: up to a minute) ends at once
    # when told to stop, as a stop, not a failure.
    starting = asyncio.ensure_future(container.start())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not starting.done():
        starting.cancel()
        await asyncio.wait({starting})
        if watchdog is not None:
            watchdog.cancel()
        await container.close()
        return
    starting.result()
    try:
        if parent_pid is None:  # alone: its own /metrics, if asked (serve's API has them)
            from glimpse.ops.worker_metrics import serving_metrics

            async with serving_metrics(container):
                await run_worker(container, stop, concurrency)
        else:
            await run_worker(container, stop, concurrency)
    finally:
        if watchdog is not None:
            watchdog.cancel()
        await container.close()


def worker_process_main(settings: Settings, concurrency: int, parent_pid: int) -> None:
    """Entry point of a worker process started by `glimpse serve`."""
    setup_logging(settings.log_format)
    # Ctrl-C reaches the whole process group; the parent stops us with SIGTERM once the API
    # has drained, so we ignore SIGINT and let the job in progress finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_run_worker(settings, concurrency, (signal.SIGTERM,), parent_pid))
    except Exception:
        # In the log's format, one line: multiprocessing would print the traceback raw to
        # stderr, a dozen lines that are not JSON, again at every restart (the supervisor
        # starts another).
        log.critical("the worker process failed", exc_info=True)
        raise SystemExit(1) from None


class WorkerSupervisor:
    """Keeps N worker processes running beside the API, restarting any that dies."""

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        self._count = count
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[int, BaseProcess] = {}
        self._started: dict[int, float] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=worker_process_main,
            args=(self._settings, 1, os.getpid()),
            name=f"glimpse-worker-{index}",
        )
        process.start()
        self._processes[index] = process
        self._started[index] = time.monotonic()

    def start(self) -> None:
        for index in range(self._count):
            self._spawn(index)
        self._thread.start()

    def _watch(self) -> None:
        # A worker that keeps dying at once (say, it refuses to start) is restarted less and
        # less often, up to once a minute, rather than in a tight loop.
        restarts = dict.fromkeys(range(self._count), 0)
        next_start = dict.fromkeys(range(self._count), 0.0)
        while not self._stopping.wait(1.0):
            for index, process in list(self._processes.items()):
                if process.is_alive() or self._stopping.is_set():
                    continue
                now = time.monotonic()
                if now - self._started[index] > 60:
                    restarts[index] = 0  # it had been running fine: this death is news
                if now < next_start[index]:
                    continue
                log.warning("worker %s exited with %s; starting another", index, process.exitcode)
                restarts[index] += 1
                next_start[index] = now + min(60.0, 2.0 ** restarts[index])
                self._spawn(index)

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        for process in self._processes.values():
            if process.is_alive() and process.pid:
                os.kill(process.pid, signal.SIGTERM)
        for process in self._processes.values():
            process.join(timeout)
            if process.is_alive():
                process.kill()


def metrics_root(data_dir: Path) -> Path:
    """Where the serves of this data directory keep their shared metrics: in memory (/dev/shm),
    not on the data disk. prometheus_client's files are memory-mapped and sparse, so on a full
    disk the first metric written into a page with no block behind it kills the process with
    SIGBUS, where every route should answer 503 storage_unavailable. One folder per data
    directory, so that two Glimpses on one machine keep apart."""
    # A folder everyone may write to: _share_metrics makes ours 0700 and refuses one that some
    # other user (or a symlink) holds.
    shm = Path("/dev/shm")  # noqa: S108
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return base / f"glimpse-metrics-{os.getuid()}-{digest}"


def _share_metrics(folder: Path) -> Path | None:
    """Let the API's /metrics show its workers' metrics too: prometheus_client's multiprocess
    mode, which must be chosen before any of serve's processes imports it.

    Each serve gets a folder of its own, so that a second serve on the same data directory
    neither resets nor mixes with the first one's counters; folders of serves that are gone are
    removed (their counters start from zero with the next run). Returns the folder made for
    this serve, for it to remove when it stops."""
    if "prometheus_client" in sys.modules:
        log.warning("metrics of worker processes will not show on /metrics")
        return None
    chosen = os.environ.get(MULTIPROCESS_ENV)  # an operator's own folder is kept as it is
    try:
        if chosen:
            target = Path(chosen)
            target.mkdir(parents=True, exist_ok=True)
        else:
            folder.mkdir(mode=0o700, exist_ok=True)
            held = folder.lstat()
            if not stat.S_ISDIR(held.st_mode) or held.st_uid != os.getuid() or held.st_mode & 0o077:
                raise PermissionError(f"{folder} is not a private folder of this user")
            _remove_metrics_of_stopped_serves(folder)
            target = _claim_metrics_folder(folder)
        _probe_room(target / f".probe-{os.getpid()}")
    except OSError as exc:
        log.warning(
            "metrics folder in %s is not usable (%s): each process keeps its own", folder, exc
        )
        os.environ.pop(MULTIPROCESS_ENV, None)
        return None
    os.environ[MULTIPROCESS_ENV] = str(target.resolve())
    return None if chosen else target


# Room a serve's processes' metrics files take at first (64 KB each, a few a process): a folder
# without it (a full /dev/shm) is found here, and each process keeps its own metrics, rather
# than every process failing as it makes its first metric (ops/metrics_files.py).
_METRICS_ROOM = 1 << 20


def _probe_room(probe: Path) -> None:
    try:
        with open(probe, "wb") as f:
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(f.fileno(), 0, _METRICS_ROOM)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
    finally:
        probe.unlink(missing_ok=True)


# A serve's metrics folder is alive while this lock on its ".alive" file is held: the lock goes
# with the process however it ends. (A pid would not do: pids repeat, in containers even at once.)
_ALIVE = ".alive"
_held_locks: list[int] = []


def _claim_metrics_folder(folder: Path) -> Path:
    # Made under a hidden name, locked, then renamed, so nobody ever sees it unlocked.
    name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    making = folder / f".{name}"
    making.mkdir()
    fd = os.open(making / _ALIVE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        target = folder / name
        making.rename(target)
    except OSError:  # no locks here (some network mounts): no shared metrics either
        os.close(fd)
        shutil.rmtree(making, ignore_errors=True)
        raise
    _held_locks.append(fd)
    return target


def _remove_metrics_of_stopped_serves(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            # Being made by a serve starting right now, or left by one that died doing so.
            with contextlib.suppress(FileNotFoundError):  # (renamed meanwhile by its serve)
                if time.time() - entry.stat().st_mtime > 3600:
                    shutil.rmtree(entry, ignore_errors=True)
            continue
        if entry.is_file() and entry.suffix == ".db":  # left by a release before per-serve folders
            entry.unlink(missing_ok=True)
        elif entry.is_dir() and not _is_alive(entry):
            shutil.rmtree(entry, ignore_errors=True)


def _is_alive(serve_folder: Path) -> bool:
    try:
        fd = os.open(serve_folder / _ALIVE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def _clear_start_up_errors(settings: Settings) -> Iterator[None]:
    """A data folder or database that cannot be used (read-only, full, missing permissions)
    stops the command with one line that says so, not a traceback."""
    try:
        yield
    except (OSError, SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or exc
        typer.echo(
            f"glimpse: cannot use the data folder {settings.data_dir} or its database: {reason}",
            err=True,
        )
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (or GLIMPSE_HOST; default 127.0.0.1).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (or GLIMPSE_PORT; default 8000).", show_default=False),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes beside the API (or GLIMPSE_WORKERS; default or 0: one per core).",
            show_default=False,
        ),
    ] = None,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="Run the API alone.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Run the API and its worker processes. Creates and migrates the embedded database on first start."""
    settings = _setup_logging(data_dir)
    host = host if host is not None else settings.host
    port = port if port is not None else settings.port
    from glimpse.api.listening import bind_listeners

    # First of all: a port already taken (another serve) stops us before anything below runs
    # against the data folder (api/listening.py).
    try:
        listeners = bind_listeners(host, port)
    except OSError as exc:
        typer.echo(f"glimpse: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None
    with _clear_start_up_errors(settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        own_metrics = _share_metrics(metrics_root(settings.data_dir))
        if settings.is_sqlite:
            upgrade_to_head(settings.resolved_database_url)
        settings.resolved_secret_key()  # made once here, before the processes race to make it
    supervisor = WorkerSupervisor(settings, worker_count(settings, workers, no_workers))
    supervisor.start()
    from glimpse.app import create_app

    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to whatever
    # handler was there before it; a quiet one lets us stop the workers and exit with 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    from glimpse.api.connections import plan_connections, raise_open_files_limit
    from glimpse.api.draining import DrainingServer
    from glimpse.api.http_protocol import guarded_protocol

    # Connections are capped below the open files this process may hold (api/connections.py).
    plan = plan_connections(
        raise_open_files_limit(), settings.max_connections, settings.max_concurrent_uploads
    )
    if plan.app_limit < settings.max_connections:
        log.warning("too few open files allowed: taking %d connections at once", plan.app_limit)
    settings = settings.model_copy(update={"max_connections": plan.app_limit})
    application = create_app(settings)
    try:
        config = uvicorn.Config(
            application,
            host=host,
            port=port,
            log_level="info",
            # Its lines through our handler, in our format; its access log would name the raw
            # path with its query (a signed URL's signature): ours logs the route instead.
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
            limit_concurrency=plan.server_limit,
            server_header=False,  # no banner naming the server software
            http=guarded_protocol(settings),  # header size, header deadline, per-client cap
        )
        # SIGTERM: out of the proxy's rotation first, then uvicorn's graceful shutdown.
        DrainingServer(config, application.state, settings.shutdown_drain_seconds).run(
            sockets=listeners
        )
    finally:
        supervisor.stop()
        if own_metrics is not None:
            shutil.rmtree(own_metrics, ignore_errors=True)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once in this process.")] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve /metrics on this port (or GLIMPSE_WORKER_METRICS_PORT; default: none).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Run workers alone (on any number of hosts, at scale)."""
    settings = _setup_logging(data_dir)
    if metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": metrics_port})
    asyncio.run(_run_worker(settings, concurrency, (signal.SIGTERM, signal.SIGINT)))


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply pending database migrations."""
    settings = _setup_logging(data_dir)
    with _clear_start_up_errors(settings):
        upgrade_to_head(settings.resolved_database_url)
    typer.echo("database is at the newest migration")


@app.command("edge-config")
def edge_config(
    listen: Annotated[str, typer.Option(help="HOST:PORT the edge listens on.")],
    upstream: Annotated[str, typer.Option(help="http://HOST:PORT of glimpse serve.")],
    cache_dir: Annotated[
        Path, typer.Option(help="nginx's cache, pid, logs and temporary files (made if missing).")
    ],
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM chain).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    worker_processes: Annotated[str, typer.Option(help="nginx worker processes.")] = "auto",
    cache_max_size: Annotated[str, typer.Option(help="Most the media cache holds.")] = "10g",
    user: Annotated[
        str | None,
        typer.Option(help="User of nginx's workers when started as root (they write the cache)."),
    ] = None,
) -> None:
    """Print an nginx.conf for an edge in front of glimpse serve (run it as
    `nginx -c FILE -g 'daemon off;'`)."""
    from glimpse.edge.nginx import EdgeConfigError, EdgeOptions, nginx_config

    options = EdgeOptions(
        listen=listen,
        upstream=upstream,
        cache_dir=cache_dir,
        tls_cert=tls_cert,
        tls_key=tls_key,
        worker_processes=worker_processes,
        cache_max_size=cache_max_size,
        user=user,
    )
    try:
        text = nginx_config(options, Settings())
    except EdgeConfigError as exc:
        typer.echo(f"glimpse: {exc}", err=True)
        raise typer.Exit(2) from None
    cache_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(text, nl=False)


add_commands(app)  # jobs, users, storage verify, backup, restore

if __name__ == "__main__":
    app()
