#!/usr/bin/env bash
# GPU check (issue 10): on a CUDA machine, execute the chapters at the ci profile on CUDA, time one full table
# at the paper profile (CiteULike-t, CDAE, 1 seed: 6 runs) and write what was measured to gpu_check.json.
#
#   scripts/gpu_check.sh [OUT_DIR]      # default: $OUT when set, else build/gpu-check
#
# Needs the datasets (IBD_DATA_DIR, or ../shared/data / shared/data beside the clone). Exits 3 at once, with
# nothing started, when torch sees no CUDA device.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT_DIR="${1:-${OUT:-build/gpu-check}}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False in $PY): run this script on a machine" \
       "with an NVIDIA GPU and a CUDA build of torch; nothing was run" >&2
  exit 3
fi
if [ -z "${IBD_DATA_DIR:-}" ]; then
  for d in ../shared/data shared/data; do
    if [ -f "$d/SHA256SUMS" ]; then export IBD_DATA_DIR="$(cd "$d" && pwd)"; break; fi
  done
fi
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
export IBD_CACHE_DIR="$OUT_DIR/cache"          # fresh warm-ups: the table's time includes its pre-training
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true

set +e                                          # a failed step is recorded in the JSON, then reported
t0=$(date +%s.%N)
"$PY" scripts/execute_chapters.py --profile ci --device cuda --out-dir "$OUT_DIR/ci-cuda" 2>&1 | tee "$OUT_DIR/chapters.log"
rc_chapters=${PIPESTATUS[0]}
t1=$(date +%s.%N)
"$PY" -m ibd_lite reproduce --profile paper --only table-citeulike-t-cdae --seeds 1 --device cuda --quiet \
  --out-dir "$OUT_DIR/results-paper" --nb-dir "$OUT_DIR/notebooks" 2>&1 | tee "$OUT_DIR/table.log"
rc_table=${PIPESTATUS[0]}
t2=$(date +%s.%N)
set -e

"$PY" - "$OUT_DIR" "$t0" "$t1" "$t2" "$rc_chapters" "$rc_table" <<'PYEOF'
import json, platform, sys
from pathlib import Path

import torch

out, (t0, t1, t2), (rc_chapters, rc_table) = Path(sys.argv[1]), map(float, sys.argv[2:5]), map(int, sys.argv[5:])
runs = []
for p in sorted((out / "results-paper").glob("*.json")):
    r = json.loads(p.read_text())
    runs.append({"file": p.name, "method": r["config"]["method"], "device_name": r["provenance"]["device_name"],
                 **{k: round(r["timing"][k], 3) for k in ("pretrain_s", "distill_s", "predict_s", "total_s")
                    if k in r["timing"]}})
report = {"device_name": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
          "python": platform.python_version(), "exit_status": {"chapters": rc_chapters, "table": rc_table},
          "chapters_ci_cuda_s": round(t1 - t0, 1),
          "table_paper_citeulike_t_cdae_1_seed_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1), "runs": runs}
(out / "gpu_check.json").write_text(json.dumps(report, indent=1))
print(json.dumps(report, indent=1))
PYEOF
if [ "$rc_chapters" -ne 0 ] || [ "$rc_table" -ne 0 ]; then
  echo "gpu_check: a step failed (chapters exit $rc_chapters, table exit $rc_table); see $OUT_DIR/*.log" >&2
  exit 1
fi
