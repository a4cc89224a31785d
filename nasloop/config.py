"""Configuration for every nasloop process, in one place.

Sources, later ones winning:
1. the defaults below;
2. a YAML file named by ``NASLOOP_CONFIG`` (or passed explicitly);
3. environment variables ``NASLOOP_<SECTION>__<KEY>``, e.g. ``NASLOOP_STORE__URL`` or
   ``NASLOOP_NOVELTY__PORT``.

Everything is validated by pydantic; unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from nasloop import layout
from nasloop.lora import check_rank
from nasloop.protocol import DEFAULT_MAX_PARAMETERS, DEFAULT_TIME_LIMIT_S, MAX_TIME_LIMIT_S

ENV_PREFIX = "NASLOOP_"
ENV_FILE = "NASLOOP_CONFIG"
GENERATOR_SPARE_WORKERS = 4


class ConfigError(ValueError):
    """Raised for a configuration that cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreConfig(_Section):
    """Where artifacts live: ``file://<dir>`` (local mode), ``s3://<bucket>[/<prefix>]``, or
    ``controller://<host>:<port>`` (a cycle Job in cluster mode: the store through the
    controller, which holds the keys)."""

    url: str = "file://.nasloop/store"
    endpoint: str | None = Field(default=None, description="S3 endpoint host:port (for s3:// URLs)")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    region: str | None = None
    secure: bool = Field(default=False, description="use TLS to reach the S3 endpoint")
    create_bucket: bool = True
    retries: int = Field(default=5, ge=0, le=20, description="retries of a transient S3 error")
    backoff_s: float = Field(
        default=0.1, gt=0, le=30, description="first retry delay; doubles each try"
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith(("file://", "s3://", "controller://")):
            raise ValueError(
                f"store url must start with file://, s3:// or controller://, got {v!r}"
            )
        if v.startswith("s3://") and not v[len("s3://") :].strip("/"):
            raise ValueError("s3 store url needs a bucket: s3://<bucket>[/<prefix>]")
        if v.startswith("controller://") and not v[len("controller://") :].strip("/"):
            raise ValueError("controller store url needs an address: controller://<host>:<port>")
        return v


class ServerConfig(_Section):
    """gRPC server settings shared by every service."""

    host: str = "0.0.0.0"
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one"
    )
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_workers: int = Field(default=16, ge=1, le=1024)
    grace_s: float = Field(default=10.0, ge=0, description="graceful-shutdown window on SIGTERM")
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="with tls on: a plaintext port that answers only the gRPC health service "
        "(the kubelet's gRPC probes speak no TLS); unset: none",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"


class TlsConfig(_Section):
    """Mutual TLS between nasloop's processes (off: plaintext, for loopback ``make run``).

    On, every server requires a client certificate signed by ``ca_file`` (or, for a cycle Job's
    identity only, by ``cycle_ca_file``) and authorises each call by the caller's identity: the
    certificate's URI SAN ``nasloop://<domain>/<role>`` (``controller``, ``evaluator``,
    ``operator``, a service's own name) or ``nasloop://<domain>/cycle/<run>/<cycle>``
    (nasloop/rpc/authz.py says who may call what). Every client presents ``cert_file``."""

    enabled: bool = False
    domain: str = Field(
        default="nasloop",
        pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$",
        description="the identities' trust domain (the chart: the release's full name); a "
        "certificate of another domain is refused",
    )
    ca_file: str = Field(default="", description="PEM: the CA of nasloop's service identities")
    ca_pem: str = Field(
        default="",
        description="the same CA inline (PEM), instead of ca_file (how a cycle Job gets it)",
    )
    cert_file: str = Field(
        default="", description="PEM: this process's certificate (server and client)"
    )
    key_file: str = Field(default="", description="PEM: its private key")
    cycle_ca_file: str = Field(
        default="",
        description="PEM: the CA that signs cycle Jobs' identities (trusted for those only)",
    )
    cycle_ca_key_file: str = Field(
        default="",
        description="the controller only: the cycle CA's key, with which it signs each cycle "
        "pod's own key (a cycle pod makes its key at start and holds no Secret)",
    )

    @model_validator(mode="after")
    def _files_when_enabled(self) -> TlsConfig:
        if self.enabled:
            missing = [k for k in ("cert_file", "key_file") if not getattr(self, k)]
            if not self.ca_file and not self.ca_pem:
                missing.append("ca_file")
            if missing:
                raise ValueError(f"tls.enabled needs {', '.join('tls.' + k for k in missing)}")
        return self


