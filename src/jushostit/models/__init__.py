"""ORM models, one file per entity. Importing this package registers every table on `Base.metadata`."""

from jushostit.models.account import Account, AccountStatus, BillingMode, Membership, Role, SuspensionReason
from jushostit.models.api_key import ApiKey
from jushostit.models.audit_entry import AuditEntry
from jushostit.models.auth_session import AuthSession, RefreshToken
from jushostit.models.auth_throttle import AuthThrottle
from jushostit.models.browser_session import BrowserSession
from jushostit.models.cluster import AccountPlacement, Cluster, ClusterHost, ClusterNode
from jushostit.models.credit import CreditBalance, CreditEntry, CreditGrant
from jushostit.models.credit_purchase import CreditPurchase
from jushostit.models.dunning_notice import DunningNotice
from jushostit.models.email_outbox import EmailOutbox, EmailStatus
from jushostit.models.email_token import EmailToken, EmailTokenPurpose
from jushostit.models.idempotency_key import IdempotencyKey
from jushostit.models.instance import Instance
from jushostit.models.invite import Invite
from jushostit.models.invoice import Invoice, InvoiceCounter, InvoiceLine, InvoiceStatus
from jushostit.models.magic_link import MagicLink
from jushostit.models.oidc_identity import OIDCIdentity
from jushostit.models.payment import Payment
from jushostit.models.plan import Plan
from jushostit.models.platform import Platform
from jushostit.models.seat import Seat, SeatProject
from jushostit.models.service_template import ServiceTemplate
from jushostit.models.stored_secret import StoredSecret
from jushostit.models.subscription import Subscription
from jushostit.models.usage import (
    BudgetAlert,
    MeterCounter,
    MeteringRun,
    MeterReport,
    UsageDaily,
    UsageSample,
)
from jushostit.models.user import User
from jushostit.models.webhook_event import WebhookEvent, WebhookEventStatus

__all__ = [
    "Account",
    "AccountPlacement",
    "AccountStatus",
    "ApiKey",
    "AuditEntry",
    "AuthSession",
    "AuthThrottle",
    "BillingMode",
    "BrowserSession",
    "BudgetAlert",
    "Cluster",
    "ClusterHost",
    "ClusterNode",
    "CreditBalance",
    "CreditEntry",
    "CreditGrant",
    "CreditPurchase",
    "DunningNotice",
    "EmailOutbox",
    "EmailStatus",
    "EmailToken",
    "EmailTokenPurpose",
    "IdempotencyKey",
    "Instance",
    "Invite",
    "Invoice",
    "InvoiceCounter",
    "InvoiceLine",
    "InvoiceStatus",
    "MagicLink",
    "Membership",
    "MeterCounter",
    "MeterReport",
    "MeteringRun",
    "OIDCIdentity",
    "Payment",
    "Plan",
    "Platform",
    "RefreshToken",
    "Role",
    "Seat",
    "SeatProject",
    "ServiceTemplate",
    "StoredSecret",
    "Subscription",
    "SuspensionReason",
    "UsageDaily",
    "UsageSample",
    "User",
    "WebhookEvent",
    "WebhookEventStatus",
]
