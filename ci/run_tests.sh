#!/usr/bin/env bash
# Set up (ci/install.sh) and run the whole CPU test suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install.sh
exec "${PYTHON:-python3}" -m pytest tests -q -rs "$@"
