"""Finding, starting and stopping the HAProxy child process."""

from __future__ import annotations

import os
import shutil

from balancer.engines.base import EngineUnavailable

INSTALL_HINT = "install it with `apt-get install haproxy` (Debian, Ubuntu)"


def find_binary(binary: str) -> str:
    """The path of the HAProxy executable `binary` names (a path, or a name on PATH).

    Raises EngineUnavailable, in one line saying how to install it, when there is none.
    """
    if os.sep in binary:
        if os.path.isfile(binary) and os.access(binary, os.X_OK):
            return binary
        found = None
    else:
        found = shutil.which(binary)
    if found is None:
        raise EngineUnavailable(
            f"haproxy.binary: {binary!r} is not an executable (balancer.engine = 'haproxy');"
            f" {INSTALL_HINT}, or set [haproxy] binary to its path"
        )
    return found
