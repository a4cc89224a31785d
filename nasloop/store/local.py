"""Object store on a local directory: key ``a/b/c`` is the file ``<root>/a/b/c``."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import nasloop.store.base as base

# Suffix of in-flight temporary files; such names are never keys (list() skips them).
TMP_SUFFIX = ".nasloop-tmp"


class LocalStore(base.ObjectStore):
    """A directory with the same key layout as the S3 bucket.

    Writes go to a uniquely named temporary file in the target's directory, are fsynced and then
    renamed over the target with ``os.replace``: readers see the old or the new object, never a
    partial one, concurrent writers of different keys never collide, and for the same key the
    last rename wins. Empty directories left by :meth:`delete` are kept (they hold no keys).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise base.StoreError(f"cannot create store directory {self.root}: {e.strerror}") from e
        self.url = f"file://{self.root}"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        base.check_key(key)
        if key.endswith(TMP_SUFFIX):
            raise base.InvalidKey(
                f"invalid object key {key!r}: the suffix {TMP_SUFFIX} is reserved"
            )
        return self.root.joinpath(*key.split("/"))

    def put_bytes(self, key: str, data: bytes) -> base.ObjectInfo:
        path = self._path(key)
        tmp = path.with_name(f".{uuid.uuid4().hex}{TMP_SUFFIX}")
        try:
            _write_synced(tmp, data, os.O_TRUNC)
            os.replace(tmp, path)
            _sync_dir(path.parent)  # the rename itself must survive a power loss
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise base.StoreError(f"cannot write {key!r} under {self.root}: {e}") from e
        return base.ObjectInfo(key=key, size=len(data), sha256=base.sha256_hex(data))

    supports_append = True

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            created = _write_synced(path, data, os.O_APPEND)
            if created:
                _sync_dir(path.parent)
        except OSError as e:
            raise base.StoreError(f"cannot append to {key!r} under {self.root}: {e}") from e

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise base.ObjectNotFound(key) from None
        except OSError as e:
            raise base.StoreError(f"cannot read {key!r} under {self.root}: {e}") from e

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        base.check_prefix(prefix)
        # Walk only the deepest directory the prefix names, then filter by the string prefix.
        top = self.root.joinpath(*prefix.rpartition("/")[0].split("/"))
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(top):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            under = "" if rel == "." else rel + "/"
            for name in files:
                key = under + name
                if not name.endswith(TMP_SUFFIX) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            pass  # missing, or a "directory" (a prefix, not an object)
        except OSError as e:
            raise base.StoreError(f"cannot delete {key!r} under {self.root}: {e}") from e


def _write_synced(path: Path, data: bytes, flag: int) -> bool:
    """Write (``os.O_TRUNC``) or append (``os.O_APPEND``) ``data`` and wait until it is on disk;
    True when the file was created (its directory entry is then not yet synced).

    Bare os calls, the existing file first: a journal append is on the novelty service's hot
    path, where each system call hands the GIL to another thread and back.
    """
    try:
        fd, created = os.open(path, os.O_WRONLY | flag), False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, created = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o666), True
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return created


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
