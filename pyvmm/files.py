"""Reading a file a user named (image, snapshot): one-line errors, bounded size.

Only regular files are read: /dev/zero never ends and opening a FIFO blocks
until a writer comes, so both are refused before any byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyvmm.errors import PyvmmError

MIB = 1 << 20


def read_user_file(path: Path, max_bytes: int, error: type[PyvmmError],
                   kind: str = "image file") -> bytes:
    """The whole of `path`, or `error` with a one-line reason naming the path."""
    try:
        if path.is_dir():
            raise error(f"{path}: is a directory, not {'an' if kind[0] in 'aeiou' else 'a'} "
                        f"{kind}")
        if not stat.S_ISREG(os.stat(path).st_mode):  # stat first: open() blocks on a FIFO
            raise error(f"{path}: not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except OSError as os_error:
        raise error(f"{path}: cannot read: {os_error.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than the {max_bytes // MIB} MiB pyvmm accepts")
    return data
