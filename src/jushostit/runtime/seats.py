"""The seat driver: seats on shared data platforms (Hopsworks), applied and observed like workloads.

A seat that should run has its platform user active with its project limit; any other seat's user is deactivated
(data kept); a deleted seat's user is removed, its projects first, only by `remove_instance`. Every pass reads the
user back and writes only what differs, so an admin's change on the platform (a suspended seat re-activated, a
limit raised) is undone by the next pass.

A platform user is ours only if we created it. `create_sent_at` is recorded (committed) before the create is sent:
a user later found under the seat's email is then ours (a create whose answer was lost) and adopted; found without
it, the email belongs to someone else's user, which is never taken over: the seat is `failed` and says why.

`WithSeats` puts this driver beside a workload runtime: seats go to it, everything else to the runtime.
"""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import replace

import structlog

from jushostit.audit import service as audit
from jushostit.kit import context
from jushostit.kit.crypto import SecretBox
from jushostit.kit.db import Database, utcnow
from jushostit.models import Seat
from jushostit.platforms import service as platforms
from jushostit.platforms.facts import project_namespace
from jushostit.platforms.hopsworks import USER_WAS_NOT_FOUND, HopsworksClient, HopsworksUser, PlatformError
from jushostit.platforms.repository import PlatformRepository, SeatRepository
from jushostit.runtime.protocol import (
    AccountState,
    Beside,
    DesiredSeat,
    Observed,
    ObservedInstance,
    RuntimeDriver,
)
from jushostit.vault import service as vault

log = structlog.get_logger(__name__)

SEAT_SECRETS = "seat"  # vault owner_type of a seat's initial password, kept until it is revealed once
PASSWORD = "password"
PASSWORD_LENGTH = 20
TAKEN = "the e-mail belongs to a platform user JusHostIt did not create; it is never taken over"
UNREACHABLE = "the data platform could not apply a change; it retries automatically"
NO_PLATFORM = "its data platform is no longer registered"
# A holder who may create no project works in the owner's: the admin API cannot add them, the owner does.
JOIN_HINT = ("works in the owner's projects: the owner adds them on the platform (project settings, Members, "
             "add with the role Data scientist)")


def initial_password() -> str:
    """Letters, digits and a sign from each class, as Hopsworks' password policy asks."""
    alphabet = string.ascii_letters + string.digits
    body = [secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH - 4)]
    body += [secrets.choice(string.ascii_uppercase), secrets.choice(string.ascii_lowercase),
             secrets.choice(string.digits), secrets.choice("-_.!")]
    secrets.SystemRandom().shuffle(body)
    return "".join(body)


