# Progress lines for scripts/install.sh (sourced): a line as each step begins and one with
# its time when it ends, and a heartbeat during long commands. Uses STEPS, HEARTBEAT_S,
# step_no, step_name and step_started from the caller.

say() { echo "install: $*" >&2; }
# Ends the step before (with its time) and begins the next.
step() {
  end_step
  step_no=$((step_no + 1))
  step_name=$1
  step_started=$SECONDS
  say "[$step_no/$STEPS] $step_name ..."
}
end_step() {
  if [ -n "$step_name" ]; then
    say "[$step_no/$STEPS] $step_name: $((SECONDS - step_started)) s"
    step_name=""
  fi
}
# Runs a long command with its output to a log file; a line every HEARTBEAT_S seconds with
# the time so far and the log's last line; on failure the log's tail, and the exit status.
with_heartbeat() {
  local label=$1 logfile=$2
  shift 2
  "$@" >"$logfile" 2>&1 &
  local pid=$! begun=$SECONDS next=$((SECONDS + HEARTBEAT_S))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if [ "$SECONDS" -ge "$next" ] && kill -0 "$pid" 2>/dev/null; then
      local last
      last=$(tail -n 1 "$logfile" 2>/dev/null | cut -c1-100 || true)
      say "      $label: $((SECONDS - begun)) s so far${last:+ ($last)}"
      next=$((SECONDS + HEARTBEAT_S))
    fi
  done
  local rc=0
  wait "$pid" || rc=$?
  if [ "$rc" -ne 0 ]; then
    say "$label failed (exit $rc); the last lines of $logfile:"
    tail -n 40 "$logfile" >&2 || true
  fi
  return "$rc"
}