class NoveltyConfig(_Section):
    port: int = Field(default=50053, ge=0, le=65535)
    max_code_bytes: int = Field(default=256 * 1024, ge=1, description="larger code is refused")
    max_batch: int = Field(default=1024, ge=1, description="items per batch RPC")
    fingerprint_workers: int = Field(
        default=2,
        ge=0,
        le=64,
        description="processes computing fingerprints; 0 = the calling thread",
    )
    handler_threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="gRPC handler threads of this service; 0 = server.max_workers. On a local "
        "store 6 gave the most check-and-adds per second on 2 cores (docs/benchmarks.md); an "
        "S3 store needs more, since each thread waits for the journal write it joined",
    )
    snapshot_interval_s: float = Field(default=300.0, gt=0, description="periodic snapshot period")
    snapshot_every_ops: int = Field(
        default=20000, ge=1, description="snapshot a namespace after this many journalled ops"
    )
    # Defaults for namespaces created without explicit parameters (DESIGN.md).
    shingle_size: int = Field(default=7, ge=1, le=64)
    num_perm: int = Field(default=128, ge=16, le=1024)
    threshold: float = Field(default=0.85, gt=0, lt=1)


class SamplingDefaults(_Section):
    """Decoding settings a Generate request leaves unset."""

    temperature: float = Field(default=0.8, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, description="0 = disabled")
    max_tokens: int = Field(default=0, ge=0, description="0 = up to the end of the context")


class GeneratorConfig(_Section):
    port: int = Field(default=50051, ge=0, le=65535)
    backend: Literal["auto", "vllm", "transformers"] = Field(
        default="auto", description="auto = vLLM when it is installed, else transformers + peft"
    )
    model: str = Field(
        default=layout.bootstrap_model("default"),
        description="base model: models/<name> in the store, a local Hugging Face directory or "
        "a Hugging Face id (org/name[@revision], cached in HF_HOME)",
    )
    prompt_template: Literal["plain", "instruct"] = "plain"
    cache_dir: str = Field(
        default=".nasloop/generator", description="fetched base model and adapters"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto = float32 on CPU, bfloat16 on GPU"
    )
    max_model_len: int = Field(default=0, ge=0, description="context length; 0 = the model's")
    max_loras: int = Field(default=4, ge=1, le=64, description="adapters in one batch")
    max_cpu_loras: int = Field(default=8, ge=1, le=1024, description="adapters registered at once")
    max_lora_rank: int = Field(default=64, description="largest adapter rank that can be loaded")
    max_n: int = Field(default=256, ge=1, description="answers per Generate call")
    # Each streaming call holds one of the server's worker threads until it ends, so at most
    # server.max_workers - 4 (the rest answer health checks and adapter calls).
    max_concurrent_calls: int = Field(
        default=12, ge=1, description="Generate calls in flight at once"
    )
    seed: int = Field(
        default=0, ge=0, description="engine seed (requests without a seed get a random one)"
    )
    # vLLM: KV-cache memory on CPU; the share of GPU memory it may use on GPU.
    kv_cache_gib: int = Field(default=1, ge=1, le=1024)
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1)
    threads: int = Field(default=0, ge=0, le=256, description="torch threads on CPU; 0 = default")
    # transformers backend: answers decoded together in one batch.
    max_batch: int = Field(default=32, ge=1, le=1024)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)

    @field_validator("max_lora_rank")
    @classmethod
    def _servable_rank(cls, v: int) -> int:
        return check_rank(v)


