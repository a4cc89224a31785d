"""Write the chart's ``values.schema.json``: every object closed (unknown keys are refused),
every leaf typed. The ``config`` value is nasloop's own configuration, so its schema is the
one pydantic derives from ``nasloop/config.py`` (the same rules every process applies).

    python deploy/helm/gen_schema.py [--check]

``--check`` exits 1 when the committed file differs (``make chart-check`` runs it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from nasloop.config import Config

SCHEMA = Path(__file__).resolve().parent / "nasloop" / "values.schema.json"
Json = dict[str, Any]

STR: Json = {"type": "string"}
BOOL: Json = {"type": "boolean"}
PORT: Json = {"type": "integer", "minimum": 1, "maximum": 65535}
QUANTITY: Json = {"type": ["string", "integer", "number"]}
ANY_OBJECT: Json = {"type": "object"}  # a Kubernetes structure, checked by the API server
LABELS: Json = {"type": "object", "additionalProperties": STR}


def nonneg(maximum: int | None = None) -> Json:
    return {"type": "integer", "minimum": 0} | ({"maximum": maximum} if maximum else {})


def enum(*values: str) -> Json:
    return {"type": "string", "enum": list(values)}


def array(items: Json) -> Json:
    return {"type": "array", "items": items}


def obj(props: Json, required: tuple[str, ...] = ()) -> Json:
    out: Json = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = list(required)
    return out


ENV = array(
    obj({"name": STR, "value": STR, "valueFrom": ANY_OBJECT}, required=("name",)),
)
RESOURCES = obj(
    {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    }
)
IMAGE = obj({"repository": STR, "tag": STR, "pullPolicy": enum("Always", "IfNotPresent", "Never")})
PERSISTENCE = obj({"size": QUANTITY, "storageClass": STR, "existingClaim": STR})
# Kubernetes tolerations and affinities, checked as far as nasloop's configuration checks them
# (nasloop/config.py, JobPlacement), so that a typo fails the install, not the evaluator's start.
TOLERATIONS = array(
    obj(
        {
            "key": STR,
            "operator": enum("Exists", "Equal"),
            "value": STR,
            "effect": enum("", "NoSchedule", "PreferNoSchedule", "NoExecute"),
            "tolerationSeconds": {"type": "integer"},
        }
    )
)
AFFINITY = obj(
    {"nodeAffinity": ANY_OBJECT, "podAffinity": ANY_OBJECT, "podAntiAffinity": ANY_OBJECT}
)
# Where a Job's pods are scheduled (evaluator.jobs, controller.cycleJobs).
JOB_PLACEMENT: Json = {
    "nodeSelector": LABELS,
    "tolerations": TOLERATIONS,
    "affinity": AFFINITY,
    "priorityClassName": STR,
}


def component(**extra: Json) -> Json:
    props: Json = {
        "enabled": BOOL,
        "port": PORT,
        "resources": RESOURCES,
        "startupSeconds": {"type": "integer", "minimum": 10},
        "nodeSelector": LABELS,
        "tolerations": TOLERATIONS,
        "affinity": AFFINITY,
        "podAnnotations": LABELS,
        "env": ENV,
    }
    return obj(props | extra)


def nasloop_config() -> tuple[Json, Json]:
    """nasloop's configuration schema and its definitions (moved to the root of the file)."""
    schema = Config.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})
    schema.pop("title", None)
    return schema, defs


