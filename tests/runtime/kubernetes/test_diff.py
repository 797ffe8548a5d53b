"""What a pass changes on a cluster (runtime.kubernetes.diff, pure): only what changed is applied, Secrets are
compared without decrypting, and pruning takes only our objects an account no longer wants — never an instance's
data while it is in the desired state, never anything without our labels."""

from __future__ import annotations

import uuid
from typing import Any

from jushostit.entitlement import Level
from jushostit.runtime.kubernetes.diff import Found, digest, plan_changes, stamped, wanted_secrets
from jushostit.runtime.kubernetes.manifests import Manifest, render_account
from jushostit.runtime.protocol import AccountState
from tests.runtime.kubernetes.states import ACCOUNT, CLUSTER, TEMPLATES, Decryptions, instance, state

BLOG = instance("ghost", "blog", number=1)
SITE = instance("static-site", "site", number=2)


def on_cluster(desired: AccountState) -> list[Found]:
    """What the cluster holds once `desired` was applied: every object with its digest, Secrets too."""
    found = [Found.of(m["kind"], stamped(m, digest(m))) for m in render_account(desired, CLUSTER,
                                                                                include_secrets=False)]
    for (instance_id, component), value in wanted_secrets(desired).items():
        labels = {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/account": str(ACCOUNT),
                  "jushostit.io/instance": instance_id, "app.kubernetes.io/component": component}
        found.append(Found("Secret", f"{instance_id}-{component}", labels, value))
    return found


def plan(desired: AccountState, found: list[Found]) -> Any:
    return plan_changes(desired, render_account(desired, CLUSTER, include_secrets=False), wanted_secrets(desired),
                        found)


def names(manifests: tuple[Manifest, ...] | tuple[Found, ...]) -> list[str]:
    return [f"{m.kind}/{m.name}" if isinstance(m, Found) else f"{m['kind']}/{m['metadata']['name']}"
            for m in manifests]


def test_a_pass_with_nothing_changed_applies_and_deletes_nothing_and_decrypts_nothing() -> None:
    decryptions = Decryptions()
    desired = state(BLOG, SITE, decrypt=decryptions)

    changes = plan(desired, on_cluster(desired))

    assert changes.apply == () and changes.secrets == () and changes.delete == ()
    assert decryptions.calls == []


def test_a_first_pass_applies_everything_in_order_with_its_digest_and_writes_every_secret() -> None:
    desired = state(BLOG)
    changes = plan(desired, [])
    rendered = render_account(desired, CLUSTER, include_secrets=False)
    assert names(changes.apply) == names(tuple(rendered))
    assert all(m["metadata"]["annotations"]["jushostit.io/applied-digest"] == digest(r)
               for m, r in zip(changes.apply, rendered, strict=True))
    assert set(changes.secrets) == {(str(BLOG.id), "app"), (str(BLOG.id), "database")}


def test_a_change_applies_only_what_it_changes() -> None:
    running = state(BLOG, SITE)
    stopped_site = state(BLOG, SITE, levels={SITE.id: Level.stopped})

    changes = plan(stopped_site, on_cluster(running))

    assert names(changes.apply) == ["Deployment/site-000002"]
    assert names(changes.delete) == ["Ingress/site-000002"]  # the route; its data stays
    assert changes.secrets == ()


def test_an_instance_that_left_the_desired_state_is_pruned_data_included() -> None:
    changes = plan(state(BLOG), on_cluster(state(BLOG, SITE)))

    assert names(changes.delete) == ["Ingress/site-000002", "Deployment/site-000002", "Service/site-000002",
                                     "PersistentVolumeClaim/site-000002-data-site", f"Secret/{SITE.id}-app"]


def test_an_instance_whose_template_cannot_be_read_keeps_everything_and_when_it_must_stop_only_its_data() -> None:
    before = state(BLOG, SITE)
    unreadable = {code: spec for code, spec in TEMPLATES.items() if code != "static-site"}

    kept = plan(state(BLOG, SITE, templates=unreadable), on_cluster(before))
    assert kept.delete == ()

    stopping = plan(state(BLOG, SITE, templates=unreadable, levels={SITE.id: Level.stopped}), on_cluster(before))
    assert names(stopping.delete) == ["Ingress/site-000002", "Deployment/site-000002", "Service/site-000002"]


def test_an_instance_awaiting_deletion_stops_but_keeps_its_data_for_remove_instance() -> None:
    changes = plan(state(BLOG, SITE, levels={SITE.id: Level.deleted}), on_cluster(state(BLOG, SITE)))

    assert names(changes.delete) == ["Ingress/site-000002", "Deployment/site-000002", "Service/site-000002"]


def test_objects_without_our_labels_or_of_another_account_are_never_pruned() -> None:
    desired = state(BLOG)
    theirs = [
        Found("Deployment", "hand-made", {}, None, 1),
        Found("Service", "helm-app", {"app.kubernetes.io/managed-by": "helm"}, None),
        Found("Secret", "neighbour", {"app.kubernetes.io/managed-by": "jushostit",
                                      "jushostit.io/account": str(uuid.uuid4())}, None),
    ]

    assert plan(desired, on_cluster(desired) + theirs).delete == ()


def test_a_secret_is_written_again_only_when_what_its_values_are_made_of_changed() -> None:
    desired = state(BLOG)
    found = on_cluster(desired)
    assert plan(state(BLOG, decrypt=Decryptions()), found).secrets == ()  # the same stored values

    stale = [f if f.kind != "Secret" else Found(f.kind, f.name, f.labels, "made-of-older-values") for f in found]
    assert set(plan(desired, stale).secrets) == {(str(BLOG.id), "app"), (str(BLOG.id), "database")}


def test_an_account_with_no_instance_has_no_namespace() -> None:
    empty = AccountState(ACCOUNT, ())
    assert plan(empty, on_cluster(state(BLOG))).delete_namespace is True
    assert plan(empty, []).delete_namespace is False
