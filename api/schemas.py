"""The answers' shapes, for validation and the OpenAPI document. Field names are the contract's
(shared/UPSTREAM_CONTRACT.md, Version 2, Read-only HTTP API) plus a few more."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class JourneyOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    entry_node_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime


class JourneyContactOut(BaseModel):
    id: uuid.UUID
    journey_id: uuid.UUID
    contact_id: uuid.UUID
    status: str
    current_node_id: uuid.UUID | None
    status_reason: str | None
    completed_at: datetime | None
    due_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ExecutionOut(BaseModel):
    id: uuid.UUID
    journey_contact_id: uuid.UUID
    node_id: uuid.UUID | None
    status: str
    error: str | None
    result: dict[str, Any]
    executed_at: datetime | None
    step_seq: int | None
    created_at: datetime


class MessageOut(BaseModel):
    id: uuid.UUID
    journey_contact_id: uuid.UUID
    journey_node_execution_id: uuid.UUID
    node_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    direction: str
    body: str
    status: str
    sent_at: datetime | None
    error: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


class NodeStats(BaseModel):
    node_id: uuid.UUID
    type: str | None = None
    reached: int = Field(
        description="Journey contacts that reached the node (per day: for the first time)."
    )
    executions: dict[str, int] = Field(description="Executions of the node by status.")
    messages: dict[str, int] = Field(description="Messages its executions sent, by status.")


class DayStats(BaseModel):
    day: date
    nodes: list[NodeStats]


class JourneyStats(BaseModel):
    journey_id: uuid.UUID
    refreshed_at: datetime | None = Field(
        description="When the numbers were taken; null until the first refresh."
    )
    nodes: list[NodeStats]
    days: list[DayStats] = Field(
        default_factory=list, description="Per UTC day, newest last, when `days` > 0."
    )
