from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, StringConstraints
from pydantic.config import JsonDict

from glimpse.text import MULTI_LINE, SINGLE_LINE

if TYPE_CHECKING:
    from glimpse.accounts.models import User

# 64-bit ids travel as strings: JavaScript numbers lose precision past 2^53.
IdStr = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]

USERNAME_PATTERN = r"^[a-z0-9_.]{1,30}$"  # API.md's


# The web app's pages of one path segment, and the server's own: a profile lives at
# /{username}, so an account of one of these names could never be shown.
RESERVED_USERNAMES = frozenset(
    {
        "signup", "signin", "signout", "new", "requests", "settings", "static", "docs",
        "api", "media", "metrics", "healthz", "readyz", "openapi.json", "favicon.ico",
        "robots.txt", "p", "explore", "admin",
    }
)  # fmt: skip


def _not_a_dot_segment(name: str) -> str:
    # "." and ".." are path segments that browsers and HTTP clients rewrite: /users/.. could
    # never reach its profile.
    if name in (".", ".."):
        raise ValueError("'.' and '..' cannot be usernames")
    if name in RESERVED_USERNAMES:
        raise ValueError("that name is reserved for a page of the site")
    return name


Username = Annotated[
    str, StringConstraints(pattern=USERNAME_PATTERN), AfterValidator(_not_a_dot_segment)
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
DisplayName = Annotated[str, StringConstraints(max_length=64, pattern=SINGLE_LINE)]
Bio = Annotated[str, StringConstraints(max_length=500, pattern=MULTI_LINE)]


class Strict(BaseModel):
    # Wrong types are refused, not coerced: "123" is no boolean and 5 is no name.
    model_config = ConfigDict(extra="forbid", strict=True)


def body_examples(*examples: JsonDict) -> ConfigDict:
    """A Strict model's config with examples of its body for /openapi.json."""
    return ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": list(examples)})


class AccountCreate(Strict):
    model_config = body_examples(
        {"username": "ana.lima", "password": "correct horse battery", "display_name": "Ana Lima"}
    )

    username: Username
    password: Password
    display_name: DisplayName | None = None


class TokenRequest(Strict):
    model_config = body_examples({"username": "ana.lima", "password": "correct horse battery"})

    username: Annotated[str, StringConstraints(max_length=64)]
    password: Annotated[str, StringConstraints(max_length=256)]


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class ProfileUpdate(Strict):
    model_config = body_examples(
        {"display_name": "Ana Lima", "bio": "Film photos from Lisbon.", "is_private": False},
        {"is_private": True},
    )

    display_name: DisplayName | None = None
    bio: Bio | None = None
    is_private: bool | None = None


class UserSummary(BaseModel):
    id: IdStr
    username: str
    display_name: str


class UserOut(UserSummary):
    bio: str
    is_private: bool
    post_count: int
    follower_count: int
    following_count: int
    follow_status: Literal["none", "pending", "following", "self"]

    @classmethod
    def of(cls, user: User, follow_status: str) -> UserOut:
        """`follow_status`: the caller's relation to the user (graph.service.follow_status)."""
        return cls(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            bio=user.bio,
            is_private=user.is_private,
            post_count=user.post_count,
            follower_count=user.follower_count,
            following_count=user.following_count,
            follow_status=follow_status,
        )


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class Usage(BaseModel):
    uploads_today: int
    bytes_today: int
    bytes_stored: int


class Quota(BaseModel):
    uploads_per_day: int | None
    bytes_per_day: int | None
    bytes_stored: int | None


class MeOut(UserOut):
    usage: Usage
    quota: Quota
