# Sourced by scripts/test and scripts/test.d/*.sh. `cargo test` has no per-test time
# limit (nextest's is in .config/nextest.toml, pytest's in pytest.ini), so a step run with
# it gets one as a whole, and says which step ran out of time:
#   step_timeout SECONDS "what the step is" COMMAND...
step_timeout() {
  local seconds=$1 name=$2 status=0
  shift 2
  timeout --kill-after=30 "$seconds" "$@" || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "TIMEOUT: step '$name' ran longer than $seconds s: $*" >&2
  fi
  return "$status"
}
