"""users can be suspended; every change that takes access away is announced on the access-change channel

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

Open event streams (GET /v1/events) outlive their request, so they must learn at once when the access they were
opened with goes away. Triggers announce it, so no service code can forget to: `pg_notify('jushostit_access',
<user id>)` when a membership is deleted or its role changes, a login session or an API key is revoked (or
deleted), or a user is suspended (or deleted). NOTIFY is transactional: sent on commit only, and repeated
notifications of one user in one transaction are sent once. The channel name is
`jushostit.events.repository.ACCESS_CHANNEL`.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ACCESS_CHANNEL = "jushostit_access"

# (trigger, table, event, condition or None, the column naming the user)
TRIGGERS = (
    ("memberships_access_removed", "memberships", "DELETE", None, "user_id"),
    ("memberships_role_changed", "memberships", "UPDATE OF role", "OLD.role IS DISTINCT FROM NEW.role", "user_id"),
    ("auth_sessions_revoked", "auth_sessions", "UPDATE OF revoked_at",
     "OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL", "user_id"),
    ("auth_sessions_deleted", "auth_sessions", "DELETE", None, "user_id"),
    ("api_keys_revoked", "api_keys", "UPDATE OF revoked_at",
     "OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL", "user_id"),
    ("api_keys_deleted", "api_keys", "DELETE", None, "user_id"),
    ("users_suspended", "users", "UPDATE OF suspended_at",
     "OLD.suspended_at IS NULL AND NEW.suspended_at IS NOT NULL", "id"),
    ("users_deleted", "users", "DELETE", None, "id"),
)


def upgrade() -> None:
    op.add_column("users", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    # Every trigger fires on UPDATE or DELETE, so OLD names the user whose access changed (TG_ARGV[0]: its column).
    op.execute(
        f"""
        CREATE FUNCTION jushostit_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{ACCESS_CHANNEL}', to_jsonb(OLD) ->> TG_ARGV[0]);
            RETURN NULL;
        END;
        $$;
        """
    )
    for name, table, event, condition, column in TRIGGERS:
        when = f" WHEN ({condition})" if condition else ""
        op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} "
                   f"EXECUTE FUNCTION jushostit_access_changed('{column}')")


def downgrade() -> None:
    for name, table, *_ in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON {table}")
    op.execute("DROP FUNCTION jushostit_access_changed()")
    op.drop_column("users", "suspended_at")
