"""Writing files all-or-nothing: a crash leaves the old file or the new one, never half of one."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yields a temporary path beside `path` to write to; when the block ends it is renamed onto
    `path` (readable by others, like any file the user writes), and on an error it is removed.

    ```python
    with atomic_path("palette.npy") as temporary:
        np.save(open(temporary, "wb"), palette)
    ```
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    os.close(descriptor)
    try:
        yield temporary
        os.chmod(temporary, 0o644)  # mkstemp's files are private
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
