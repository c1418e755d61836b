"""HTTP routes of accounts, tokens and profiles."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from glimpse.accounts import service as accounts
from glimpse.accounts.models import User
from glimpse.accounts.schemas import (
    AccountCreate,
    MeOut,
    ProfileUpdate,
    TokenOut,
    TokenRequest,
    UserOut,
)
from glimpse.api.deps import Caller, ContainerDep
from glimpse.api.errors import error_responses, links
from glimpse.api.throttling import ClientAddress, count_against
from glimpse.graph import service as graph
from glimpse.posts import service as posts
from glimpse.throttling import SIGNUP

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(prefix="/api/v1", tags=["accounts"], responses=error_responses(422, 429, 503))
_AUTHENTICATED = error_responses(401)


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=UserOut,
    responses={
        **error_responses(400, 409),
        **links(
            201,
            GetUser=("get", "/api/v1/users/{username}", {"username": "$response.body#/username"}),
        ),
    },
)
async def create_account(
    body: AccountCreate, request: Request, address: ClientAddress, container: ContainerDep
) -> UserOut:
    """Create an account. The username is lowercase letters, digits, `_` and `.`; new accounts are public."""
    await count_against(
        request,
        container.throttle,
        SIGNUP,
        "address",
        address,
        message="Too many new accounts from this address; please try again later.",
    )
    user = await accounts.sign_up(
        container, username=body.username, password=body.password, display_name=body.display_name
    )
    return UserOut.of(user, "self")


@router.post("/auth/token", response_model=TokenOut, responses=error_responses(400, 401))
async def issue_token(
    body: TokenRequest, address: ClientAddress, container: ContainerDep
) -> TokenOut:
    """Trade a username and password for a bearer token. Repeated failures are throttled
    (429 with Retry-After)."""
    issued = await accounts.sign_in(container, body.username, body.password, address)
    return TokenOut(access_token=issued.token, expires_in=issued.expires_in)


@router.delete("/auth/token", status_code=status.HTTP_204_NO_CONTENT, responses=_AUTHENTICATED)
async def revoke_token(caller: Caller, container: ContainerDep) -> Response:
    """Revoke the token this request was made with."""
    async with container.db.write() as session:
        await accounts.revoke_token(session, caller.token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _me(container: ContainerDep, user: User) -> MeOut:
    async with container.db.read() as session:
        usage = await posts.usage(session, user.id)
    return MeOut(
        **UserOut.of(user, "self").model_dump(), usage=usage, quota=posts.quota(container.settings)
    )


@router.get("/me", response_model=MeOut, responses=_AUTHENTICATED)
async def get_me(caller: Caller, container: ContainerDep) -> MeOut:
    """The caller's own profile, with upload usage and quotas (null where unlimited)."""
    return await _me(container, caller.user)


@router.patch("/me", response_model=MeOut, responses=error_responses(400, 401))
async def update_me(body: ProfileUpdate, caller: Caller, container: ContainerDep) -> MeOut:
    """Change the display name, bio or privacy of the caller's account."""
    async with container.db.write() as session:
        user = await graph.change_profile(
            session, container.ids, container.settings, caller.user.id, body
        )
    return await _me(container, user)


@router.get("/users/{username}", response_model=UserOut, responses=error_responses(401, 404))
async def get_user(username: str, caller: Caller, container: ContainerDep) -> UserOut:
    """A user's profile, with the caller's `follow_status` towards it. 404 for an account
    that blocks the caller."""
    async with container.db.read(replica=True) as session:
        user, relation = await graph.visible_user(session, username, caller.user.id)
    return UserOut.of(user, graph.follow_status(caller.user.id, user.id, relation))
