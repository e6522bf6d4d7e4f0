#!/usr/bin/env bash
# The GPU figures of docs/scaling.md in one call (issue 22): the quickstart and benchmarks/scale.py
# on one device, throughput in images/s and the ratio of dissectkit's extraction to the bare
# forward passes on the same device.
#
#   benchmarks/gpu.sh                  # CUDA (fails clearly when torch sees no GPU); under 5 minutes on one H100
#   benchmarks/gpu.sh --device cpu     # the same script on the CPU
#   benchmarks/gpu.sh --device cpu --quick   # tiny sizes: what the test suite runs (tests/test_gpu_script.py)
#
# Options: --device cuda|cpu (default cuda), --n N (quickstart images, default 4000; --quick: 200),
# --quick (small sizes everywhere), --python PATH (default .venv/bin/python when present, else python3).
# Steps:
#   1. benchmarks/limit.py at N: dissectkit's extraction (recipes/quickstart.yaml, csv), the bare
#      serial loop, the forward passes alone, the data side alone, images/s and the ratios;
#   2. the quickstart end to end with csv, json and the HTML report: cold (fresh cache) and warm
#      (another similarity on the cached activations), wall and images/s;
#   3. benchmarks/scale.py on the device: (a) labelling streamed from the cache, (b) Network
#      Dissection, (c) the report's share.
set -euo pipefail

DEVICE=cuda
N=""
QUICK=0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --n) N="$2"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --python) PY="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
if [[ -z "$N" ]]; then
  if [[ $QUICK == 1 ]]; then N=200; else N=4000; fi
fi
case "$DEVICE" in
  cuda|cuda:*|cpu) ;;
  *) echo "gpu.sh: --device must be cuda, cuda:N or cpu (got '$DEVICE')" >&2; exit 2 ;;
esac
cd "$ROOT"

"$PY" - "$DEVICE" <<'EOF'
import os, sys, torch
device = sys.argv[1]
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("gpu.sh: torch sees no CUDA device (torch " + torch.__version__ + "); run with --device cpu, "
             "or install a CUDA build of torch")
name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"CPU, {os.cpu_count()} cores"
print(f"== device {device}: {name}; torch {torch.__version__}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
EOF

TMP="$(mktemp -d "${TMPDIR:-/tmp}/dk-gpu-XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
SECONDS=0

echo
echo "== 1. extraction vs the bare forward passes (benchmarks/limit.py, N=$N)"
"$PY" benchmarks/limit.py --device "$DEVICE" --sizes "$N" --repeats 1 --identical 0

echo
echo "== 2. quickstart end to end (csv, json, html; N=$N)"
for kind in cold warm; do
  similarity=soft_wpmi
  [[ $kind == warm ]] && similarity=cos
  start=$(date +%s.%N)
  "$PY" -m dissectkit run recipes/quickstart.yaml --quiet --out "$TMP/qs-$kind" \
    --set "runtime.device=$DEVICE" --set "probe.params.n=$N" --set "runtime.cache_dir=$TMP/qs-cache" \
    --set "method.params.similarity=$similarity"
  end=$(date +%s.%N)
  "$PY" - "$TMP/qs-$kind/manifest.json" "$N" "$start" "$end" "$kind" <<'EOF'
import json, sys
path, n, start, end, kind = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
with open(path) as f:
    manifest = json.load(f)
stats = manifest.get("stats", manifest)
timings = stats.get("timings", {})
wall = end - start
stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
print(f"{kind}: wall {wall:.2f} s = {n / wall:.0f} images/s end to end; {stages}")
EOF
done

echo
echo "== 3. benchmarks/scale.py on $DEVICE"
if [[ $QUICK == 1 ]]; then
  "$PY" benchmarks/scale.py --device "$DEVICE" --sizes 2000 --baseline-max 2000 --nd-sizes 100 --report-n "$N"
else
  "$PY" benchmarks/scale.py --device "$DEVICE"
fi

echo
echo "== gpu.sh done in ${SECONDS} s on $DEVICE"
