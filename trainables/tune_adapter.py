"""The one place ``trainables`` touches Ray: a Tune function trainable around :func:`fit`.

Tune hands a flat config dict; this turns it into a TrialConfig, fetches the decoded dataset from
Ray's object store (zero-copy on the node), enforces the sweep's cost constraints before any
training, reports every epoch with a checkpoint and resumes from the newest complete one.

Each checkpoint names the trial that wrote it and the copies its weights went through. Under
population-based training Tune restarts a trial from another trial's checkpoint with mutated
settings: the trial sees a checkpoint of another trial, trains on from it, and reports the copy
(:data:`~trainables.vocab.COPIED`) with its next epoch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.fs
import torch
from ray.tune import Checkpoint, get_checkpoint, report
from ray.tune.result import EXPR_RESULT_FILE

from hpsearch.trainables.bundle import DataBundle
from hpsearch.trainables.config import BUILTIN_TRAINABLE, TrialConfig, parse_trial_config
from hpsearch.trainables.cost import constraint_violation
from hpsearch.trainables.fit import fit
from hpsearch.trainables.models import trial_cost
from hpsearch.trainables.plugins import import_plugins, run_trainable
from hpsearch.trainables.vocab import COPIED

__all__ = ["CHECKPOINT_FILE", "COMPLETE_FILE", "TrialFolder", "checkpoint_state",
           "latest_checkpoint_state", "load_state", "prune", "train_trial", "write_checkpoint"]

CHECKPOINT_FILE = "state.pt"
# written last, with the checkpoint's epoch ({"epoch": N}; empty before that was added): a
# checkpoint without it was cut off mid-write
COMPLETE_FILE = "COMPLETE"
# the marker's key, on a copy resume put back, for the epoch Tune's record has for it
RECORDED_KEY = "recorded"
_KEEP = 2  # checkpoints kept per trial (Tune's own num_to_keep forces experiment snapshots)


def load_state(directory: Path) -> dict[str, Any] | None:
    """The state in a local checkpoint folder (weights under ``"model"``); None when it was
    cut off mid-write. Loaded with ``weights_only=True``: a checkpoint cannot run code."""
    if not (directory / COMPLETE_FILE).exists():
        return None
    return torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def write_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """``state`` saved into ``directory`` as a checkpoint, its epoch in the marker written last."""
    torch.save(state, directory / CHECKPOINT_FILE)
    (directory / COMPLETE_FILE).write_text(json.dumps({"epoch": int(state["epoch"])}))


def checkpoint_state(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    """The state saved in a Tune checkpoint (None if absent or cut off mid-write)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:  # local storage: the folder itself; S3: a copy
        return load_state(Path(d))


