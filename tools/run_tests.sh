#!/usr/bin/env bash
# Set up (once) and run the test suite. Uses the active virtualenv if there is one,
# else creates ./.venv. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
python -m pytest tests -q -p no:cacheprovider "$@"
