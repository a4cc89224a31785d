"""Who may call what: one rule per RPC of every nasloop service, applied by the server
interceptor to the caller's identity (nasloop/rpc/tls.py) before the service sees the call.

The roles:
- ``controller`` and ``operator`` (a person's or the install hook's certificate) may call every
  RPC; only they start, stop or resume runs and delete novelty namespaces;
- ``evaluator``, ``generator``, ``novelty``, ``trainer`` (the services themselves) may only
  ask for health and reflection: none of them calls another service;
- ``cycle`` (one cycle Job of one run) may call what a cycle needs, and only for its own run:
  the trainer's StartJob publishes only its own cycle's adapter (``adapters/<run>/<n>``), the
  generator loads and unloads only its run's adapters, the novelty index takes writes only in
  its run's namespace (it reads every namespace, so the corpus stays read-only to it).

An RPC missing from the table is refused to everyone but the controller and the operator, so a
new RPC is closed until someone writes its rule. Refusals are PERMISSION_DENIED with a message
that says who was refused what and why. The services' own code knows nothing of this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from nasloop import layout
from nasloop.rpc.errors import PermissionDenied
from nasloop.rpc.tls import CYCLE, Authenticator, Identity

# Check the request of an allowed caller; raise PermissionDenied to refuse it.
Rule = Callable[[Identity, Any], None]

ADMINS = frozenset({"controller", "operator"})
HEALTH = "grpc.health.v1.Health"


def any_cycle(who: Identity, request: Any) -> None:
    """A cycle may call it whatever it asks (it reads nothing of another run, or nothing)."""


def _own(who: Identity, what: str, value: str, own: str) -> None:
    if value != own:
        raise PermissionDenied(f"{who} may not use {what} {value!r}: only {own!r}")


def _under(who: Identity, what: str, key: str, prefix: str) -> None:
    if not key.startswith(prefix) or ".." in key.split("/"):
        raise PermissionDenied(f"{who} may not use {what} {key!r}: only keys under {prefix!r}")


# -- trainer ---------------------------------------------------------------------------------
def start_job(who: Identity, r: Any) -> None:
    """A cycle trains and publishes only its own cycle's adapter, from its run's records."""
    if who.cycle == layout.BASELINE:
        raise PermissionDenied(f"{who} trains nothing")
    _own(
        who,
        "the output prefix",
        r.output_prefix.rstrip("/"),
        layout.adapter_prefix(who.run, who.cycle),
    )
    _own(who, "the run", r.run, who.run)
    _own(who, "the cycle", str(r.cycle), str(who.cycle))
    _own(who, "the job id", r.job_id, layout.training_job_id(who.run, who.cycle))
    if r.adapter_name:  # empty: the trainer names it <run>-c<cycle>, its own
        _own(who, "the adapter name", r.adapter_name, layout.adapter_name(who.run, who.cycle))
    _under(who, "the training pairs", r.training_pairs.key, f"{layout.run_prefix(who.run)}/")
    if r.HasField("parent"):
        _under(
            who, "the parent adapter", r.parent.prefix, f"{layout.run_adapters_prefix(who.run)}/"
        )


def own_job(who: Identity, r: Any) -> None:
    if layout.run_of_training_job(r.job_id) != who.run:
        raise PermissionDenied(f"{who} may not touch training job {r.job_id!r} of another run")


# -- generator -------------------------------------------------------------------------------
def _own_adapter_name(who: Identity, name: str) -> None:
    if layout.run_of_adapter_name(name) != who.run:
        raise PermissionDenied(
            f"{who} may not load or unload adapter {name!r}: only its run's adapters "
            f"({who.run}-c<n>)"
        )


def load_adapter(who: Identity, r: Any) -> None:
    _own_adapter_name(who, r.name)
    _under(who, "the adapter prefix", r.prefix, f"{layout.run_adapters_prefix(who.run)}/")


def unload_adapter(who: Identity, r: Any) -> None:
    _own_adapter_name(who, r.name)


# -- novelty ---------------------------------------------------------------------------------
def _own_namespace(who: Identity, namespace: str) -> None:
    own = layout.run_namespace(who.run)
    if namespace != own:
        raise PermissionDenied(
            f"{who} may not write to novelty namespace {namespace!r}: only to {own!r} (every "
            "other namespace, the corpus included, is read-only to it)"
        )


def writes_own_namespace(field: str) -> Rule:
    def rule(who: Identity, r: Any) -> None:
        _own_namespace(who, getattr(r, field))

    rule.__doc__ = f"the request's {field} must be the caller's run namespace"
    return rule


# -- the table -------------------------------------------------------------------------------
# service -> method -> what a cycle identity may do (None: nothing). The admins may do all.
CYCLE_RULES: dict[str, dict[str, Rule | None]] = {
    "nasloop.v1.Controller": {
        m: None
        for m in ("StartRun", "GetRun", "ListRuns", "StopRun", "ResumeRun", "WatchRun", "GetCycle")
    },
    # The controller serves it, and knows the cycle pod by its address and owner (its own
    # check, services/controller/cycle_store.py, decides what each key may be).
    "nasloop.v1.CycleStore": {
        m: any_cycle
        for m in (
            "GetObject",
            "PutObject",
            "StatObject",
            "ListObjects",
            "DeleteObject",
            "SignCycleCertificate",
        )
    },
    "nasloop.v1.Generator": {
        "Generate": any_cycle,
        "LoadAdapter": load_adapter,
        "UnloadAdapter": unload_adapter,
        "ListAdapters": any_cycle,
        "ModelInfo": any_cycle,
        "RenderPrompt": any_cycle,
    },
    "nasloop.v1.Evaluator": {
        "Validate": any_cycle,
        "Evaluate": any_cycle,
        "ListDatasets": any_cycle,
    },
    "nasloop.v1.Novelty": {
        "CreateNamespace": writes_own_namespace("name"),
        "GetNamespace": any_cycle,
        "ListNamespaces": any_cycle,
        "DeleteNamespace": None,
        "Check": any_cycle,
        "CheckAndAdd": writes_own_namespace("namespace"),
        "BatchCheck": any_cycle,
        "BatchCheckAndAdd": writes_own_namespace("namespace"),
        "Add": writes_own_namespace("namespace"),
        "Remove": writes_own_namespace("namespace"),
        "Stats": any_cycle,
        "Snapshot": None,
        "Fingerprint": any_cycle,
    },
    "nasloop.v1.Trainer": {
        "StartJob": start_job,
        "WatchJob": own_job,
        "GetJob": own_job,
        "ListJobs": None,
        "CancelJob": own_job,
    },
}


class Policy:
    """``check`` raises :class:`PermissionDenied` unless ``who`` may make this call."""

    def __init__(self, cycle_rules: Mapping[str, Mapping[str, Rule | None]] = CYCLE_RULES) -> None:
        self.cycle_rules = cycle_rules

    def check(self, service: str, method: str, who: Identity, request: Any) -> None:
        if service.startswith("grpc."):  # health and reflection: any authenticated caller
            return
        if who.role in ADMINS:
            return
        if who.role != CYCLE:
            raise PermissionDenied(f"the {who.role} identity may not call {service}/{method}")
        rule = self.cycle_rules.get(service, {}).get(method)
        if rule is None:
            raise PermissionDenied(f"{who} may not call {service}/{method}")
        rule(who, request)

    def methods(self) -> Iterable[tuple[str, str]]:
        for service, rules in self.cycle_rules.items():
            for method in rules:
                yield service, method


class CallerGuard:
    """The interceptor's guard on a mutual-TLS server: the caller's identity from its
    certificate, then the policy's rule for the call. A call without a certificate (only a
    port that asks for none lets one in) reaches only the ``anonymous`` services, which know
    their callers another way (the CycleStore: by the pod's address and owning Job)."""

    def __init__(
        self,
        authenticator: Authenticator,
        policy: Policy | None = None,
        anonymous: frozenset[str] = frozenset(),
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy or Policy()
        self.anonymous = anonymous

    def __call__(
        self, service: str, method: str, request: Any, context: grpc.ServicerContext
    ) -> None:
        who = self.authenticator.identify(context)
        if who is None:
            # No certificate: on the TLS port that asks for none, the anonymous services; on
            # the plaintext health port (the kubelet's probes speak no TLS), health only.
            secure = context.auth_context().get("transport_security_type") == [b"ssl"]
            if service in self.anonymous if secure else service == HEALTH:
                return
            raise PermissionDenied(f"{service}/{method} needs a client certificate")
        self.policy.check(service, method, who, request)