_TOLERATION_KEYS = frozenset({"key", "operator", "value", "effect", "tolerationSeconds"})
_AFFINITY_KEYS = frozenset({"nodeAffinity", "podAffinity", "podAntiAffinity"})
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_EXTENDED_RESOURCE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class JobPlacement(_Section):
    """Where a Job's pod may run and how it pulls its image: the scheduling settings that the
    Helm chart passes to the Jobs the services create (services/evaluator/kube/,
    services/controller/kube.py), in the form a Kubernetes pod spec takes them."""

    image_pull_secrets: list[str] = Field(
        default_factory=list, description="names of docker-registry Secrets for the Job's image"
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Kubernetes tolerations, as in a pod spec"
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict, description="a Kubernetes affinity, as in a pod spec"
    )
    priority_class: str | None = Field(default=None, description="PriorityClass of the Job's pod")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="more labels on the Job and its pod (the chart sets its release's "
        "app.kubernetes.io/instance); nasloop's own labels win",
    )

    @field_validator("image_pull_secrets")
    @classmethod
    def _named(cls, v: list[str]) -> list[str]:
        if any(not name.strip() for name in v):
            raise ValueError("an image pull secret needs a name")
        return v

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for t in v:
            unknown = t.keys() - _TOLERATION_KEYS
            if unknown:
                raise ValueError(f"unknown toleration fields {sorted(unknown)} in {t}")
            if t.get("operator", "Equal") not in ("Exists", "Equal"):
                raise ValueError(f"toleration operator must be Exists or Equal: {t}")
            if t.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise ValueError(
                    f"toleration effect must be NoSchedule, PreferNoSchedule or NoExecute: {t}"
                )
        return v

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = v.keys() - _AFFINITY_KEYS
        if unknown:
            raise ValueError(f"affinity takes {sorted(_AFFINITY_KEYS)}, not {sorted(unknown)}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: x for k, x in v.items() if not k or not _LABEL_VALUE.match(x)}
        if bad:
            raise ValueError(f"not valid Kubernetes labels: {bad}")
        return v


class KubernetesConfig(JobPlacement):
    """Cluster mode: each evaluation is a hardened Job (services/evaluator/kube/)."""

    namespace: str = "nasloop"
    image: str = Field(
        default="nasloop/evaluator-pod:latest",
        description="the evaluation pod's image: torch, numpy, the harness (evaluator-pod-*)",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    runtime_class: str | None = Field(
        default=None, description="e.g. gvisor; None = cluster default"
    )
    service_account: str | None = Field(
        default=None,
        description="the evaluation pods' ServiceAccount (no token); None = the default",
    )
    gpus: int = Field(
        default=1, ge=0, le=16, description="GPUs (gpu_resource) per Job; 0 = CPU-only Job"
    )
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        description="the extended resource a GPU Job requests, e.g. nvidia.com/mig-1g.10gb",
    )
    cpu: str = "2"
    memory: str = "8Gi"
    ephemeral_storage: str = "2Gi"
    tmp_size: str = Field(
        default="1Gi", description="size limit of the pod's writable /tmp emptyDir"
    )
    tolerate_gpu_taint: bool = Field(
        default=True, description="a GPU Job also tolerates the NoSchedule taint named gpu_resource"
    )
    ttl_after_finished_s: int = Field(default=300, ge=0)
    # Headroom on top of the protocol's per-candidate time limit (image pull, data download).
    deadline_slack_s: int = Field(default=120, ge=0)
    url_expiry_s: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    poll_interval_s: float = Field(default=1.0, gt=0)
    # Store endpoint as pods reach it (presigned URLs are signed for this host); None = the
    # store's own endpoint.
    pod_store_endpoint: str | None = None

    @field_validator("gpu_resource")
    @classmethod
    def _resource_name(cls, v: str) -> str:
        if not _EXTENDED_RESOURCE.match(v):
            raise ValueError(
                f"gpu_resource must be an extended resource name <domain>/<name>: {v!r}"
            )
        return v


class EvaluatorConfig(_Section):
    port: int = Field(default=50052, ge=0, le=65535)
    executor: Literal["local", "kubernetes"] = "local"
    workers: int = Field(default=2, ge=1, le=256, description="candidates evaluated in parallel")
    threads_per_candidate: int = Field(
        default=1, ge=1, le=64, description="torch threads per child"
    )
    sandbox: Literal["strict", "weak"] = Field(
        default="strict", description="strict = bubblewrap + seccomp + rlimits + non-root uid"
    )
    sandbox_uid: int = Field(default=65534, ge=1, description="uid candidates run as (never 0)")
    sandbox_gid: int = Field(default=65534, ge=1)
    memory_bytes: int = Field(
        default=4 << 30, ge=64 << 20, description="address space per candidate"
    )
    tmp_bytes: int = Field(
        default=256 << 20, ge=1 << 20, description="size of a worker's private /tmp"
    )
    file_bytes: int = Field(
        default=64 << 20, ge=1 << 20, description="largest file a candidate writes"
    )
    open_files: int = Field(default=256, ge=16, le=65536)
    output_tail_bytes: int = Field(default=4096, ge=0, le=16 * 1024)
    probe_time_limit_s: float = Field(
        default=60.0, gt=0, description="wall limit of a Validate probe"
    )
    max_candidates: int = Field(
        default=512, ge=1, description="candidates per Validate/Evaluate call"
    )
    max_calls: int = Field(default=8, ge=1, description="concurrent Validate/Evaluate calls")
    max_code_bytes: int = Field(
        default=32 * 1024,
        ge=1,
        description="larger code is refused: real networks need < 8 KiB (docs/benchmarks.md); "
        "the bound keeps a copy of a test set's labels out of a candidate",
    )
    data_dir: str = Field(default=".nasloop/evaluator", description="prepared dataset cache")
    cifar10_source: str | None = Field(
        default=None, description="CIFAR-10 python tarball: a local path or an object-store key"
    )
    # Defaults of the protocol (DESIGN.md, paper settings); requests refine them.
    dataset: str = "digits"
    device: Literal["cpu", "cuda"] = "cpu"
    time_limit_s: float = Field(default=DEFAULT_TIME_LIMIT_S, gt=0, le=MAX_TIME_LIMIT_S)
    max_parameters: int = Field(default=DEFAULT_MAX_PARAMETERS, ge=1)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)


