#!/usr/bin/env bash
# Every GPU figure the README's GPU section owes, in one call on a lent GPU machine: the CUDA
# tests, the captured step of one model (images/s and CUDA kernels per step; the default model
# and the recipe's skip-wired, gated VampPrior hierarchy), populations of N = 1 ... 64 members,
# whole 10-epoch runs with a validation split (one model, and 32 seeds) from start to exit, the
# VampPrior's step cost per K, and, with QUALITY=1, the GPU variant of configs/quality3.toml:
# the same model and phases, budgeted in epochs (ELBO $GPU_ELBO_EPOCHS, then IWAE with DReG
# at k=$GPU_K for $GPU_IWAE_EPOCHS), evaluated with K=1000 at its last epoch; goal <= 81.0 in
# one device call (under 10 minutes, of the 15 a session has). Its defaults are a first guess at
# an H100's speed (about 100,000 images/s for this model, captured): the first
# lent GPU calibrates them (each epoch's seconds are in the log). ONLY=a,b runs just those
# steps (e.g. ONLY=quality for a call of its own). Each step has a timeout and a
# failure is printed as "FAILED: <step> (exit N)" before the next step starts; the summary
# lists every step's status. Logs go to $OUT.
#
# On the GPU machine (it has torch with CUDA but no internet), from the repo root, carried along:
#   .whl/   wheels of the non-torch imports, for that machine's Python:
#           pip download typer rich tqdm matplotlib optuna safetensors tensorboard pillow \
#               -d .whl --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64
#   .gpu/data/MNIST/raw/*.gz   the four MNIST files, gzipped (they unpack to /tmp/data)
# A dry run on the CPU (tiny sizes, no wheels, the data from $VAE_DATA_DIR, the quality step
# included at seconds of training) checks the script:
#   DRY_RUN=1 VAE_DATA_DIR=../shared/data benchmarks/gpu_check.sh
set -u
export PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
DEVICE=cuda STEPS=1000 MEMBERS=1,2,4,8,16,32,64 EPOCHS=10 SEEDS=0-31 LIMIT="" SPLIT="--validation 10000"
PRIOR_KS="50 100 500 1000" PRIOR_STEPS=200 IW=1000 EVAL_LIMIT=""
GPU_ELBO_EPOCHS=${GPU_ELBO_EPOCHS:-500} GPU_IWAE_EPOCHS=${GPU_IWAE_EPOCHS:-60} GPU_K=${GPU_K:-20}
QUALITY_SECONDS=${QUALITY_SECONDS:-570}  # one device call: at most 10 minutes
if [ "${DRY_RUN:-0}" = 1 ]; then
    DEVICE=cpu STEPS=20 MEMBERS=1,2 EPOCHS=1 SEEDS=0-1 LIMIT="--limit 512" SPLIT="--validation 64"
    PRIOR_KS=50 PRIOR_STEPS=3 QUALITY=1 IW=10 EVAL_LIMIT="--limit 200"
    GPU_ELBO_EPOCHS=2 GPU_IWAE_EPOCHS=1 GPU_K=3 QUALITY_SECONDS=300
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
    mkdir -p /tmp/data/MNIST/raw
    for f in .gpu/data/MNIST/raw/*.gz; do
        gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"
    done
    export VAE_DATA_DIR=/tmp/data
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
fi
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
STATUS=()

step() {  # step NAME SECONDS COMMAND...: run with a timeout, log, and record how it ended
    local name=$1 seconds=$2
    shift 2
    if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then
        return
    fi
    echo "=== $name"
    local started=$SECONDS
    timeout "$seconds" "$@" 2>&1 | tee "$OUT/$name.log"
    local code=${PIPESTATUS[0]}
    if [ "$code" -ne 0 ]; then
        echo "FAILED: $name (exit $code$([ "$code" -eq 124 ] && echo ', timed out'))"
    fi
    STATUS+=("$name: exit $code, $((SECONDS - started)) s")
}

if [ "$DEVICE" = cuda ]; then
    # The tests that skip without CUDA, and the unit tests of the step, the loop and the
    # models that then run on the GPU as well.
    step cuda-tests 300 python3 -m pytest -q -p no:cacheprovider tests/e2e/test_cuda_graph.py \
        tests/unit/test_step.py tests/cli/test_stability.py tests/unit/test_memory.py \
        tests/cli/test_loop.py tests/cli/test_population.py tests/cli/test_phases.py \
        tests/unit/test_hierarchy.py tests/unit/test_vamp_prior.py
fi

step one-model-captured 240 python3 benchmarks/bench_train.py --device "$DEVICE" --rounds 2 \
    --steps "$STEPS" --skip-rss --train-epochs 0 --kernels

step populations 300 python3 benchmarks/bench_population.py --device "$DEVICE" \
    --members "$MEMBERS" --rounds 2 --steps "$STEPS"

export TIMEFORMAT='wall %R s (start to exit)'  # read by the bash -c below
# With a validation split, as a user choosing epochs runs it: each epoch scores it too.
step train-10-epochs 120 bash -c "time python3 -m vae_cli train --device $DEVICE \
    --epochs $EPOCHS $LIMIT $SPLIT --quiet --runs-dir /tmp/runs --name ten --overwrite"
python3 - <<'PY' 2>/dev/null || true
import json
for line in open("/tmp/runs/ten/metrics.jsonl"):
    m = json.loads(line)
    print(m["epoch"], f"steps {m['seconds']:.3f}s epoch {m['epoch_seconds']:.3f}s",
          f"{m['images_per_s']:,.0f} img/s test {m['test_loss']:.2f}",
          f"capture {m.get('capture_seconds', 0):.2f}s")
PY
step train-32-seeds 300 bash -c "time python3 -m vae_cli train --device $DEVICE \
    --epochs $EPOCHS --seeds $SEEDS $LIMIT $SPLIT --quiet --runs-dir /tmp/runs --name seeds \
    --overwrite"

printf '[data]\nlimit = 4096\n[train]\nepochs = 2\ndevice = "%s"\n[[phases]]\nepochs = 2\nobjective = "iwae"\nk = 4\nlr = 1e-4\ndreg = true\n' \
    "$DEVICE" > /tmp/phases.toml
step two-phases 180 python3 -m vae_cli train --config /tmp/phases.toml --quiet \
    --runs-dir /tmp/runs --name phases --overwrite

# shellcheck disable=SC2086  # the lists are meant to split into arguments
step prior-cost 240 python3 benchmarks/bench_prior.py --device "$DEVICE" --ks $PRIOR_KS \
    --rounds 3 --steps "$PRIOR_STEPS"

if [ "${QUALITY:-0}" = 1 ]; then  # configs/quality3.toml in epochs for a GPU, then K=1000
    sed -e "s/^epochs = 560$/epochs = $GPU_ELBO_EPOCHS/" \
        -e "s/^epochs = 140$/epochs = $GPU_IWAE_EPOCHS/" -e "s/^k = 5$/k = $GPU_K/" \
        configs/quality3.toml > /tmp/quality3_gpu.toml
    grep -E '^(epochs|k) ' /tmp/quality3_gpu.toml
    step quality "$QUALITY_SECONDS" bash -c "time python3 -m vae_cli train \
        --config /tmp/quality3_gpu.toml --device $DEVICE $LIMIT --quiet --runs-dir /tmp/runs \
        --name quality3 --overwrite && python3 -m vae_cli eval --checkpoint \
        /tmp/runs/quality3/checkpoints/last.pt --iw-samples $IW $EVAL_LIMIT --device $DEVICE"
fi

echo "=== summary"
printf '%s\n' "${STATUS[@]}"
