"""Request-scoped dependencies: the container, and the caller behind a bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from glimpse.accounts import service as accounts
from glimpse.accounts.service import Authenticated
from glimpse.container import Container
from glimpse.errors import Unauthenticated


def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_caller(request: Request, container: ContainerDep) -> Authenticated:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("A bearer token is required.", code="unauthenticated")
    async with container.db.read() as session:
        return await accounts.authenticate(session, token.strip())


Caller = Annotated[Authenticated, Depends(get_caller)]
