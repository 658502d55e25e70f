#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py) on a machine without internet: installs what is missing from
# benchmarks/wheels, then runs every item, each in its own process, within --budget_s (450 s by default; with
# the install step it finishes in under 8 minutes on one H100/H200). Arguments go to the driver:
#   bash benchmarks/gpu_suite.sh                       # the whole suite
#   bash benchmarks/gpu_suite.sh --items=jax_unet_bf16,crf_512x512
#   bash benchmarks/gpu_suite.sh --smoke               # tiny sizes on the CPU
# The GPU machine has jax, flax, optax, orbax, chex, numpy, scipy and scikit-image, but not ml_collections (the
# configs) nor pydensecrf (the CRF reference; without it that half of the CRF items prints a "skipped" line).
# Fill benchmarks/wheels (ignored by git) on a machine with internet, for the GPU machine's Python 3.12:
#   pip download ml-collections absl-py PyYAML -d benchmarks/wheels --python-version 3.12 --only-binary=:all: \
#       --platform manylinux2014_x86_64
#   python3.12 -m pip wheel pydensecrf2 --no-deps -w benchmarks/wheels    # PyPI has only its source: build a wheel
# and bring the folder along with the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=benchmarks/wheels

install_missing() {  # module, then the package that provides it
    python -c "import $1" 2>/dev/null && return
    if ! python -m pip install --quiet --no-index --find-links "$wheels" "$2" >&2; then
        echo "{\"item\": \"install\", \"error\": \"could not install $2 from $wheels\"}"
    fi
}
install_missing absl absl-py
install_missing ml_collections ml-collections
install_missing pydensecrf pydensecrf2
exec python -m benchmarks.gpu_suite "$@"
