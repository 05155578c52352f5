#!/usr/bin/env bash
# Run app.py in the background with nohup, a pid file and a log file.
#
#   scripts/service.sh start [app.py flags...]   start (refused if already running), wait until ready
#   scripts/service.sh stop                      SIGTERM (requests in flight finish, the rest get a
#                                                JSON 503), then SIGKILL after STOP_TIMEOUT seconds
#   scripts/service.sh restart [app.py flags...]
#   scripts/service.sh status                    exit 0 running, 1 dead with a pid file, 3 not running (LSB)
#   scripts/service.sh logs [-f]                 last LOG_LINES lines of the log (-f: follow)
#
# Environment: PID_FILE (default run/app.pid), LOG_FILE (default run/app.log), PYTHON (default
# .venv/bin/python if present, else python3), READY_TIMEOUT (s, default 120), STOP_TIMEOUT (s,
# default 20), LOG_LINES (default 100). Flags for app.py can also come from its environment
# variables (FUNASR_NANO_MODEL, GRADIO_SERVER_PORT, ...; see python app.py --help).
set -u

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PID_FILE="${PID_FILE:-$ROOT/run/app.pid}"
LOG_FILE="${LOG_FILE:-$ROOT/run/app.log}"
READY_TIMEOUT="${READY_TIMEOUT:-120}"
STOP_TIMEOUT="${STOP_TIMEOUT:-20}"
LOG_LINES="${LOG_LINES:-100}"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
NAME="funasr-nano app"

read_pid() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(tr -cd '0-9' < "$PID_FILE")"
    [ -n "$pid" ] || return 1
    echo "$pid"
}

# True when the pid is alive and is our app.py (not a recycled pid of something else).
is_ours() {
    local pid="$1"
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "app\.py" || return 1
    fi
    return 0
}

running_pid() {
    local pid
    pid="$(read_pid)" || return 1
    is_ours "$pid" || return 1
    echo "$pid"
}

do_start() {
    local pid
    if pid="$(running_pid)"; then
        echo "$NAME is already running (pid $pid); not starting a second one" >&2
        return 1
    fi
    if [ -f "$PID_FILE" ]; then
        echo "removing stale pid file $PID_FILE ($(cat "$PID_FILE" 2>/dev/null))"
        rm -f "$PID_FILE"
    fi
    mkdir -p "$(dirname "$PID_FILE")" "$(dirname "$LOG_FILE")"
    touch "$LOG_FILE"
    local offset
    echo "=== $(date '+%Y-%m-%d %H:%M:%S') starting: $PYTHON app.py $*" >> "$LOG_FILE"
    offset=$(($(wc -c < "$LOG_FILE") + 1))
    cd "$ROOT" || return 1
    # The app lets requests in flight finish for its --stop-timeout after SIGTERM, then answers
    # the rest 503 and exits. Its exit (threads joined, the interpreter torn down) takes up to a
    # few seconds on a loaded machine, so it gets STOP_TIMEOUT less a third (at least 2 s)
    # before our SIGKILL.
    local margin=$(( STOP_TIMEOUT / 3 > 2 ? STOP_TIMEOUT / 3 : 2 ))
    FUNASR_NANO_STOP_TIMEOUT="${FUNASR_NANO_STOP_TIMEOUT:-$(( STOP_TIMEOUT > margin + 1 ? STOP_TIMEOUT - margin : 1 ))}" \
        nohup "$PYTHON" -u "$ROOT/app.py" "$@" >> "$LOG_FILE" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PID_FILE"
    echo -n "starting $NAME (pid $pid, log $LOG_FILE) "
    local waited=0
    while [ "$waited" -lt "$((READY_TIMEOUT * 5))" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "FAILED: it exited; the end of the log:" >&2
            tail -c +"$offset" "$LOG_FILE" | tail -n 20 >&2
            rm -f "$PID_FILE"
            return 1
        fi
        if tail -c +"$offset" "$LOG_FILE" | grep -q "funasr_nano.app: ready: "; then
            echo "ready: $(tail -c +"$offset" "$LOG_FILE" | grep -o 'ready: http[^ ]*' | head -n 1 | cut -c8-)"
            return 0
        fi
        sleep 0.2
        waited=$((waited + 1))
        [ $((waited % 25)) -eq 0 ] && echo -n "."
    done
    echo "FAILED: not ready after ${READY_TIMEOUT} s (still running as pid $pid; see $LOG_FILE)" >&2
    return 1
}

do_stop() {
    local pid
    if ! pid="$(running_pid)"; then
        if [ -f "$PID_FILE" ]; then
            echo "$NAME is not running; removing stale pid file $PID_FILE"
            rm -f "$PID_FILE"
        else
            echo "$NAME is not running"
        fi
        return 0
    fi
    echo -n "stopping $NAME (pid $pid) "
    kill -TERM "$pid" 2>/dev/null
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$((STOP_TIMEOUT * 5))" ]; then
            echo -n "(no exit after ${STOP_TIMEOUT} s: SIGKILL) "
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    rm -f "$PID_FILE"
    echo "stopped"
    echo "=== $(date '+%Y-%m-%d %H:%M:%S') stopped (pid $pid)" >> "$LOG_FILE"
    return 0
}

do_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "$NAME is running (pid $pid)"
        return 0
    fi
    if [ -f "$PID_FILE" ]; then
        echo "$NAME is not running, but the pid file $PID_FILE exists (stale)"
        return 1
    fi
    echo "$NAME is not running"
    return 3
}

do_logs() {
    if [ ! -f "$LOG_FILE" ]; then
        echo "no log file at $LOG_FILE" >&2
        return 1
    fi
    if [ "${1:-}" = "-f" ] || [ "${1:-}" = "--follow" ]; then
        exec tail -n "$LOG_LINES" -F "$LOG_FILE"
    fi
    tail -n "$LOG_LINES" "$LOG_FILE"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    start) do_start "$@" ;;
    stop) do_stop ;;
    restart) do_stop && do_start "$@" ;;
    status) do_status ;;
    logs) do_logs "$@" ;;
    *)
        echo "usage: $0 start|stop|restart|status|logs [-f]   (arguments after start/restart go to app.py)" >&2
        exit 2
        ;;
esac
