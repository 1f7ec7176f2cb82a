"""Where sweeps live: a local folder, or any filesystem pyarrow opens from a URI.

Ray Tune reads and writes its storage path through ``pyarrow.fs`` (``s3://bucket/runs``,
``gs://…``, ``file:///mnt/shared/runs``; for S3-compatible stores such as MinIO set
``AWS_ENDPOINT_URL`` or add ``?endpoint_override=host:port&scheme=http`` to the URI). hpsearch
keeps its own small files (``hpsearch.json``, ``mlflow_runs.json``, the ``mlflow_pending``
marker) in the same sweep folder, so a sweep on S3 can be resumed, synced and reported from any
machine that can read the bucket. :class:`RemotePath` gives that folder the few
:class:`pathlib.Path` operations this code uses; local folders stay plain Paths.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hpsearch.trainables.errors import UserError

__all__ = ["Location", "RemotePath", "is_uri", "local_copy", "location", "storage_error",
           "write_atomic"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` names a filesystem by scheme (``s3://…``, ``file:///…``)."""
    return isinstance(text, str) and bool(_SCHEME.match(text))


class RemotePath:
    """A file or folder on a ``pyarrow.fs`` filesystem, named by URI; Path-like enough for
    hpsearch (``/``, ``name``, ``parent``, ``exists``, ``read_text``, ``write_text``, ``glob``…).

    The URI's query (``?endpoint_override=…``) names the filesystem, not the file: it stays on
    every child and parent, so ``str()`` of any of them opens the same store.
    """

    def __init__(self, uri: str, _fs: Any = None,
                 _root: tuple[str, str] | None = None) -> None:
        base, _, query = uri.partition("?")
        scheme, _, rest = base.partition("://")
        rest = rest.rstrip("/") if rest.strip("/") else rest
        self._scheme, self._rest, self._query = scheme, rest, query
        self._fs = _fs
        self._root = _root  # (rest, fs path) of a URI pyarrow resolved: children derive theirs

    # ---- naming

    def _with(self, rest: str) -> RemotePath:
        return RemotePath(f"{self._scheme}://{rest}{'?' + self._query if self._query else ''}",
                          self._fs, self._root)

    def __str__(self) -> str:
        return f"{self._scheme}://{self._rest}{'?' + self._query if self._query else ''}"

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str | os.PathLike[str]) -> RemotePath:
        return self._with(f"{self._rest.rstrip('/')}/{os.fspath(name).strip('/')}")

    @property
    def name(self) -> str:
        return self._rest.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        head = self._rest.rstrip("/").rsplit("/", 1)[0]
        return self._with(head if head != self._rest else self._rest)

    # ---- the filesystem

    def _resolve(self) -> str:
        root = self._root
        inside = root is not None and (self._rest == root[0]
                                       or self._rest.startswith(root[0].rstrip("/") + "/"))
        if self._fs is None or not inside:
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(str(self))  # S3: may look up the region
            self._fs = self._fs or fs
            self._root = root = (self._rest, path)
        assert root is not None
        return root[1] + self._rest[len(root[0]):]

    @property
    def fs(self) -> Any:
        """The ``pyarrow.fs.FileSystem`` (one per tree of paths derived from each other)."""
        if self._fs is None:
            self._resolve()
        return self._fs

    @property
    def fs_path(self) -> str:
        """The path on :attr:`fs` (the URI minus scheme and query, as pyarrow names it)."""
        return self._resolve()

    def _info(self) -> Any:
        return self.fs.get_file_info(self.fs_path)

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.Directory

    def stat(self) -> Any:
        info = self._info()
        mtime = info.mtime.timestamp() if isinstance(info.mtime, datetime) else 0.0
        return SimpleNamespace(st_mtime=mtime, st_size=info.size or 0)

    def read_bytes(self) -> bytes:
        if not self.is_file():
            raise FileNotFoundError(f"{self} does not exist")
        with self.fs.open_input_stream(self.fs_path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes().decode(encoding, errors)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.fs_path) as f:  # one PUT: atomic on object stores
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        if not self.exists():
            if missing_ok:
                return
            raise FileNotFoundError(f"{self} does not exist")
        self.fs.delete_file(self.fs_path)

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        self.fs.create_dir(self.fs_path, recursive=True)

    def iterdir(self) -> Iterator[RemotePath]:
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.fs_path, allow_not_found=True)
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.path):
            yield self / info.base_name

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        """Matches of a relative pattern whose parts are names or ``fnmatch`` globs."""
        level = [self]
        for part in pattern.strip("/").split("/"):
            if not any(c in part for c in "*?["):
                level = [p / part for p in level]
                level = [p for p in level if p.exists()]
            else:
                level = [c for p in level if p.is_dir() for c in p.iterdir()
                         if fnmatch.fnmatchcase(c.name, part)]
        yield from level

    def download(self, dest: Path, skip: Any = None) -> Path:
        """Copy this folder to local ``dest``; ``skip(relative_path)`` leaves files out."""
        import pyarrow.fs

        root = self.fs_path.rstrip("/")
        selector = pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pyarrow.fs.FileType.File:
                continue
            rel = info.path[len(root):].lstrip("/")
            if skip is not None and skip(rel):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open_input_stream(info.path) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        return dest


Location = Path | RemotePath


def location(path: str | os.PathLike[str] | RemotePath) -> Location:
    """A RemotePath for a URI, else the local path made absolute."""
    if isinstance(path, RemotePath):
        return path
    if is_uri(str(path)):
        return RemotePath(str(path))
    return Path(path).expanduser().resolve()


def write_atomic(path: Location, data: str | bytes) -> None:
    """Readers see the old or the new file, never half of one (text, or bytes as given)."""
    binary = isinstance(data, bytes)
    if isinstance(path, RemotePath):
        path.write_bytes(data) if binary else path.write_text(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data) if binary else tmp.write_text(data)
    tmp.replace(path)


def _in_checkpoint(rel: str) -> bool:
    """Whether a file of a sweep folder (path relative to it) is inside a checkpoint."""
    return any(part.startswith("checkpoint_") for part in rel.split("/")[:-1])


def local_copy(run_dir: RemotePath) -> Path:
    """A temporary local copy of a remote sweep folder: results, params, errors and Tune's
    state, no checkpoints. The caller removes it."""
    dest = Path(tempfile.mkdtemp(prefix=f"hpsearch-{run_dir.name}-"))
    return run_dir.download(dest, skip=_in_checkpoint)


def storage_error(where: Location, err: BaseException) -> str:
    """One line for a storage path that cannot be used (bad URI, no bucket, no credentials).
    A :class:`UserError` (a ``ValueError``) raised while reading it is the sweep's own line,
    e.g. "no trials yet": kept as it is."""
    if isinstance(err, UserError):
        return str(err)
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
    hint = ""
    if str(where).startswith("s3://"):
        hint = ("; S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_ENDPOINT_URL "
                "for MinIO & co) and an existing bucket")
    return f"storage: {where} cannot be used ({text}){hint}"
