# Sourced by the bench scripts (after REPO is set): SHARED, the peer recipes and the shared
# loadgen every peer number was measured with. They live outside this repository, in
# ../shared/bench/peers beside the clone (BENCH_PEERS overrides, e.g. from a git worktree).
SHARED="${BENCH_PEERS:-$REPO/../shared/bench/peers}"
if [ ! -f "$SHARED/loadgen.py" ] || [ ! -f "$SHARED/make_models.py" ]; then
  echo "bench: needs ../shared/bench/peers beside this clone (the peer recipes, loadgen.py," \
       "make_models.py); not found at $SHARED. Put it there or set BENCH_PEERS." >&2
  exit 2
fi
