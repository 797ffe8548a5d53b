"""Desired state is a pure function of the facts (reconcile.desired): what each instance's environment renders
to, or the named problem a runtime meets when it asks for it."""

from __future__ import annotations

import uuid

import pytest

from jushostit.catalog.loader import load_templates
from jushostit.catalog.spec import TemplateSpec
from jushostit.entitlement import Access, Entitlement, InstanceEntitlement, Level, Quotas
from jushostit.reconcile.desired import TEMPLATE_UNAVAILABLE, DesiredStateError, InstanceInput, build_desired

ACCOUNT = uuid.UUID(int=1)
SITE = InstanceInput(uuid.UUID(int=2), "site-abc123", "site", "with-token", "small",
                     "http://site-abc123.localhost:8000/", "site-abc123.localhost")


def running(*instances: InstanceInput) -> Entitlement:
    return Entitlement(Level.running, (), Access.full, None, Quotas(),
                       {i.id: InstanceEntitlement(Level.running, ()) for i in instances})


def never_decrypted(token: str) -> str:
    raise AssertionError("nothing stored to decrypt")


def with_token() -> TemplateSpec:
    """static-site with a generated value, as an operator's template would have."""
    [shipped] = [t for t in load_templates() if t.code == "static-site"]
    return TemplateSpec.model_validate({**shipped.model_dump(mode="json", exclude_none=True), "code": "with-token",
                                        "env": [{"name": "SITE_TOKEN", "generate": {"length": 16}}]})


def test_an_instance_without_its_generated_value_names_what_is_missing() -> None:
    desired = build_desired(ACCOUNT, [SITE], running(SITE), {"with-token": with_token()}, {}, never_decrypted)

    [instance] = desired.state.instances
    assert instance.run and instance.problem is None
    with pytest.raises(DesiredStateError, match="the generated value SITE_TOKEN of site-abc123 is missing"):
        instance.secret_env.values()


def test_an_instance_whose_template_is_missing_is_desired_with_the_problem_named() -> None:
    desired = build_desired(ACCOUNT, [SITE], running(SITE), {}, {}, never_decrypted)

    [instance] = desired.state.instances
    assert instance.template is None and instance.problem == TEMPLATE_UNAVAILABLE
    with pytest.raises(DesiredStateError, match="the template 'with-token' of site-abc123 is missing or invalid"):
        instance.secret_env.values()  # a runtime that asks for its environment is told why, never handed a broken one


def test_each_desired_instance_carries_its_identity_and_level() -> None:
    template = with_token()
    entitled = Entitlement(Level.throttled, (), Access.full, None, Quotas(),
                           {SITE.id: InstanceEntitlement(Level.throttled, ("monthly budget reached (100%)",))})

    desired = build_desired(ACCOUNT, [SITE], entitled, {"with-token": template}, {}, never_decrypted)

    [instance] = desired.state.instances
    assert desired.state.account_id == ACCOUNT and desired.to_delete == ()
    assert (instance.id, instance.slug, instance.name, instance.template_code, instance.url) == (
        SITE.id, SITE.slug, SITE.name, SITE.template_code, SITE.url
    )
    assert (instance.run, instance.throttled, instance.template, instance.problem) == (True, True, template, None)
