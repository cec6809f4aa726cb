"""The output folder of a training run: one writer at a time, artifacts all-or-nothing, state files atomic.

A run folder holds, when finished, `model.keras`, `history.json`, `curves.png` and
`summary.json` (written last: a folder with `summary.json` is a finished run), and
while training a `checkpoint/` folder (see `callbacks.TrainingCheckpoint`). `RunFolder`
takes a lock so that a second process cannot write into it, refuses to replace a
finished run unless asked to, and moves the artifacts in from a staging folder
inside the run folder (so the moves never cross file systems).
"""

import json
import os
import shutil
import tempfile

from keras_vit.data.files import atomic_path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

# In the order they are moved into place: `summary.json` last marks the run finished.
ARTIFACTS = ("model.keras", "palette.npy", "history.json", "curves.png", "predictions.png", "samples.png", "summary.json")
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".keras-vit.lock"
_STAGING_PREFIX = ".staging-"


def write_json_atomically(path, data):
    """Writes `data` as JSON to `path` via a temporary file, fsync and rename: a crash leaves the old or the new file."""
    with atomic_path(path) as temporary, open(temporary, "w") as file:
        json.dump(data, file, indent=1)
        file.flush()
        os.fsync(file.fileno())


def read_json(path, what, way_out):
    """Reads the JSON file `path`; a missing, unreadable or damaged file is a ValueError
    naming `what` it is and the `way_out`."""
    try:
        with open(path) as file:
            return json.load(file)
    except FileNotFoundError:
        raise ValueError(f"{what} {path!r} is missing. {way_out}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{what} {path!r} cannot be read ({error}). {way_out}") from None


class RunFolder:
    """Context manager that holds `path` for one training run.

    Entering creates the folder, takes its lock (a second writer gets a ValueError,
    whatever its process), removes what a crashed artifact write left, and refuses a
    folder that holds a finished run unless `overwrite`. Leaving releases the lock.

    Args:
        path: the run's output folder.
        settings: this run's summary so far; a refusal lists what differs from the finished run's.
        overwrite: replace a finished run (its artifacts are removed on entering).
        lock_name: the lock file's name (multi-worker runs lock one per worker).
        artifacts: whether this process writes the artifacts (False: a multi-worker run's
            other workers, which only checkpoint); only then is a finished run checked for.
    """

    def __init__(self, path, settings=None, overwrite=False, lock_name=LOCK_FILE, artifacts=True):
        self.path = str(path)
        self.settings = settings or {}
        self.overwrite = overwrite
        self.artifacts = artifacts
        self.lock_path = os.path.join(self.path, lock_name)
        self._lock = None

    def __enter__(self):
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"The output folder {self.path!r} is a file. Pass another --output-dir (output_dir).")
        try:
            os.makedirs(self.path, exist_ok=True)
            self._lock = _acquire_lock(self.lock_path)
        except PermissionError as error:
            raise ValueError(
                f"The output folder {self.path!r} is not writable ({error.strerror}). Pass a folder you can write "
                "to as --output-dir (output_dir), or fix its permissions."
            ) from None
        try:
            if self.artifacts:
                self._remove_staging_leftovers()
                self._check_artifact_paths()
                self._check_not_finished()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info):
        if self._lock is not None:
            _release_lock(self._lock, self.lock_path)
            self._lock = None

    def _remove_staging_leftovers(self):
        for name in os.listdir(self.path):
            if name.startswith(_STAGING_PREFIX):
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)

    def _check_artifact_paths(self):
        blocked = [name for name in ARTIFACTS if os.path.isdir(os.path.join(self.path, name))]
        if blocked:
            raise ValueError(
                f"{', '.join(blocked)} in {self.path!r} is a folder, where the run will write a file. Move it "
                "away or pass another --output-dir (output_dir)."
            )

    def _check_not_finished(self):
        summary_path = os.path.join(self.path, SUMMARY_FILE)
        if not os.path.exists(summary_path):
            return
        if self.overwrite:
            for name in ARTIFACTS[::-1]:  # summary.json first: never a finished-looking folder without its model
                if os.path.exists(os.path.join(self.path, name)):
                    os.remove(os.path.join(self.path, name))
            return
        try:
            with open(summary_path) as file:
                finished = json.load(file)
        except (OSError, ValueError):
            finished = {}
        differences = [
            f"{key} {finished.get(key)!r} -> {value!r}"
            for key, value in self.settings.items()
            if key in finished and finished[key] != value and key not in ("params",)
        ]
        what = f"with other settings ({', '.join(differences)})" if differences else "with the same settings"
        accuracy = finished.get("final_val_accuracy")
        result = f", validation accuracy {accuracy:.4f}" if isinstance(accuracy, float) else ""
        raise ValueError(
            f"{self.path!r} holds a finished run {what}{result}. Pass --overwrite (overwrite=True) to replace it, "
            "or another --output-dir (output_dir) to keep it."
        )

    def write_artifacts(self, writers):
        """Writes the artifacts all or none: each `writers[name](path)` writes into a staging folder inside
        the run folder, then they are moved into place in `ARTIFACTS` order, `summary.json` last."""
        unknown = sorted(set(writers) - set(ARTIFACTS))
        if unknown:
            raise ValueError(f"Unknown artifacts {unknown}; expected some of {ARTIFACTS}.")
        self._check_artifact_paths()
        staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=self.path)
        try:
            for name in ARTIFACTS:
                if name in writers:
                    writers[name](os.path.join(staging, name))
            for name in ARTIFACTS:
                if name in writers:
                    os.replace(os.path.join(staging, name), os.path.join(self.path, name))
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _acquire_lock(path):
    """Locks `path` (created if needed) for this process; a lock held elsewhere is a ValueError naming its pid."""
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise ValueError(
                f"Another process{holder} is training into {os.path.dirname(path)!r}: two runs writing one folder "
                "would destroy each other's checkpoints. Wait for it to finish, stop it, or pass another "
                "--output-dir (output_dir)."
            ) from None
        # The holder may have released and removed the file between our open and our lock: lock the new one.
        try:
            same_file = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(descriptor, 0)
            os.write(descriptor, str(os.getpid()).encode())
            return descriptor
        os.close(descriptor)


def _read_holder(descriptor):
    try:
        pid = os.pread(descriptor, 32, 0).decode().strip() if hasattr(os, "pread") else ""
    except OSError:
        pid = ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _release_lock(descriptor, path):
    try:
        os.remove(path)
    except OSError:  # gone already, or (Windows) still open
        pass
    finally:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
