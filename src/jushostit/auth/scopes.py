"""API key scopes. Signed-in sessions hold every scope; an API key holds only the ones it was given."""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    account_read = "account:read"
    account_write = "account:write"
    members_read = "members:read"
    members_write = "members:write"
    billing_read = "billing:read"
    billing_write = "billing:write"
    instances_read = "instances:read"
    instances_write = "instances:write"
    instances_secrets = "instances:secrets"
    admin = "admin"


API_KEY_PREFIX = "jhi_"
