#!/usr/bin/env bash
# Every GPU figure the README's GPU table and issue 13 need, in one call on a lent GPU machine
# (it has torch with CUDA but no internet). Run from the repo root with, carried alongside:
#   .whl/   wheels of the non-torch imports the CUDA tests need, for that machine's Python:
#           pip download typer -d .whl --only-binary=:all: --python-version 3.12 \
#               --platform manylinux_2_17_x86_64
#   .gpu/data/MNIST/raw/*.gz   the four MNIST files, gzipped (they unpack to /tmp/data)
# Prints: the CUDA tests, a 10-epoch `vae train --device cuda` (wall time and per-epoch split),
# a two-phase run with CUDA graphs (ELBO, then IWAE: the graphs are captured again), the
# start-up split, and bench_train.py's eager / captured rows. Logs also go to $OUT.
set -u
export PYTHONUNBUFFERED=1 OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/data/MNIST/raw
for f in .gpu/data/MNIST/raw/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "$f" .gz)"; done
export VAE_DATA_DIR=/tmp/data
nvidia-smi --query-gpu=name,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"

echo "=== CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda_graph.py tests/test_step.py \
    tests/test_stability.py tests/test_likelihood.py tests/test_memory.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -20

echo "=== vae train --device cuda --epochs 10, start to exit"
TIMEFORMAT='wall %R s'
time python3 -m vae_cli train --device cuda --epochs 10 --quiet --runs-dir /tmp/runs --name ten \
    > "$OUT/ten.log" 2>&1
python3 - <<'PY'
import json
for line in open("/tmp/runs/ten/metrics.jsonl"):
    m = json.loads(line)
    print(m["epoch"], f"steps {m['seconds']:.3f}s epoch {m['epoch_seconds']:.3f}s",
          f"{m['images_per_s']:,.0f} img/s test {m['test_loss']:.2f}",
          f"capture {m.get('capture_seconds', 0):.2f}s")
PY

echo "=== two phases with CUDA graphs"
printf '[data]\nlimit = 4096\n[train]\nepochs = 2\ndevice = "cuda"\n[[phases]]\nepochs = 2\nobjective = "iwae"\nk = 4\nlr = 1e-4\n' > /tmp/phases.toml
python3 -m vae_cli train --config /tmp/phases.toml --quiet --runs-dir /tmp/runs --name phases \
    | tail -4
python3 -c "
import json
for line in open('/tmp/runs/phases/metrics.jsonl'):
    m = json.loads(line); print(m['epoch'], 'phase', m['phase'], 'train', round(m['train_loss'], 2), 'iwae', m.get('test_iwae'))"

echo "=== start-up split"
time python3 -c "import torch"
time python3 -c "import torch; torch.zeros(1, device='cuda')"
time python3 -c "import torch; torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])"
time python3 -c "import torch, torchvision"

echo "=== benchmark"
timeout 200 python3 benchmarks/bench_train.py --device cuda --rounds 2 --steps 1000 --skip-rss \
    2>&1 | tee "$OUT/bench.log"
