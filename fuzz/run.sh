#!/usr/bin/env bash
# Runs libFuzzer targets for a bounded time each, seeded by their corpora in fuzz/corpus/ (read only: new
# inputs go to a temporary directory). Exits non-zero if any target finds a crash, leak or timeout, and
# leaves the input that caused it in fuzz-artifacts/.
#
#   fuzz/run.sh BIN_DIR SECONDS TARGET_fuzzer...
set -euo pipefail
bin_dir=$1
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
artifacts=$(pwd)/fuzz-artifacts
mkdir -p "$artifacts"
status=0
for fuzzer in "$@"; do
  name=${fuzzer%_fuzzer}
  work=$(mktemp -d)
  extra=()
  [ "$name" = job ] && extra=(-max_len=1024 -timeout=30)
  echo "fuzz: $fuzzer for ${seconds}s"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$here/../tests/lsan.supp \
      "$bin_dir/$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
      "${extra[@]}" "$work" "$here/corpus/$name" >"$work.log" 2>&1; then
    echo "fuzz: $fuzzer FAILED; its log:"
    tail -60 "$work.log"
    status=1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$work.log" | sed "s/^/fuzz: $name /" || true
  rm -rf "$work" "$work.log"
done
exit $status
