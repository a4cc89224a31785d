#!/usr/bin/env bash
# Issue 22's targets: the archive search against the paper's plain loop on the same seeds, in
# one session, each pair back to back (the machine's load is shared by both runs of a pair).
#
#   benchmarks/search_runs.sh [TAG] [SEEDS] [-- extra --set options for the archive runs]
#   e.g. benchmarks/search_runs.sh full "0 1" --set search.mode=full --set search.parent_share=0.5
#
# Runs `nasloop run` (the `local` preset, 5 cycles x 48, with the baseline, both runs on the
# model MODEL, default models/bootstrap-edit: one that has seen parents) as
# search-plain-<model>-s<seed> (once per seed and model; kept when it is already complete in
# the store) and search-<TAG>-s<seed> with search.strategy=archive plus the extra options, then
# writes `nasloop report search-<TAG>-s<seed> --against search-plain-<model>-s<seed>`.
# Needs MODEL in the store (`nasloop bootstrap-model --size edit`). Wall times go to
# .nasloop/reports/search-<TAG>-times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL=${MODEL:-models/bootstrap-edit}
TAG=${1:-archive}
SEEDS=${2:-0 1}
shift $(( $# < 2 ? $# : 2 ))
[ "${1:-}" = "--" ] && shift
mkdir -p .nasloop/reports
times=".nasloop/reports/search-$TAG-times.txt"

complete() { # a run whose status says it finished
  "$PY" -m services.cli status "$1" 2>/dev/null | grep -q ": succeeded"
}

timed_run() { # NAME ARGS...: one run, its wall time appended to $times
  local name=$1
  shift
  local start end
  start=$(date +%s)
  "$PY" -m services.cli run --name "$name" "$@"
  end=$(date +%s)
  echo "$name $((end - start)) s $(date -u +%FT%TZ)" | tee -a "$times"
}

for seed in $SEEDS; do
  plain="search-plain-${MODEL##*/}-s$seed"
  if complete "$plain"; then
    echo "$plain: already complete, kept"
  else
    timed_run "$plain" --set seed="$seed" --set base_model="$MODEL"
  fi
  timed_run "search-$TAG-s$seed" --set seed="$seed" --set base_model="$MODEL" \
    --set search.strategy=archive "$@"
  "$PY" -m services.cli report "search-$TAG-s$seed" --against "$plain"
done