class TrainerConfig(_Section):
    port: int = Field(default=50054, ge=0, le=65535)
    cache_dir: str = Field(
        default=".nasloop/trainer", description="fetched base models and adapters"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=0, ge=0, le=256, description="torch threads; 0 = torch's default")
    max_jobs: int = Field(default=64, ge=1, description="queued + running jobs kept at once")
    max_pairs_bytes: int = Field(
        default=256 << 20, ge=1024, description="largest training-pairs object"
    )
    log_every_steps: int = Field(
        default=5, ge=1, description="progress messages every N optimizer steps"
    )


class CallDeadlines(_Section):
    """Per-call deadlines (seconds) of the controller's calls to the services.

    The shared channel's 30 s default suits quick calls only; a deadline that fires is an error
    the cycle reports (the step is retried on resume), never a silent half-step."""

    default_s: float = Field(default=30.0, gt=0, description="any call not named below")
    generate_s: float = Field(default=1800.0, gt=0, description="one streamed Generate call")
    evaluate_s: float = Field(default=3600.0, gt=0, description="one streamed Evaluate call")
    novelty_s: float = Field(
        default=120.0, gt=0, description="BatchCheckAndAdd and namespace calls"
    )
    load_adapter_s: float = Field(default=300.0, gt=0, description="LoadAdapter (fetch + register)")
    start_job_s: float = Field(
        default=120.0, gt=0, description="StartJob (reads and checks the pairs)"
    )
    train_s: float = Field(
        default=6 * 3600.0, gt=0, description="watching one training job to its end"
    )


