# Shared by the bench scripts (sourced, after PY is set): a free loopback port, and stopping the
# server whose PID is in $PID (SIGINT, up to 10 s, then SIGKILL).
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PID=""
stop() {
  [ -n "$PID" ] || return 0
  kill -INT "$PID" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$PID" 2>/dev/null || break; sleep 0.25; done
  kill -KILL "$PID" 2>/dev/null || true
  PID=""
}
