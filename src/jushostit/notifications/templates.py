"""Email templates: plain text, rendered from a few named values. Secrets other than a one-time link never go in."""

from __future__ import annotations

from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class EmailTemplate:
    subject: Template
    body: Template


TEMPLATES: dict[str, EmailTemplate] = {
    "verify_email": EmailTemplate(
        Template("Confirm your address for $product"),
        Template(
            "Hello,\n\nsomeone (we hope you) signed up to $product with this address and created the account "
            "\"$account_name\". Confirm the address within $hours hours:\n\n$link\n\nIf it was not you, do not "
            "confirm: ask for a password reset instead, and whatever was set up in your name goes:\n\n"
            "$base_url/auth/forgot-password\n\n"
            "— $product\n"
        ),
    ),
    "signup_existing": EmailTemplate(
        Template("Someone tried to sign up with your address"),
        Template(
            "Hello,\n\nsomeone tried to sign up to $product with this address, which already has a user. If it was "
            "you, sign in instead; if you forgot your password, reset it here:\n\n$base_url/auth/forgot-password\n\n"
            "If it was not you, nothing changed and you need not do anything.\n\n— $product\n"
        ),
    ),
    "password_reset": EmailTemplate(
        Template("Reset your password"),
        Template(
            "Hello,\n\nuse this link to choose a new password. It works once and expires in $minutes minutes:\n\n"
            "$link\n\nEvery device signed in to your user will be signed out. If you did not ask for it, ignore "
            "this email.\n\n— $product\n"
        ),
    ),
    "access_revoked": EmailTemplate(
        Template("Your sign-in details changed"),
        Template(
            "Hello,\n\n$what\n\nIf this was not you, reset your password at once:\n\n"
            "$base_url/auth/forgot-password\n\n— $product\n"
        ),
    ),
    "magic_link": EmailTemplate(
        Template("Your sign-in link"),
        Template(
            "Hello,\n\nuse this link to sign in. It works once and expires in $minutes minutes:\n\n$link\n\n"
            "If you did not ask for it, ignore this email.\n\n— $product\n"
        ),
    ),
    "invite": EmailTemplate(
        Template("You are invited to $account_name"),
        Template(
            "Hello,\n\n$inviter invited you to join \"$account_name\" as $role. Accept within $days days:\n\n"
            "$link\n\nSign in (or sign up) as $email to accept.\n\n— $product\n"
        ),
    ),
    "instance_ready": EmailTemplate(
        Template("$name is ready"),
        Template("Hello,\n\nyour service \"$name\" is running at $url\n\nCredentials are in your dashboard.\n\n— $product\n"),
    ),
    "instance_suspended": EmailTemplate(
        Template("$name is suspended"),
        Template("Hello,\n\nyour service \"$name\" has been stopped: $reason.\nIts data is kept.\n\n— $product\n"),
    ),
    "instance_restored": EmailTemplate(
        Template("$name is back"),
        Template("Hello,\n\nyour service \"$name\" is running again at $url\n\n— $product\n"),
    ),
    "instance_expiring": EmailTemplate(
        Template("$name expires in 3 days"),
        Template("Hello,\n\nthe subscription behind \"$name\" ends on $ends. Renew it to keep the service.\n\n— $product\n"),
    ),
    "instance_expired": EmailTemplate(
        Template("$name has expired"),
        Template("Hello,\n\nyour service \"$name\" has expired and is stopped: $reason.\nIts data is kept for $retention_days days; renew to bring it back.\n\n— $product\n"),
    ),
    "instance_deleted": EmailTemplate(
        Template("$name was deleted"),
        Template("Hello,\n\nyour service \"$name\" and its data have been deleted.\n\n— $product\n"),
    ),
    # Budgets: each threshold once per month (metering.service.check_budgets).
    "budget_alert": EmailTemplate(
        Template("$account_name has used $percent % of its monthly budget"),
        Template(
            "Hello,\n\n\"$account_name\" has spent $spent on usage this month, $percent % of its monthly budget of "
            "$limit. $consequence\n\nSee the usage, or raise the budget:\n\n$base_url\n\n— $product\n"
        ),
    ),
    # Dunning: one e-mail per stage of a past-due episode, each sent once (billing.service.send_dunning_notice).
    "payment_failed": EmailTemplate(
        Template("A payment for $account_name is overdue"),
        Template(
            "Hello,\n\nwe have not received the payment for \"$account_name\" (a card payment failed, or an "
            "invoice passed its due date). Your services keep running for now; pay, or update your payment method, "
            "by $suspends_at to keep them:\n\n$base_url\n\n— $product\n"
        ),
    ),
    "payment_reminder": EmailTemplate(
        Template("Reminder: a payment for $account_name is still due"),
        Template(
            "Hello,\n\nthe payment for \"$account_name\" is still due. Services will be suspended on "
            "$suspends_at unless it is paid:\n\n$base_url\n\n— $product\n"
        ),
    ),
    "suspension_warning": EmailTemplate(
        Template("$account_name will be suspended tomorrow"),
        Template(
            "Hello,\n\nthe payment for \"$account_name\" is still due, and its services will be suspended on "
            "$suspends_at. Pay now to keep them running:\n\n$base_url\n\n— $product\n"
        ),
    ),
    "account_suspended": EmailTemplate(
        Template("$account_name is suspended for non-payment"),
        Template(
            "Hello,\n\nthe services of \"$account_name\" are stopped because a payment is overdue. Their data "
            "is kept; pay to bring them back:\n\n$base_url\n\n— $product\n"
        ),
    ),
    "account_restored": EmailTemplate(
        Template("$account_name is restored"),
        Template(
            "Hello,\n\nthank you: the payment for \"$account_name\" arrived and its services are coming back."
            "\n\n— $product\n"
        ),
    ),
}


def render(template: str, values: dict[str, str]) -> tuple[str, str]:
    chosen = TEMPLATES[template]
    values = {"product": "JusHostIt", **values}
    return chosen.subject.substitute(values), chosen.body.substitute(values)
