"""POST /v1/admin/templates renders the new template's Kubernetes manifests (every tier; running, throttled and
stopped) and refuses, with 422 `template_not_deployable` naming the object and field, one whose manifests the
API server or Pod Security would refuse. Nothing of a refused template is stored."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from jushostit.catalog import loader
from jushostit.models import AuditEntry, ServiceTemplate

CAPABILITIES = "spec.template.spec.containers[0].securityContext.capabilities.add"


def n8n_body(code: str | None = None, **kubernetes: Any) -> dict[str, Any]:
    spec = next(s for s in loader.load_templates() if s.code == "n8n").model_dump(mode="json")
    code = code or f"tpl-{uuid.uuid4().hex[:8]}"
    return {**spec, "code": code, "name": "Custom n8n", "kubernetes": {**spec["kubernetes"], **kubernetes}}


async def stored(session, code: str) -> bool:
    return await session.scalar(select(ServiceTemplate).where(ServiceTemplate.code == code)) is not None


@pytest.mark.parametrize(("kubernetes", "object_kind", "field", "says"), [
    ({"add_capabilities": ["CHOWN"]}, "Deployment", CAPABILITIES, "CHOWN"),
    ({"pod_security": "baseline", "pod_security_reason": "starts as root", "add_capabilities": ["NET_ADMIN"]},
     "Deployment", CAPABILITIES, "NET_ADMIN"),
    ({"sysctls": {"kernel.msgmax": "65536"}}, "Deployment", "spec.template.spec.securityContext.sysctls[0].name",
     "kernel.msgmax"),
])
async def test_a_template_whose_manifests_break_pod_security_is_refused_naming_the_object_and_field(
    client, session, admin, kubernetes: dict[str, Any], object_kind: str, field: str, says: str
) -> None:
    boss = await admin()
    body = n8n_body(**kubernetes)

    response = await client.post("/v1/admin/templates", json=body, headers=boss.headers)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "template_not_deployable"
    assert error["details"]["object"] == f"{object_kind}/{body['code']}-sample"
    assert error["details"]["field"] == field and says in error["details"]["problem"]
    assert f"{object_kind}/{body['code']}-sample: {field}" in error["message"]
    assert not await stored(session, body["code"])


async def test_a_template_whose_names_the_api_would_refuse_is_refused_naming_the_object_and_field(
    client, session, admin
) -> None:
    boss = await admin()
    body = n8n_body(code=f"tpl-{uuid.uuid4().hex[:8]}-")  # a code may end with '-'; a label value may not

    response = await client.post("/v1/admin/templates", json=body, headers=boss.headers)

    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details["object"].startswith("Secret/")  # the first object that carries the label
    assert details["field"] == "metadata.labels.app.kubernetes.io/name"
    assert not await stored(session, body["code"])


async def test_a_template_that_says_why_it_needs_baseline_is_installed(client, session, admin) -> None:
    boss = await admin()
    body = n8n_body(pod_security="baseline", pod_security_reason="its entrypoint chowns its data first",
                    add_capabilities=["CHOWN"])

    response = await client.post("/v1/admin/templates", json=body, headers=boss.headers)

    assert response.status_code == 201, response.text
    assert response.json()["spec"]["kubernetes"]["pod_security"] == "baseline"
    assert await stored(session, body["code"])
    assert await session.scalar(select(AuditEntry).where(AuditEntry.action == "template.created",
                                                         AuditEntry.target_id == body["code"]))
