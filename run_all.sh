#!/usr/bin/env bash
# The main job: execute every notebook in order with papermill, on the synthetic default
# unless told otherwise. Finished stages are reused (each stage skips work whose output
# exists), so a second run is cheap; --force redoes everything.
#
#   bash run_all.sh                                  # synthetic default (synthetic-paper), CPU, one seed
#   bash run_all.sh --preset synthetic               # the from-scratch synthetic recipe instead
#   bash run_all.sh --full                           # + the no-shared-part control, 3 seeds, ablations
#   bash run_all.sh --smoke                          # tiny preset, a minute or two
#   bash run_all.sh --preset voc --data-root PATH    # PASCAL VOC 2012 (GPU)
#   bash run_all.sh --preset voc --data-root PATH --set model.backbone_weights=/path/resnet50-0676ba61.pth
#   bash run_all.sh --publish                        # maintainers: refresh figures/ and docs/notebooks/
#
# Options: --preset NAME  --data-root PATH  --smoke  --full  --force  --publish
#          --name NAME     run folder runs/NAME (default: the preset, with -smoke)
#          --figures DIR   where figures and tables go (default: runs/NAME/figures)
#          --config FILE   config fields on top of the preset, as the CLI's --config (every notebook)
#          --set KEY=VALUE any config field, as the CLI's --set (repeatable; wins over --config)
# Executed notebooks land in runs/NAME/executed/ (papermill's log beside each, NAME.log), so the
# checkout stays as it was (runs/ is ignored). Stops at the first failing notebook with the kit's
# one message and the executed copy's path. --publish (not with --smoke or --figures) writes the
# figures into the repository's committed figures/ and the executed copies into docs/notebooks/
# (figures shown at SFC_FIGURE_DPI, default 72, to stay small).
set -euo pipefail
cd "$(dirname "$0")"
repo="$(pwd)"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; }

preset=synthetic-paper data_root="" smoke=False full=False force=False name="" figures="" config="" publish=False
sets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset="${2:?--preset needs a name}"; shift 2 ;;
    --data-root) data_root="${2:?--data-root needs a path}"; shift 2 ;;
    --smoke) smoke=True; shift ;;
    --full) full=True; shift ;;
    --force) force=True; shift ;;
    --name) name="${2:?--name needs a name}"; shift 2 ;;
    --figures) figures="${2:?--figures needs a folder}"; shift 2 ;;
    --config) config="${2:?--config needs a file}"; shift 2 ;;
    --set) [[ "${2:?--set needs KEY=VALUE}" == *=* ]] \
             || { echo "run_all.sh: --set $2 is not KEY=VALUE (e.g. --set train.lr=0.01)" >&2; exit 2; }
           sets+=("$2"); shift 2 ;;
    --publish) publish=True; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_all.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ -n "$data_root" ]; then data_root="$(cd "$data_root" 2>/dev/null && pwd)" \
  || { echo "run_all.sh: --data-root $data_root is not a folder" >&2; exit 2; }; fi
if [ -n "$config" ]; then [ -f "$config" ] || { echo "run_all.sh: --config $config is not a file" >&2; exit 2; }
  config="$(cd "$(dirname "$config")" && pwd)/$(basename "$config")"; fi
if [ -z "$name" ]; then name="$preset"; [ "$smoke" = True ] && name="$name-smoke"; fi
run_root="$repo/runs/$name"
if [ "$publish" = True ] && { [ "$smoke" = True ] || [ -n "$figures" ]; }; then
  echo "run_all.sh: --publish refreshes the committed figures/: not with --smoke or --figures" >&2; exit 2; fi
if [ -z "$figures" ]; then
  if [ "$publish" = True ]; then figures="$repo/figures"; else figures="$run_root/figures"; fi
fi
mkdir -p "$run_root/executed" "$figures"
figures="$(cd "$figures" && pwd)"

source scripts/bootstrap.sh
export MPLBACKEND=Agg PYTHONHASHSEED=0
export SFC_FIGURE_DPI="${SFC_FIGURE_DPI:-72}"   # notebooks' displayed figures (analysis/notebook.py)

notebooks=(00_data 01_long_tail_analysis 02_train 03_cam_fusion 04_visualization 05_evaluation)
# The CPU and the kernels PyTorch dispatches: the same seeds give other digits on another CPU
# (docs/synthetic.md), and ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 stand in for one
# without AVX-512 (BENCHMARKS.md).
cpu="$( (grep -m1 '^model name' /proc/cpuinfo 2>/dev/null || echo ": unknown CPU") | cut -d: -f2- | sed 's/^ *//'), \
torch CPU kernels $(python -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')"
isa="ATEN_CPU_CAPABILITY=${ATEN_CPU_CAPABILITY:-unset} ONEDNN_MAX_CPU_ISA=${ONEDNN_MAX_CPU_ISA:-unset}"
# --set items as a YAML (JSON) list for papermill: the notebooks' `overrides` parameter
overrides="overrides: $(python -c 'import json, sys; print(json.dumps(sys.argv[1:]))' ${sets[@]+"${sets[@]}"})"
echo "[run_all] preset=$preset smoke=$smoke full=$full force=$force${config:+ config=$config}${sets[*]+ set: ${sets[*]}}"
echo "[run_all] CPU: $cpu ($(nproc) cores; $isa)"
echo "[run_all] runs: $run_root   figures: $figures"
start_all=$(date +%s)
timings=()
for nb in "${notebooks[@]}"; do
  start=$(date +%s)
  copy="$run_root/executed/$nb.ipynb" log="$run_root/executed/$nb.log"
  echo "[run_all] $nb ... (papermill's log: $log)"
  if ! python -m papermill "notebooks/$nb.ipynb" "$copy" \
      --cwd "$repo" --kernel python3 \
      -r preset "$preset" -r data_root "$data_root" -r run_root "$run_root" \
      -r figures_dir "$figures" -p smoke "$smoke" -p full "$full" -p force "$force" \
      -r config_file "$config" -y "$overrides" >"$log" 2>&1; then
    # the kit's one message, not the tracebacks (papermill's, a worker pool's, the kit's): those
    # stay in the executed copy and the log
    echo "[run_all] FAILED: notebook $nb" >&2
    python -c 'import sys; from sfc_core.analysis.notebook import failure_message; print(failure_message(*sys.argv[1:]))' \
      "$copy" "$log" >&2
    echo "[run_all] the executed copy, with the cell that failed and its traceback: $copy" >&2
    exit 1
  fi
  took=$(( $(date +%s) - start ))
  timings+=("$(printf '%-24s %4d s' "$nb" "$took")")
  echo "[run_all] $nb done in ${took} s"
done
total=$(( $(date +%s) - start_all ))
echo "[run_all] elapsed per notebook:"
printf '  %s\n' "${timings[@]}"
printf '[run_all] total: %d s (%d min %02d s) on %s CPU cores\n' "$total" $((total / 60)) $((total % 60)) "$(nproc)"
echo "[run_all] CPU: $cpu; $isa"
if [ "$publish" = True ]; then
  echo "[run_all] executed copies with outputs -> docs/notebooks/"
  python -m sfc_core.analysis.notebook "$run_root/executed" "$repo/docs/notebooks" "${notebooks[@]}" \
    || echo "[run_all] WARNING: a copy is over 2 MiB (tests/test_walkthrough.py fails): rerun with a lower SFC_FIGURE_DPI" >&2
fi
