"""Base models named by a Hugging Face id, resolved through the Hugging Face cache.

``org/name`` (optionally ``org/name@revision``) is downloaded once into the cache that
``HF_HOME`` names (a persistent volume in the cluster) and read from there afterwards. Nothing
here forces the hub offline: where the cluster has network the first start downloads, and with
``HF_HUB_OFFLINE=1`` only the cache is used. A model's identity is the commit the revision
resolved to, so an adapter records exactly which weights it was trained on.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from nasloop import layout
from nasloop.rpc.errors import NotFound, Unavailable

# Hub repository ids: [org/]name of letters, digits, '-', '_', '.'; an optional @revision.
_HF_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?)"
    r"(?:@(?P<rev>[A-Za-z0-9][A-Za-z0-9._/-]{0,127}))?$"
)
_STORE_MODELS = f"{layout.MODELS}/"


@dataclass(frozen=True)
class HubModel:
    path: Path  # the snapshot directory in the cache
    commit: str
    sha256: str  # identity: of "hf:<repo>@<commit>"


def is_hub_id(ref: str) -> bool:
    """Whether ``ref`` can only mean a Hugging Face id: not a store model, not a path."""
    if ref.startswith((_STORE_MODELS, "/", ".", "~")) or ".." in ref:
        return False
    return _HF_ID.match(ref) is not None


def resolve(ref: str) -> HubModel:
    """The local snapshot of ``ref`` (downloaded into the cache when missing and allowed)."""
    m = _HF_ID.match(ref)
    if m is None or not is_hub_id(ref):
        raise NotFound(f"{ref!r} is not a Hugging Face model id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, revision = m.group("repo"), m.group("rev")
    try:
        path = Path(snapshot_download(repo, revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:
        raise NotFound(f"Hugging Face model {ref!r}: {type(e).__name__}: {e}") from None
    except LocalEntryNotFoundError as e:
        raise NotFound(
            f"Hugging Face model {ref!r} is not in the cache (HF_HOME) and cannot be "
            f"downloaded here: {e}"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise Unavailable(f"Hugging Face model {ref!r}: download failed: {e}") from None
    if not (path / "config.json").is_file():
        raise NotFound(f"Hugging Face model {ref!r}: the snapshot has no config.json")
    commit = path.name
    return HubModel(path, commit, hashlib.sha256(f"hf:{repo}@{commit}".encode()).hexdigest())