class CycleJobConfig(JobPlacement):
    """Cluster mode: each cycle runs as a Kubernetes Job (``nasloop cycle --run R --cycle N``)."""

    namespace: str = "nasloop"
    image: str = Field(
        default="nasloop/controller:latest", description="image with nasloop (no torch)"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    service_account: str = Field(
        default="nasloop-cycle",
        description="the cycle pods' ServiceAccount (its token is not mounted)",
    )
    controller_address: str = Field(
        default="nasloop-controller:50055",
        description="host:port at which cycle pods reach this controller: their object store "
        "(controller://, the CycleStore service), so they hold no store keys",
    )
    config_map: str | None = Field(
        default=None,
        description="ConfigMap holding config.yaml, mounted and named by NASLOOP_CONFIG",
    )
    cpu: str = "1"
    memory: str = "2Gi"
    active_deadline_s: int = Field(
        default=24 * 3600, ge=60, description="a cycle's wall-clock limit"
    )
    ttl_after_finished_s: int = Field(default=3600, ge=0)
    poll_interval_s: float = Field(default=2.0, gt=0)


class ControllerConfig(_Section):
    port: int = Field(default=50055, ge=0, le=65535)
    cycle_port: int = Field(
        default=50056,
        ge=0,
        le=65535,
        description="with tls on, in kubernetes mode: the port where cycle pods, which have no "
        "certificate until the controller signs one, reach the CycleStore (the server's "
        "certificate only; the pod is known by its address and owning Job)",
    )
    mode: Literal["local", "kubernetes"] = Field(
        default="local",
        description="local = cycles run in the controller's process; kubernetes = Jobs",
    )
    # Addresses (host:port) of the four services.
    generator: str = "localhost:50051"
    evaluator: str = "localhost:50052"
    novelty: str = "localhost:50053"
    trainer: str = "localhost:50054"
    deadlines: CallDeadlines = Field(default_factory=CallDeadlines)
    kubernetes: CycleJobConfig = Field(default_factory=CycleJobConfig)


class Config(_Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    novelty: NoveltyConfig = Field(default_factory=NoveltyConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)

    @model_validator(mode="after")
    def _threads_for_streams(self) -> Config:
        spare = self.server.max_workers - GENERATOR_SPARE_WORKERS
        if self.generator.max_concurrent_calls > spare:
            raise ValueError(
                f"generator.max_concurrent_calls ({self.generator.max_concurrent_calls}) must be "
                f"at most server.max_workers - {GENERATOR_SPARE_WORKERS} ({spare}): each Generate "
                "call holds a server thread"
            )
        return self


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """``NASLOOP_A__B=v`` → ``{"a": {"b": "v"}}``.

    Values stay strings (an empty one means unset); pydantic converts them to each field's type,
    so a secret that looks like a number is never mangled.
    """
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_FILE:
            continue
        if "__" not in key:
            raise ConfigError(
                f"unknown configuration variable {key}: use {ENV_PREFIX}<SECTION>__<KEY> "
                f"(two underscores), e.g. {ENV_PREFIX}STORE__URL"
            )
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if any(not part for part in path):
            raise ConfigError(f"malformed configuration variable {key}")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key} conflicts with another configuration variable")
        node[path[-1]] = raw if raw != "" else None
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = _merge(dict(merged[k]), v)
        else:
            merged[k] = v
    return merged


def load_config(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Build the validated configuration; raise :class:`ConfigError` with a readable message."""
    env = os.environ if env is None else env
    path = path or env.get(ENV_FILE) or None
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read configuration file {p}: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"configuration file {p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {p} must hold a mapping at the top level")
        data = loaded
    data = _merge(data, _env_overrides(env))
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
