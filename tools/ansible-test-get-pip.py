"""Stand-in for ansible-test's pip bootstrap script (get-pip.py).

ansible-test creates its sanity virtualenvs without pip and then runs get-pip.py, which it downloads
from a host outside the package registries this project may use. It runs a cached copy instead when
one exists at ~/.ansible/test/cache/get_pip_<version>.py; `make sanity` puts this file there.

Same contract as get-pip.py: argv holds `pip install` options and packages (`pip==24.2` ...), plus
get-pip's own --no-setuptools / --no-wheel switches. The interpreter's bundled pip (ensurepip)
installs the requested pip from PyPI.
"""

import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    # In its own process: ensurepip disables pip's configuration files in the environment of the
    # process that runs it, and the install below needs the machine's pip.conf (index, CA bundle).
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", "--upgrade", *args])


if __name__ == "__main__":
    sys.exit(main())