class SeatDriver:
    """Seats of every registered platform; one HTTP client per platform per pass."""

    def __init__(self, database: Database, box: SecretBox, *, timeout: float) -> None:
        self._database = database
        self._box = box
        self._timeout = timeout

    async def apply(self, desired: AccountState) -> Observed:
        observed = Observed()
        if not desired.seats:
            return observed
        async with self._database.reader() as session:
            rows = await SeatRepository(session).of_instances([seat.id for seat in desired.seats])
            connections = {}
            for platform_id in {row.platform_id for row in rows.values()}:
                platform = await PlatformRepository(session).by_id(platform_id)
                if platform is not None:
                    connections[platform_id] = await platforms.connection(session, self._box, platform)
        for seat in desired.seats:
            row = rows.get(seat.id)
            connection = connections.get(row.platform_id) if row is not None else None
            if row is None or connection is None:
                observed.instances[seat.id] = ObservedInstance("failed", NO_PLATFORM)
                continue
            async with connection.http(timeout=self._timeout) as http:
                client = HopsworksClient(http, connection.api_key)
                observed.instances[seat.id] = await self._apply_one(desired.account_id, seat, row, client)
                observed.writes += client.writes
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> bool:
        """Remove the seat's platform user, its projects first. False when the instance is not a seat."""
        async with self._database.reader() as session:
            row = (await SeatRepository(session).of_instances([instance_id])).get(instance_id)
            platform = await PlatformRepository(session).by_id(row.platform_id) if row is not None else None
            connection = await platforms.connection(session, self._box, platform) if platform is not None else None
        if row is None:
            return False
        if row.removed_at is not None:
            return True
        if connection is None:
            raise RuntimeError(f"seat {instance_id}: {NO_PLATFORM}")
        async with connection.http(timeout=self._timeout) as http:
            client = HopsworksClient(http, connection.api_key)
            user = await self._our_user(row, client)
            if user is not None:
                await client.delete_user(user)
        async with self._database.unit_of_work() as session:
            locked = await SeatRepository(session).lock(instance_id)
            if locked is not None and locked.removed_at is None:
                locked.removed_at = utcnow()
                await SeatRepository(session).replace_projects(instance_id, [])
                await vault.forget(session, owner_type=SEAT_SECRETS, owner_id=instance_id)
                await audit.record(session, action="seat.user_removed", target_type="instance", target_id=instance_id,
                                   account_id=account_id, after={"platform_user_id": locked.platform_user_id},
                                   actor=context.SYSTEM)
        return True

    async def _apply_one(self, account_id: uuid.UUID, seat: DesiredSeat, row: Seat,
                         client: HopsworksClient) -> ObservedInstance:
        try:
            if not seat.run:
                user = await self._our_user(row, client)
                if user is not None:
                    await client.set_state(user.id, active=False, max_projects=seat.max_projects)
                return ObservedInstance("stopped", seat.problem)
            user = await self._active_user(account_id, seat, row, client)
            if user is None:
                return ObservedInstance("failed", TAKEN)
            await self._record_projects(seat.id, client, user)
        except PlatformError as error:
            log.warning("seat.apply_failed", instance_id=str(seat.id), status=error.status, code=error.code)
            return ObservedInstance("failed", UNREACHABLE, error=str(error)[:2000])
        return ObservedInstance("running", JOIN_HINT if seat.max_projects == 0 else None)

    async def _our_user(self, row: Seat, client: HopsworksClient) -> HopsworksUser | None:
        """The platform user this seat holds, if any: known by id, or found by email after a create we sent."""
        if row.platform_user_id is not None:
            return HopsworksUser(id=row.platform_user_id, email=row.email, status="", max_projects=0)
        if row.create_sent_at is None:
            return None
        user = await client.find_user(row.email)
        if user is not None:
            await self._record_user(row.instance_id, user)
        return user

    async def _active_user(self, account_id: uuid.UUID, seat: DesiredSeat, row: Seat,
                           client: HopsworksClient) -> HopsworksUser | None:
        """The seat's user active with its limit, made if need be; None when the email is someone else's."""
        create_sent = row.create_sent_at is not None
        if row.platform_user_id is not None:
            try:
                return await client.set_state(row.platform_user_id, active=True, max_projects=seat.max_projects)
            except PlatformError as error:
                if error.code != USER_WAS_NOT_FOUND:  # Hopsworks' own word, not any 404 on the way
                    raise
            # Deleted on the platform behind our back: the paid seat is made again.
            log.warning("seat.user_vanished", instance_id=str(seat.id))
            await self._forget_user(account_id, seat.id)
            create_sent = False
        found = await client.find_user(seat.email)
        if found is not None and not create_sent:
            return None
        password = None if found is not None else await self._mark_create_sent(account_id, seat.id,
                                                                                 remote=row.remote_subject is not None)
        local, _, _ = seat.email.partition("@")
        try:
            user = await client.ensure_user(seat.email, local[:30] or "seat", seat.name[:30],
                                            max_projects=seat.max_projects, active=True, password=password,
                                            remote_subject=row.remote_subject)
        except PlatformError as error:
            if error.status is not None and 400 <= error.status < 500 and found is None:
                # Refused, so nothing was made: a user made later under this email is not ours.
                await self._forget_user(account_id, seat.id)
            raise
        await self._record_user(seat.id, user, account_id=account_id)
        return user

    async def _mark_create_sent(self, account_id: uuid.UUID, instance_id: uuid.UUID, *, remote: bool) -> str | None:
        """Recorded before the create is sent, with the initial password it sends (kept encrypted): a crash after
        the create loses neither. Returns that password (None for a remote user); a create sent again sends the
        same one."""
        async with self._database.unit_of_work() as session:
            locked = await SeatRepository(session).lock(instance_id)
            stored = await vault.read(session, self._box, owner_type=SEAT_SECRETS, owner_id=instance_id)
            password = None if remote else stored.get(PASSWORD) or initial_password()
            if locked is not None and locked.create_sent_at is None:
                locked.create_sent_at = utcnow()
                if password is not None and PASSWORD not in stored:
                    await vault.put(session, self._box, owner_type=SEAT_SECRETS, owner_id=instance_id,
                                    name=PASSWORD, value=password)
                await audit.record(session, action="seat.user_create_sent", target_type="instance",
                                   target_id=instance_id, account_id=account_id, actor=context.SYSTEM,
                                   after={"email": locked.email})
            return password

    async def _forget_user(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        async with self._database.unit_of_work() as session:
            locked = await SeatRepository(session).lock(instance_id)
            if locked is not None:
                before = locked.platform_user_id
                locked.platform_user_id = None
                locked.create_sent_at = None
                await vault.forget(session, owner_type=SEAT_SECRETS, owner_id=instance_id)
                await audit.record(session, action="seat.user_vanished", target_type="instance",
                                   target_id=instance_id, account_id=account_id, actor=context.SYSTEM,
                                   before={"platform_user_id": before})

    async def _record_user(self, instance_id: uuid.UUID, user: HopsworksUser, *,
                           account_id: uuid.UUID | None = None) -> None:
        """The platform user's id, and its initial password (encrypted, until revealed once) when we just made it."""
        async with self._database.unit_of_work() as session:
            locked = await SeatRepository(session).lock(instance_id)
            if locked is None:
                return
            if locked.platform_user_id != user.id:
                locked.platform_user_id = user.id
                await audit.record(session, action="seat.user_linked", target_type="instance", target_id=instance_id,
                                   account_id=account_id, after={"platform_user_id": user.id}, actor=context.SYSTEM)
            if user.initial_password:
                await vault.put(session, self._box, owner_type=SEAT_SECRETS, owner_id=instance_id, name=PASSWORD,
                                value=user.initial_password)

    async def _record_projects(self, instance_id: uuid.UUID, client: HopsworksClient, user: HopsworksUser) -> None:
        """The projects the seat holder created, with the namespaces they run in (the OpenCost collector bills
        those to the account); written only when they changed."""
        found = sorted((p.id, p.name, project_namespace(p.name)) for p in await client.projects_of(user))
        async with self._database.reader() as session:
            recorded = [(p.project_id, p.name, p.namespace) for p in await SeatRepository(session).projects(instance_id)]
        if found != recorded:
            async with self._database.unit_of_work() as session:
                await SeatRepository(session).replace_projects(instance_id, found)


class WithSeats(Beside):
    """A workload runtime with the seat driver beside it: seats go to the seat driver, the rest to the runtime."""

    def __init__(self, runtime: RuntimeDriver, seats: SeatDriver) -> None:
        super().__init__(runtime)
        self.seats = seats

    async def apply(self, desired: AccountState) -> Observed:
        observed = await self.runtime.apply(replace(desired, seats=()))
        held = await self.seats.apply(desired)
        observed.instances.update(held.instances)
        observed.writes += held.writes
        return observed

    async def remove_instance(self, account_id: uuid.UUID, instance_id: uuid.UUID) -> None:
        if not await self.seats.remove_instance(account_id, instance_id):
            await self.runtime.remove_instance(account_id, instance_id)
