from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from jushostit.kit.db import Base, UTCDateTime


class Seat(Base):
    """What an instance of kind `seat` holds on its platform: the account user it is for and, once made, the
    platform user. `create_sent_at` is written before the platform is asked to create the user, so a user found
    later under the seat's email is known to be ours (our create whose answer was lost) or not (never taken
    over)."""

    __tablename__ = "seats"
    __table_args__ = (
        # One live seat per email on a platform: two seats must never drive the same platform user.
        Index("uq_seats_platform_email", "platform_id", func.lower(text("email")), unique=True,
              postgresql_where=text("removed_at IS NULL")),
    )

    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    platform_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("platforms.id", ondelete="RESTRICT"), index=True)
    # The account user the seat is for; their role in the account sets the project limit. Null once the user
    # is gone (the seat is then stopped).
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    email: Mapped[str] = mapped_column(String(320), nullable=False)  # the platform user's, copied at order
    # The holder's subject at the platform's sign-in provider: the platform user is then a remote OAuth user.
    remote_subject: Mapped[str | None] = mapped_column(String(255))
    platform_user_id: Mapped[int | None] = mapped_column(Integer)
    create_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the platform user (and projects) deleted


class SeatProject(Base):
    """A project a seat holder created on the platform, and the Kubernetes namespace the platform runs it in:
    the OpenCost collector bills that namespace to the seat's account."""

    __tablename__ = "seat_projects"

    instance_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("seats.instance_id", ondelete="CASCADE"),
                                                   primary_key=True)
    project_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    namespace: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
