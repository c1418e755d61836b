"""Job handlers, registered by name with a decorator and checked when a worker starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from glimpse.container import Container

Payload = dict[str, Any]


class PermanentJobError(Exception):
    """Retrying cannot help (say, an image that cannot be decoded): the job goes straight to dead
    letters, and `code`/`message` reach whoever the job was for."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Handler = Callable[["Container", Payload], Awaitable[None]]
DeadHandler = Callable[["Container", Payload, PermanentJobError], Awaitable[None]]
# Undoes what on_dead did, in the transaction that gives a dead job back to the queue (an
# operator's `glimpse jobs retry`): the post its failure marked failed is processing again.
ReviveHandler = Callable[["AsyncSession", Payload], Awaitable[None]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    handler: Handler
    on_dead: DeadHandler | None
    # Periodic jobs: workers keep one run of it pending, due `every` seconds from scheduling.
    every: float | None = None
    # Which of a worker's lanes runs it: long work (a video's transcode) has a lane of its own,
    # with its own concurrency and lease, so that short jobs never wait behind it.
    lane: str = "default"
    on_revive: ReviveHandler | None = None


DEFAULT_LANE = "default"
VIDEO_LANE = "video"


class UnknownJob(LookupError):
    pass


class JobRegistry:
    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}

    def job(
        self,
        name: str,
        *,
        on_dead: DeadHandler | None = None,
        every: float | None = None,
        lane: str = DEFAULT_LANE,
        on_revive: ReviveHandler | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if name in self._specs and self._specs[name].handler is not handler:
                raise ValueError(f"job {name!r} is registered twice")
            self._specs[name] = JobSpec(name, handler, on_dead, every, lane, on_revive)
            return handler

        return register

    def get(self, name: str) -> JobSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownJob(name) from None

    def names(self, lane: str | None = None) -> set[str]:
        """Every registered name, or those of one lane."""
        return {name for name, spec in self._specs.items() if lane in (None, spec.lane)}

    def periodic(self) -> list[JobSpec]:
        return [spec for spec in self._specs.values() if spec.every is not None]


# The application's registry. Slices register into it from their jobs.py; container.py imports
# those modules so that every process knows every handler.
registry = JobRegistry()
job = registry.job
