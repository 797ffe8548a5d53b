"""Kubernetes driver benchmark: what a pass costs the control plane per account before any request to a cluster.

For 1,000 accounts with 3 instances each (n8n, WordPress with its MariaDB, a static site: every kind of object
the manifests have), built as a reconcile pass builds them (`build_desired`, generated values stored encrypted):

- render: `render_account(..., include_secrets=False)`, every object of the account but its Secrets;
- diff: `wanted_secrets` (each Secret's fingerprint, nothing decrypted) and `plan_changes` against the cluster as
  a converged account leaves it (every object there with its digest: a no-op pass, which applies nothing), and
  against an empty cluster (a first pass, which applies everything);

each per account, next to serialising the same rendered objects with `json.dumps` (measured in the same run, on
the same objects), and the ratio of render + diff to it. Pure functions: no database, no cluster. Each figure is
the best of `--rounds` runs over every account.

Run: .venv/bin/python bench/kubernetes_bench.py [--accounts 1000] [--instances 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from jushostit.catalog.loader import load_plans, load_templates
from jushostit.entitlement import Access, Entitlement, InstanceEntitlement, Level, Quotas
from jushostit.reconcile.desired import InstanceInput, build_desired
from jushostit.runtime.kubernetes.cluster import ClusterSettings
from jushostit.runtime.kubernetes.diff import Found, digest, plan_changes, stamped, wanted_secrets
from jushostit.runtime.kubernetes.manifests import render_account
from jushostit.runtime.protocol import AccountState

CLUSTER = ClusterSettings(base_domain="apps.example.com")
TEMPLATES = {t.code: t for t in load_templates()}
MIX = ("n8n", "wordpress", "static-site")
PRO = Quotas(**next(p for p in load_plans() if p.code == "pro").quotas.model_dump())


class CountingDecrypt:
    """A decrypt that counts its calls: a diff must make none."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, token: str) -> str:
        self.calls += 1
        return token


def account(instances: int, decrypt: CountingDecrypt) -> AccountState:
    account_id = uuid.uuid4()
    inputs = []
    for index in range(instances):
        code = MIX[index % len(MIX)]
        slug = f"{code[:8]}-{uuid.uuid4().hex[:6]}"
        url, host = CLUSTER.instance_address(slug)
        inputs.append(InstanceInput(uuid.uuid4(), slug, f"app{index}", code, TEMPLATES[code].default_tier, url, host))
    entitled = Entitlement(Level.running, (), Access.full, None, PRO,
                           {i.id: InstanceEntitlement(Level.running, ()) for i in inputs})
    ciphertexts = {i.id: {v.name: f"gAAAA-{uuid.uuid4().hex}" for v in TEMPLATES[i.template_code].env
                          if v.generate is not None} for i in inputs}
    return build_desired(account_id, inputs, entitled, TEMPLATES, ciphertexts, decrypt).state


def converged(state: AccountState) -> list[Found]:
    """What the cluster holds once the account was applied: every object with the digest it was applied with."""
    found = [Found.of(m["kind"], stamped(m, digest(m))) for m in render_account(state, CLUSTER, include_secrets=False)]
    for (instance_id, component), value in wanted_secrets(state).items():
        labels = {"app.kubernetes.io/managed-by": "jushostit", "jushostit.io/account": str(state.account_id),
                  "jushostit.io/instance": instance_id, "app.kubernetes.io/component": component}
        found.append(Found("Secret", f"{instance_id}-{component}", labels, value))
    return found


def best(rounds: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main(count: int, instances: int, rounds: int) -> None:
    decrypt = CountingDecrypt()
    states = [account(instances, decrypt) for _ in range(count)]
    rendered = [render_account(s, CLUSTER, include_secrets=False) for s in states]
    held = [converged(s) for s in states]
    objects = sum(len(r) for r in rendered) / count
    decrypt.calls = 0

    render = best(rounds, lambda: [render_account(s, CLUSTER, include_secrets=False) for s in states])
    noop = best(rounds, lambda: [plan_changes(s, r, wanted_secrets(s), f) for s, r, f in zip(states, rendered, held,
                                                                                             strict=True)])
    first = best(rounds, lambda: [plan_changes(s, r, wanted_secrets(s), []) for s, r in zip(states, rendered,
                                                                                            strict=True)])
    serialise = best(rounds, lambda: [json.dumps(r) for r in rendered])

    plans = [plan_changes(s, r, wanted_secrets(s), f) for s, r, f in zip(states, rendered, held, strict=True)]
    assert all(not p.apply and not p.secrets and not p.delete for p in plans), "a converged account changes nothing"
    assert decrypt.calls == 0, "rendering and diffing decrypt nothing"

    def per_account(seconds: float) -> float:
        return seconds / count * 1000

    print(f"{count} accounts x {instances} instances ({', '.join(MIX)}), {objects:.0f} objects per account "
          f"without Secrets, best of {rounds}")
    print(f"render (include_secrets=False):         {per_account(render):7.3f} ms per account")
    print(f"diff, converged (no-op pass):           {per_account(noop):7.3f} ms per account")
    print(f"diff, empty cluster (first pass):       {per_account(first):7.3f} ms per account")
    print(f"render + diff, no-op pass:              {per_account(render + noop):7.3f} ms per account")
    print(f"json.dumps of the same objects:         {per_account(serialise):7.3f} ms per account")
    print(f"render + diff / json.dumps:             {(render + noop) / serialise:7.1f} x")
    print(f"secrets decrypted by render and diff:   {decrypt.calls}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    main(arguments.accounts, arguments.instances, arguments.rounds)
