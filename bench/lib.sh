# Shared by the bench scripts (sourced, after PY is set): a free loopback port, waiting for the
# server whose PID is in $PID to be ready, and stopping it (SIGINT, up to 10 s, then SIGKILL).
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PID=""
stop() {
  [ -n "$PID" ] || return 0
  kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$PID" 2>/dev/null || true
  PID=""
}
wait_ready() {  # url [log]: poll until 200, at most 120 s, failing if the server exits first
  for _ in $(seq 1 1200); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$PID" 2>/dev/null || { echo "server exited; see ${2:-its log}" >&2; return 1; }
    sleep 0.1
  done
  echo "not ready: $1" >&2; return 1
}