class TrialFolder:
    """The trial's folder on Tune's storage path, through the storage's own ``pyarrow.fs``
    filesystem: a local or mounted folder, or ``s3://…`` and the like."""

    def __init__(self, fs: pyarrow.fs.FileSystem, path: str) -> None:
        self.fs, self.path = fs, path.rstrip("/")

    @classmethod
    def local(cls, path: Path) -> TrialFolder:
        return cls(pyarrow.fs.LocalFileSystem(), str(path))

    def _entries(self) -> list[pyarrow.fs.FileInfo]:
        return self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))

    def checkpoints(self) -> list[str]:
        """Paths of the ``checkpoint_*`` folders, in the order they were written (oldest
        first): Tune numbers them, and :func:`train_trial` keeps its numbers going up."""
        return sorted((i.path for i in self._entries()
                       if i.type == pyarrow.fs.FileType.Directory
                       and i.base_name.startswith("checkpoint_")), key=_checkpoint_number)

    def read_text(self, name: str) -> str | None:
        try:
            with self.fs.open_input_stream(f"{self.path}/{name}") as f:
                return f.read().decode(errors="replace")
        except (FileNotFoundError, OSError):
            return None

    def state(self, checkpoint_path: str) -> dict[str, Any] | None:
        return checkpoint_state(Checkpoint(checkpoint_path, filesystem=self.fs))

    def marker(self, checkpoint_path: str) -> dict[str, Any] | None:
        """A checkpoint's marker: ``{"epoch": N}``, ``{}`` from an older version, None when
        the checkpoint was cut off mid-write. Raises OSError when storage cannot tell."""
        marker = f"{checkpoint_path}/{COMPLETE_FILE}"
        if self.fs.get_file_info(marker).type == pyarrow.fs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(marker) as f:
            text = f.read().decode(errors="replace")
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def epoch(self, checkpoint_path: str) -> int | None:
        """The epoch a checkpoint holds, from its marker alone (one small read, no weights);
        None when it was cut off mid-write. Raises OSError when storage cannot tell."""
        marker = self.marker(checkpoint_path)
        if marker is None:
            return None
        if isinstance(marker.get("epoch"), int):
            return marker["epoch"]
        state = self.state(checkpoint_path)  # an empty marker of an older version
        return None if state is None else int(state["epoch"])

    def copy_checkpoint(self, source: str, name: str, recorded: int | None) -> None:
        """A copy of the checkpoint folder ``source`` as ``name`` in this folder, its marker
        written last (a copy cut off mid-way is one cut off mid-write). ``recorded``: the epoch
        Tune's record has for ``name`` (it puts back a pruned one, see
        ``search.reconcile``), kept in the marker as ``recorded``."""
        target = f"{self.path}/{name}"
        files = [i for i in self.fs.get_file_info(pyarrow.fs.FileSelector(source, recursive=True))
                 if i.type == pyarrow.fs.FileType.File]
        self.fs.create_dir(target, recursive=True)
        for info in sorted(files, key=lambda i: i.base_name == COMPLETE_FILE):
            relative = info.path[len(source.rstrip("/")) + 1:]
            if "/" in relative:
                self.fs.create_dir(f"{target}/{relative.rsplit('/', 1)[0]}", recursive=True)
            if info.base_name == COMPLETE_FILE and "/" not in relative:
                marker = {**(self.marker(source) or {}), RECORDED_KEY: recorded}
                with self.fs.open_output_stream(f"{target}/{relative}") as f:
                    f.write(json.dumps(marker).encode())
            else:
                self.fs.copy_file(info.path, f"{target}/{relative}")

    def epochs(self) -> dict[str, int | None]:
        """Each checkpoint folder's epoch (None: cut off mid-write), in :meth:`checkpoints`'
        order. Raises OSError when storage cannot tell."""
        return {path: self.epoch(path) for path in self.checkpoints()}

    def newest(self) -> str | None:
        """The path of the complete checkpoint of the newest epoch (None: none)."""
        complete = _by_epoch(self.epochs())
        return complete[-1] if complete else None

    def delete(self, checkpoint_path: str) -> None:
        try:
            self.fs.delete_dir(checkpoint_path)
        except OSError:
            pass  # already gone, or a transient storage error: the next prune retries


def _by_epoch(epochs: dict[str, int | None]) -> list[str]:
    """The complete checkpoints of ``epochs`` (path -> epoch), oldest epoch first (of one
    epoch, the lower folder number first)."""
    return [p for _, _, p in sorted((e, _checkpoint_number(p), p)
                                    for p, e in epochs.items() if e is not None)]


def _checkpoint_number(path: str) -> int:
    """Tune's number of a ``checkpoint_000012`` folder (-1 for another name)."""
    digits = path.rstrip("/").rsplit("/", 1)[-1].removeprefix("checkpoint_")
    return int(digits) if digits.isdigit() else -1


