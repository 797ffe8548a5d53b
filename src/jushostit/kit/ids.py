"""Time-ordered UUIDs (v7), so primary keys double as stable pagination cursors."""

from __future__ import annotations

import uuid

import uuid_utils


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid_utils.uuid7().bytes)
