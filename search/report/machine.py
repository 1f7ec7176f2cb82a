"""What names the machine a sweep ran on, kept out of every file the report writes.

Another machine reads the report; the sweep's own paths mean nothing there and say whose disk
it was. So, in the spec the report shows, in table cells and in the trials' error messages:

* a local path becomes ``<local>/`` and its last component: ``data_dir: /home/ada/data/mnist``
  reads ``data_dir: <local>/mnist`` (what it was, not where); a SQLite store
  ``sqlite:////home/ada/mlflow.db`` reads ``sqlite:///<local>/mlflow.db``;
* a server's host becomes ``<host>``: ``http://gpu-box.lab:5000`` reads ``http://<host>:5000``.

Relative paths, object-store URIs (``s3://bucket/runs``) and plain words are kept: they name no
machine. Settings that only say where a trial found its files (:data:`MACHINE_SETTINGS`) are
left out of the tables and ``trials.csv`` altogether.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["HOST", "LOCAL", "MACHINE_SETTINGS", "without_paths"]

MACHINE_SETTINGS = ("data_dir",)  # where a trial found its files on its machine
LOCAL = "<local>"  # a local path's folders
HOST = "<host>"  # a server's host name or address

_END = r"\s'\",}\]);"  # what ends a path or URI written inside text, YAML or a tuple
_PATTERNS = [
    # a local store's URI: sqlite:////abs/mlflow.db, file:///abs/runs
    (re.compile(rf"\b(sqlite|file):/*+([^{_END}]*[/\\][^{_END}]*)"),
     lambda m: f"{m[1]}:///{_shortened(m[2])}"),
    # a server: keep the scheme and port, not the user or host
    (re.compile(r"\b(https?://)(?:[^@/\s'\"]*@)?(\[[^\]]*\]|[^:/\s'\"<]+)"),
     lambda m: f"{m[1]}{HOST}"),
    # a quoted absolute path, spaces and all
    (re.compile(r"(['\"])((?:/|~[\w.-]*/|[A-Za-z]:[\\/])[^'\"\n]*)\1"),
     lambda m: f"{m[1]}{_shortened(m[2])}{m[1]}"),
    # a bare absolute path: /..., ~/..., ~user/..., C:\... (not inside a word, URI or number)
    (re.compile(rf"(?<![\w.~/\\:<>-])(?:/|~[\w.-]*/|[A-Za-z]:[\\/])[^{_END}]+"),
     lambda m: _shortened(m[0])),
]


def _shortened(path: str) -> str:
    """``<local>/`` and the path's last component (``<local>`` alone for a bare root)."""
    last = re.split(r"[\\/]", path.rstrip("/\\"))[-1]
    return f"{LOCAL}/{last}" if last and not last.startswith("~") else LOCAL


def without_paths(text: Any) -> Any:
    """``text`` with each local path and server host it names shortened as the module says;
    anything but a string as it is."""
    if not isinstance(text, str):
        return text
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text
