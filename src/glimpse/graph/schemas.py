from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class FollowOut(BaseModel):
    status: Literal["following", "pending"]
