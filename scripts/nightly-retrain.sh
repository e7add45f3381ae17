#!/bin/sh
# Nightly retraining for cron. Usage:
#   nightly-retrain.sh /abs/path/data.csv MODEL [extra `forecast retrain` flags]
# MODEL is a name in the repository's models/ store, or the absolute path of a model directory in any store.
# Crontab line (every night at 02:30; a full retrain on Sundays):
#   30 2 * * * /abs/path/forecast/scripts/nightly-retrain.sh /abs/path/data.csv /abs/path/models/sensor >/dev/null 2>&1
# Environment (all optional): FORECAST (the command; default: the repository's .venv), FORECAST_LOG (default:
# STORE/MODEL.log), FULL_RETRAIN_WEEKDAY (1-7 as `date +%u` prints it, default 7; "none" never).
# Exit codes are `forecast retrain`'s: 0 promoted or kept the old model, 1 an error, 75 another run holds the lock;
# 127 no forecast command (logged to the model's log as well).
set -eu
if [ "$#" -lt 2 ]; then
    echo "usage: $0 /abs/path/data.csv MODEL [forecast retrain flags]" >&2
    exit 64
fi
data=$1
model=$2
shift 2
repository=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
forecast=${FORECAST:-$repository/.venv/bin/forecast}
case "$model" in
    /*) store=$(dirname -- "$model"); name=$(basename -- "$model") ;;
    *) store=$repository/models; name=$model ;;
esac
log=${FORECAST_LOG:-$store/$name.log}
# Cron mails or discards what a job prints; the wrapper's own failures go to the model's log like forecast's do.
fail() {
    code=$1
    shift
    line="$(date +%Y-%m-%dT%H:%M:%S) error: nightly-retrain.sh: $*"
    echo "$line" >&2
    mkdir -p "$(dirname -- "$log")" && echo "$line" >>"$log"
    exit "$code"
}
command -v "$forecast" >/dev/null 2>&1 || fail 127 "no forecast command at $forecast; install the repository's .venv or set FORECAST"
# cron gives no HOME and a minimal PATH: keep Keras' cache in the store and name every path absolutely.
export HOME="${HOME:-$store}"
export KERAS_HOME="${KERAS_HOME:-$store/.keras}"
if [ "$(date +%u)" = "${FULL_RETRAIN_WEEKDAY:-7}" ]; then
    set -- --full "$@"
fi
# forecast logs its own errors (one `error:` line); anything else that ends it (a crash's traceback, a kill) is kept
# from its standard error and logged here.
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
status=0
"$forecast" retrain "$data" --model "$name" --store "$store" --log "$log" "$@" 2>"$errors" || status=$?
cat "$errors" >&2
if [ "$status" -ne 0 ] && [ "$status" -ne 75 ] && ! grep -q "^error: " "$errors"; then
    fail "$status" "forecast retrain stopped with exit code $status (a crash or a kill): $(tail -n 1 "$errors")"
fi
exit "$status"
