#!/usr/bin/env bash
# Download the pure-Python wheels that benchmarks/gpu_check.sh installs on a GPU machine without
# network: array-api-compat (nncore's dependency), array-api-strict (the tests') and tqdm (the
# progress bar), into the git-ignored .whl/ at the repository root. Run it where pip reaches the
# package index; the same versions as in this environment when they are installed here.
#
#   bash benchmarks/fetch_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=$(python - <<'PY'
from importlib import metadata
for name, floor in (("array-api-compat", ">=1.9"), ("array-api-strict", ">=2.2"), ("tqdm", ">=4.60")):
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}{floor}")
PY
)
mkdir -p .whl
# shellcheck disable=SC2086  # one requirement per word
python -m pip download --no-deps --only-binary=:all: --dest .whl $requirements
ls -l .whl