def latest_checkpoint_state(folder: TrialFolder | Path | None,
                            recorded: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newest complete checkpoint of a trial: its own folder may be ahead of ``recorded``
    (the state of Tune's checkpoint) when the driver died between a checkpoint and the next
    experiment snapshot."""
    if isinstance(folder, Path):
        folder = TrialFolder.local(folder)
    best: dict[str, Any] | None = None
    for path in reversed(folder.checkpoints() if folder is not None else []):
        best = folder.state(path)
        if best is not None:
            break
    if recorded is not None and (best is None or recorded["epoch"] > best["epoch"]
                                 or _generation(recorded) != _generation(best)):
        best = recorded  # Tune's, or weights Tune gave it from another trial (PBT's copy)
    return best


def _generation(state: dict[str, Any]) -> tuple[Any, int]:
    """Which weights a checkpoint continues: its trial and how many copies they went through.
    A checkpoint of the trial's own folder is newer than Tune's only within one generation."""
    return state.get("trial_id"), len(state.get("lineage") or ())


def _copied(state: dict[str, Any] | None, trial_id: str | None,
            config: dict[str, Any]) -> list[dict[str, Any]]:
    """The copies the weights of ``state`` went through, oldest first; one more when the
    checkpoint is another trial's (population-based training), with the settings that
    differ from that trial's as ``changes``."""
    lineage = list((state or {}).get("lineage") or [])
    owner = (state or {}).get("trial_id")
    if state is None or owner is None or trial_id is None or owner == trial_id:
        return lineage
    saved = state.get("config") or {}
    changes = {k: [saved.get(k), v] for k, v in config.items() if saved.get(k) != v}
    return [*lineage, {"trial": trial_id, "from": owner, "epoch": int(state["epoch"]),
                       "changes": changes}]


def _copy_note(lineage: list[dict[str, Any]], trial_id: str | None,
               epoch: int) -> dict[str, Any]:
    """``{COPIED: ...}`` for the first epoch this trial trained on copied weights, else {}."""
    for event in lineage:
        if event["trial"] == trial_id and event["epoch"] + 1 == epoch:
            return {COPIED: {"from": event["from"], "epoch": event["epoch"],
                             "changes": event["changes"]}}
    return {}


def _recorded_epochs(folder: TrialFolder | None) -> int:
    """The last epoch in the trial's ``result.json``, which the driver writes as results come."""
    text = folder.read_text(EXPR_RESULT_FILE) if folder is not None else None
    last = 0
    for line in (text or "").splitlines():
        try:
            last = max(last, int(json.loads(line).get("epoch", 0)))
        except (ValueError, AttributeError):
            continue  # a line cut off by a killed driver
    return last


def _tune_epoch(folder: TrialFolder | None, restored: Checkpoint | None,
                tune_state: dict[str, Any] | None) -> int:
    """The epoch of the checkpoint Tune restored the trial from, as Tune's record has it: the
    checkpoint's own, unless a resume put a newer one back under its name (its marker says)."""
    if tune_state is None or restored is None:
        return 0
    if folder is not None:
        try:
            recorded = (folder.marker(restored.path) or {}).get(RECORDED_KEY)
        except OSError:
            recorded = None
        if isinstance(recorded, int):
            return recorded
    return int(tune_state["epoch"])


def prune(folder: TrialFolder | None, keep: int | None, spare: str | None = None) -> None:
    """Delete all but the complete checkpoints of the ``keep`` newest epochs, one per epoch,
    and every one cut off mid-write; ``spare`` (a checkpoint's path) stays whatever its epoch,
    and stands for its epoch. ``keep`` None: keep all. Best effort: a storage error leaves the
    rest to the next prune.

    By epoch, not by folder name: folders written before numbering was kept going up (see
    :func:`_number_after`) may be numbered out of order after a resume, and a resume may have
    put a copy of the newest checkpoint back under the name Tune recorded (``search.reconcile``).
    """
    if folder is None or keep is None:
        return
    try:
        epochs = folder.epochs()
    except OSError:
        return
    of_epoch: dict[int | None, str] = {}  # one per epoch: the spare, else the newest folder
    for path in _by_epoch(epochs):  # complete ones, oldest epoch and folder first
        held = of_epoch.get(epochs[path])
        if held is None or held != spare:
            of_epoch[epochs[path]] = path
    newest = list(of_epoch.values())  # in epoch order, as inserted
    kept = set(newest[len(newest) - keep:]) if keep > 0 else set()
    for path in epochs:
        if path not in kept and path != spare:
            folder.delete(path)


def _trial_storage() -> Any:
    """Ray's storage context of this trial; None outside a Tune session or if the API moved.

    Tune's public ``get_trial_dir()`` is a staging folder; checkpoints and ``result.json`` live
    under the storage path, which Ray only exposes through its (developer) storage context.
    """
    try:
        from ray.train._internal.session import get_storage

        return get_storage()
    except Exception:  # noqa: BLE001 - API moved: fall back to Tune's record alone
        return None


def _trial_folder(storage: Any) -> TrialFolder | None:
    """The trial's folder on the storage path (local, mounted or S3 & co)."""
    if storage is None:
        return None
    return TrialFolder(storage.storage_filesystem, storage.trial_fs_path)


def _number_after(storage: Any, folder: TrialFolder | None) -> None:
    """Number the trial's next checkpoint after every folder it has.

    Tune numbers a trial's checkpoints on from the count in its experiment snapshot, which lags
    the folder when the driver was killed: a resumed trial would start again at
    ``checkpoint_000000`` and overwrite the older checkpoints it still has.
    """
    if storage is None or folder is None:
        return
    newest = max((_checkpoint_number(p) for p in folder.checkpoints()), default=-1)
    storage.current_checkpoint_index = max(storage.current_checkpoint_index, newest)


def _trial_id() -> str | None:
    try:
        from ray.tune import get_context

        return get_context().get_trial_id()
    except Exception:  # noqa: BLE001 - outside a Tune session
        return None


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _claim_gpus() -> str:
    """The GPUs Ray gave this trial, as ``CUDA_VISIBLE_DEVICES`` lists them ("" for none).

    Ray sets ``CUDA_VISIBLE_DEVICES`` only for a task that asked for GPUs; a trial with
    ``resources.gpu: 0`` would otherwise see (and with ``device: auto`` use) every GPU of its
    node without holding one. It is hidden from them here, before torch first touches CUDA.
    """
    import ray

    ids = [str(i) for i in ray.get_gpu_ids()]
    if not ids:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return ",".join(ids)


def train_trial(config: dict[str, Any], data: dict[str, Any] | None,
                limits: dict[str, int | None] | None = None,
                objective: dict[str, str] | None = None,
                plugins: list[str] | None = None, keep: int | None = _KEEP) -> None:
    """Tune function trainable: one trial of ``fit`` (or of a plugin's training function) with
    per-epoch reports and checkpoints.

    Args:
        config: Flat trial settings from the search space merged with the sweep's fixed ones.
        data: ``DataBundle.to_arrays()`` from the object store (shared, not copied, per node);
            None for a plugin trainable.
        limits: ``{"max_params": int | None, "max_macs": int | None}``; a config over a limit
            is reported once as ``status: rejected`` and never trained.
        objective: ``{metric: "min" | "max"}``, so a rejected trial reports its worst values.
        plugins: The spec's plugin modules, imported here before the config is read.
        keep: Checkpoints kept in the trial's folder; None: every one (population-based
            training: another trial may copy any of them).
    """
    gpus = _claim_gpus()
    import_plugins(plugins or [])
    trial_config: TrialConfig = parse_trial_config(config)
    if "OMP_NUM_THREADS" in os.environ:  # Ray sets it to the trial's CPU count
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    storage = _trial_storage()
    folder = _trial_folder(storage)
    _number_after(storage, folder)
    restored = get_checkpoint()
    tune_state = checkpoint_state(restored)
    state = latest_checkpoint_state(folder, tune_state)
    # Until the driver has a newer checkpoint of this trial, Tune retries it from the one it
    # restored: that one stays. What a killed trial process left goes: the checkpoints its
    # prune never got to delete, the one cut off mid-write.
    spare = restored.path if restored is not None else None
    prune(folder, keep, spare)
    bundle = DataBundle.from_arrays(data) if data is not None else None
    me = _trial_id()
    lineage = _copied(state, me, trial_config.to_dict())

    if bundle is not None and state is None and limits and any(
            v is not None for v in limits.values()):
        cost = trial_cost(trial_config, bundle)
        violation = constraint_violation(cost, limits)
        if violation:
            worst = {m: (float("inf") if mode == "min" else 0.0)
                     for m, mode in (objective or {}).items()}
            report({**worst, **cost, "epoch": 0, "status": "rejected",
                    "rejected_reason": violation})
            return

    node = _node_id()

    def on_epoch(metrics: dict[str, Any], make_state: Any) -> None:
        nonlocal spare
        metrics = {**metrics, "node_id": node, "gpu_ids": gpus,
                   **_copy_note(lineage, me, int(metrics["epoch"]))}
        if make_state is None:  # a plugin trainable that keeps no state: no checkpoint
            report(metrics)
            return
        state = {**make_state(), "trial_id": me, "lineage": lineage}
        # Room for this checkpoint before reporting it: ``report`` returns only when Tune asks
        # for the next epoch, never for a trial it stops there or whose driver dies.
        room = None if keep is None else max(keep - 1, 1)  # the newest stays meanwhile
        prune(folder, room, spare)
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(Path(tmp), state)
            report(metrics, checkpoint=Checkpoint.from_directory(tmp))
        if spare is not None or room == keep:  # else the folder holds ``keep`` already
            spare = None  # Tune has this checkpoint now: the one it restored can go
            prune(folder, keep)

    if state is not None:
        # A driver killed between a checkpoint and writing its result leaves epochs that were
        # trained but never recorded: report them again, once, before training on. Tune has
        # every epoch up to its own checkpoint (a live retry); result.json may lag behind it.
        recorded = max(_recorded_epochs(folder), _tune_epoch(folder, restored, tune_state))
        for past in state["history"]:
            if past["epoch"] > recorded:
                report({**past, **_copy_note(lineage, me, int(past["epoch"]))})
    if trial_config.trainable != BUILTIN_TRAINABLE:
        run_trainable(trial_config, on_epoch, state, list(objective or {}))
        return
    fit(trial_config, on_epoch, data=bundle, state=state)