def values_schema() -> Json:
    config, defs = nasloop_config()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nasloop chart values",
        **obj(
            {
                "image": obj(
                    {
                        "registry": STR,
                        "repositoryPrefix": STR,
                        "tag": STR,
                        "variant": enum("gpu", "cpu"),
                        "pullPolicy": enum("Always", "IfNotPresent", "Never"),
                        "pullSecrets": array(STR),
                    }
                ),
                "gpu": obj(
                    {
                        "enabled": BOOL,
                        "resource": STR,
                        "nodeSelector": LABELS,
                        "tolerations": TOLERATIONS,
                        "affinity": AFFINITY,
                        "runtimeClassName": STR,
                    }
                ),
                # Helm's values shared with the subcharts of a parent chart: Helm passes them to
                # every subchart, so a closed schema must admit them (nasloop reads none).
                "global": ANY_OBJECT,
                "priorityClassName": STR,
                "podSecurityContext": ANY_OBJECT,
                "logFormat": enum("json", "text"),
                "metricsPort": PORT,
                "store": obj(
                    {
                        "bucket": {
                            "type": "string",
                            "pattern": "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                        },
                        "prefix": STR,
                        "existingSecret": STR,
                        "accessKey": STR,
                        "secretKey": STR,
                        "region": STR,
                        "external": obj(
                            {
                                "enabled": BOOL,
                                "endpoint": STR,
                                "secure": BOOL,
                                "cidr": STR,
                                "port": PORT,
                            }
                        ),
                        "bundled": obj(
                            {
                                "image": IMAGE,
                                "args": array(STR),
                                "accessKeyEnv": STR,
                                "secretKeyEnv": STR,
                                "env": ENV,
                                "port": PORT,
                                "dataPath": STR,
                                "runAsUser": {"type": "integer", "minimum": 1},
                                "persistence": PERSISTENCE,
                                "resources": RESOURCES,
                            }
                        ),
                    }
                ),
                "model": obj(
                    {
                        "source": enum("huggingface", "pvc", "store"),
                        "id": STR,
                        "revision": STR,
                        "tokenSecret": STR,
                        "pvc": obj({"claimName": STR, "path": STR}),
                        "storeKey": {"type": "string", "pattern": "^models/[^/]+$"},
                        "cache": obj(
                            {
                                "size": QUANTITY,
                                "storageClass": STR,
                                "existingClaim": STR,
                                "accessMode": enum("ReadWriteOnce", "ReadWriteMany"),
                            }
                        ),
                    }
                ),
                "generator": component(),
                "evaluator": component(
                    replicas={"type": "integer", "minimum": 1, "maximum": 64},
                    jobs=obj(
                        {
                            "gpus": nonneg(16),
                            "cpu": QUANTITY,
                            "memory": QUANTITY,
                            "ephemeralStorage": QUANTITY,
                            "runtimeClassName": STR,
                            **JOB_PLACEMENT,
                        }
                    ),
                ),
                "novelty": component(),
                "trainer": component(),
                "controller": component(
                    cycleJobs=obj(
                        {
                            "cpu": QUANTITY,
                            "memory": QUANTITY,
                            "activeDeadlineSeconds": {"type": "integer", "minimum": 60},
                            "ttlSecondsAfterFinished": nonneg(),
                            **JOB_PLACEMENT,
                        }
                    )
                ),
                "run": obj({"enabled": BOOL, "spec": ANY_OBJECT}),
                "config": config,
                "networkPolicy": obj(
                    {
                        "enabled": BOOL,
                        "defaultDeny": BOOL,
                        "servicesEgress": array(ANY_OBJECT),
                        "metricsFrom": array(LABELS),
                        "grpcFrom": array(ANY_OBJECT),
                        "dns": obj({"namespace": STR, "podLabels": LABELS}),
                    }
                ),
                "admissionPolicy": obj({"enabled": BOOL}),
                "tls": obj(
                    {
                        "enabled": BOOL,
                        "certManager": {"enum": ["auto", True, False, "true", "false"]},
                        "days": {"type": "integer", "minimum": 1},
                        "healthPort": PORT,
                        "cyclePort": PORT,
                    }
                ),
                "serviceMonitor": obj({"enabled": BOOL, "interval": STR, "labels": LABELS}),
            }
        ),
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        if SCHEMA.read_text() != text:
            raise SystemExit(f"{SCHEMA} is stale: run python deploy/helm/gen_schema.py")
    else:
        SCHEMA.write_text(text)
