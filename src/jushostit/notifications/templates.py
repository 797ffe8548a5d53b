"""Email templates: plain text, rendered from a few named values. Secrets other than a one-time link never go in."""

from __future__ import annotations

from dataclasses import dataclass
from string import Template


@dataclass(frozen=True)
class EmailTemplate:
    subject: Template
    body: Template


TEMPLATES: dict[str, EmailTemplate] = {
    "welcome": EmailTemplate(
        Template("Welcome to $product"),
        Template("Hello,\n\nyour account \"$account_name\" is ready. Sign in at $base_url.\n\n— $product\n"),
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
}


def render(template: str, values: dict[str, str]) -> tuple[str, str]:
    chosen = TEMPLATES[template]
    values = {"product": "JusHostIt", **values}
    return chosen.subject.substitute(values), chosen.body.substitute(values)
