#!/usr/bin/env bash
# Compose test: builds the image, brings docker-compose.yml up for real (with the host-network override
# beside this file) and checks a TP=2 x DP=2 training job end to end over mutual TLS with a job token
# (the `certs` service makes them), that clients without the token or a certificate are refused, then a
# worker whose tp_size conflicts with the job's record, a worker container killed mid-training (restarted by
# Docker, the job resumes and ends with the same loss), then the same four workers as TP=4 x DP=1 set by
# variables only, then the `agents` profile (two tp-agents of two workers each), then the `ha` profile (etcd and two coordinators) whose leading coordinator is killed.
#
#   make test-compose                          # what .ci/run calls after `make test`
#   TPCOORD_COMPOSE_TEST=1 tests/compose/run.sh
#
# Runs only under CI=true or TPCOORD_COMPOSE_TEST=1 (it needs root, installs docker.io, docker-compose
# and debootstrap with apt-get, and starts its own dockerd). Every container and volume it made is
# removed and its dockerd stopped when it ends, also on failure. The engine's data root
# (ENGINE_DIR, default ${TMPDIR:-/tmp}/tpcoord-engine) is kept as the image and layer cache, and
# ENGINE_DIR/ccache as the builder's compiler cache; remove ENGINE_DIR for a cold run.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

if [ "${CI:-}" != "true" ] && [ "${TPCOORD_COMPOSE_TEST:-}" != "1" ]; then
  echo "compose test skipped: set CI=true or TPCOORD_COMPOSE_TEST=1 (or run make test-compose) to run it"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "compose test: needs root (it installs packages and starts dockerd)" >&2
  exit 1
fi

# The test's own settings; nothing inherited from the caller's TPCOORD_* variables.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^TPCOORD_' | grep -v '^TPCOORD_COMPOSE_' || true)
export COMPOSE_PROJECT_NAME=tpcoord-compose-test
export TPCOORD_IMAGE=tpcoord:latest
export TPCOORD_JOB=compose-test
export TPCOORD_STEPS=${TPCOORD_COMPOSE_STEPS:-30}
export TPCOORD_RANDOM_INIT=tiny
export COMPOSE_HTTP_TIMEOUT=300
coordinator_address=127.0.0.1:29651   # tests/compose/docker-compose.host.yml
builder_image=tpcoord-builder:latest
seed=deploy/docker/ccache-seed

source tests/compose/engine.sh
ccache_store=$ENGINE_DIR/ccache
work=$(mktemp -d "${TMPDIR:-/tmp}/tpcoord-compose.XXXXXX")
started=$(date +%s)
passed=0
failed=0
phase_start=$started

compose() {
  timeout "${COMPOSE_TIMEOUT:-300}" docker-compose -f docker-compose.yml -f tests/compose/docker-compose.host.yml "$@"
}
say() { echo "compose test [$(( $(date +%s) - started ))s]: $*"; }
phase() {  # phase NAME: prints how long the previous phase took
  local now
  now=$(date +%s)
  say "$1 (previous phase $(( now - phase_start ))s)"
  phase_start=$now
}
ok() { passed=$((passed + 1)); say "ok   - $*"; }
fail() { failed=$((failed + 1)); say "FAIL - $*"; }
check() {  # check DESCRIPTION COMMAND...: counts the result, keeps going
  local what=$1
  shift
  if "$@"; then ok "$what"; else fail "$what"; fi
}
cache_digest() {  # the compiler cache's entries, without its statistics
  (cd "$1" && find . -type f ! -name stats ! -name README.md ! -name .gitignore -print0 | sort -z | xargs -0 -r sha1sum)
}
clear_seed() { find "$seed" -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore -exec rm -rf {} +; }

cleanup() {
  local status=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
    if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
      say "logs of the stack:"
      compose logs --no-color --tail=60 2>&1 | sed 's/^/    /'
    fi
    compose --profile ha down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
    docker ps -aq --filter label=tpcoord-compose-test | xargs -r docker rm -f >/dev/null
    docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker volume rm >/dev/null
    docker image prune -f >/dev/null   # earlier versions of the two images; the build cache stays tagged
    [ -z "$(docker ps -aq)" ] || say "warning: containers left in the engine: $(docker ps -aq | tr '\n' ' ')"
  fi
  clear_seed
  engine_stop
  rm -rf "$work"
  if [ "$status" -eq 0 ] && [ "$failed" -ne 0 ]; then status=1; fi
  say "finished in $(( $(date +%s) - started ))s"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- engine and image -------------------------------------------------------------------------------
phase "starting the engine in $ENGINE_DIR"
engine_start
docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker rm -f >/dev/null
docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | xargs -r docker volume rm >/dev/null

phase "building $TPCOORD_IMAGE (deploy/docker/Dockerfile)"
clear_seed
if [ -d "$ccache_store" ]; then
  find "$ccache_store" -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore -exec cp -a {} "$seed"/ \;
fi
builder_before=$(docker image inspect -f '{{.Id}}' "$builder_image" 2>/dev/null || true)
timeout 2700 docker build --network host --force-rm -f deploy/docker/Dockerfile --target builder \
  -t "$builder_image" . >"$work/build.log" 2>&1 &&
  timeout 900 docker build --network host --force-rm -f deploy/docker/Dockerfile \
    -t "$TPCOORD_IMAGE" . >>"$work/build.log" 2>&1 || { tail -40 "$work/build.log"; say "docker build failed"; exit 1; }
say "build: $(grep -c '^Step ' "$work/build.log") steps, $(grep -c 'Using cache' "$work/build.log") from the layer cache"
grep -E '^ *(Hits|Misses):' "$work/build.log" | sed 's/^/    ccache /' || true
builder_after=$(docker image inspect -f '{{.Id}}' "$builder_image")
if [ "$builder_before" != "$builder_after" ]; then
  # The builder compiled: keep its compiler cache for the next build, unless only statistics changed
  # (so that an unchanged tree keeps hitting the layer cache).
  rm -rf "$ccache_store.new" && mkdir -p "$ccache_store.new"
  cid=$(docker create "$builder_image" true)
  docker cp "$cid:/ccache/." "$ccache_store.new/"
  docker rm "$cid" >/dev/null
  if [ -d "$ccache_store" ] && [ "$(cache_digest "$ccache_store")" = "$(cache_digest "$ccache_store.new")" ]; then
    rm -rf "$ccache_store.new"
  else
    rm -rf "$ccache_store" && mv "$ccache_store.new" "$ccache_store"
  fi
fi
clear_seed
say "image $TPCOORD_IMAGE: $(docker image inspect -f '{{.Size}}' "$TPCOORD_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"

# --- scenario 1: the demo job, TP=2 x DP=2 ------------------------------------------------------------
if (exec 3<>"/dev/tcp/${coordinator_address%:*}/${coordinator_address#*:}") 2>/dev/null; then
  say "something already listens on $coordinator_address (tests/compose/docker-compose.host.yml's port)"
  exit 1
fi
phase "compose up (job $TPCOORD_JOB, $TPCOORD_STEPS steps)"
COMPOSE_TIMEOUT=240 compose up -d --no-build 2>&1 | sed 's/^/    /'
networks=$(docker network ls --format '{{.Name}}' | sort | tr '\n' ' ')
check "no network created (networks: $networks)" test "$networks" = "host none "
coordinator=$(compose ps -q coordinator)
check "coordinator healthy" test "$(docker inspect -f '{{.State.Health.Status}}' "$coordinator")" = healthy

tpctl() { COMPOSE_TIMEOUT=60 compose exec -T coordinator tpctl "$@"; }
check "certs made the secrets and exited 0" \
  test "$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q certs)")" = 0
for _ in $(seq 120); do tpctl job "$TPCOORD_JOB" >/dev/null 2>&1 && break; sleep 0.5; done
COMPOSE_TIMEOUT=600 compose exec -T coordinator tpctl watch "$TPCOORD_JOB" --interval 1s >"$work/watch.log" 2>&1 &
watch_pid=$!

phase "waiting for the workers"
all_zero=true
for w in 0 1 2 3; do
  cid=$(compose ps -q "worker-$w")
  code=$(timeout 600 docker wait "$cid") || code="timeout"
  docker logs "$cid" >"$work/worker-$w.log" 2>&1
  say "worker-$w exited $code"
  [ "$code" = 0 ] || { all_zero=false; sed 's/^/    /' "$work/worker-$w.log" | tail -20; }
done
check "every worker exits 0" $all_zero

phase "checking the job"
tpctl job "$TPCOORD_JOB" >"$work/job.txt" 2>&1 || true
sed 's/^/    /' "$work/job.txt" | head -12
check "coordinator reports the job complete" grep -Eq '^  generation [0-9]+: completed, world_size 4$' "$work/job.txt"
watch_status=0
wait "$watch_pid" || watch_status=$?
check "tpctl watch follows the job to completion (exit $watch_status)" \
  bash -c "[ $watch_status -eq 0 ] && grep -Eq 'generation [0-9]+: completed' '$work/watch.log'"

sed 's/^/    /' "$work/worker-0.log"
awk '$1 == "step" && $3 == "loss" {print $4}' "$work/worker-0.log" >"$work/losses.txt"
first_loss=$(head -1 "$work/losses.txt")
last_loss=$(tail -1 "$work/losses.txt")
check "losses logged and falling (${first_loss:-none} -> ${last_loss:-none})" \
  awk -v n="$(wc -l <"$work/losses.txt")" -v a="${first_loss:-0}" -v b="${last_loss:-0}" \
  'BEGIN { exit !(n >= 2 && b + 0 < a + 0) }'
train_eval=$(awk '$1 == "eval" && $2 == "loss" {print $3}' "$work/worker-0.log")

phase "observability: the coordinator's /metrics and status page"
metrics=$(timeout 30 python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
  "http://127.0.0.1:29654/metrics" 2>&1 || true)   # tests/compose/docker-compose.host.yml
grep -E "^tpcoord_(generations_ended_total|job_step|job_phase)" <<<"$metrics" | grep -v " 0$" | sed 's/^/    /' || true
check "/metrics counts the job's completed generation" grep -q '^tpcoord_generations_ended_total{reason="completed"} 1$' <<<"$metrics"
check "/metrics has the job's last step" grep -Eq "^tpcoord_job_step\\{job_id=\"$TPCOORD_JOB\"\\} [1-9]" <<<"$metrics"
page=$(timeout 30 python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
  "http://127.0.0.1:29654/" 2>&1 || true)
check "the status page shows the job with its loss curve" \
  bash -c 'grep -q "<td class=\"job\">$1</td>" <<<"$2" && grep -q "<polyline class=\"loss\"" <<<"$2"' _ "$TPCOORD_JOB" "$page"

phase "security: clients without the token or a certificate"
no_token=$(COMPOSE_TIMEOUT=60 compose exec -T -e TPCOORD_TOKEN_FILE= coordinator tpctl job "$TPCOORD_JOB" 2>&1 || true)
echo "$no_token" | sed 's/^/    /'
check "tpctl without the job token is refused" grep -q "the call carries no token" <<<"$no_token"
no_cert=$(COMPOSE_TIMEOUT=60 compose exec -T -e TPCOORD_TLS_CERT= -e TPCOORD_TLS_KEY= coordinator \
  tpctl job "$TPCOORD_JOB" 2>&1 || true)
echo "$no_cert" | sed 's/^/    /'
check "tpctl without a client certificate is refused" grep -q "UNAVAILABLE" <<<"$no_cert"
plaintext=$(COMPOSE_TIMEOUT=60 compose exec -T -e TPCOORD_TLS_CA= -e TPCOORD_TLS_CERT= -e TPCOORD_TLS_KEY= \
  coordinator tpctl job "$TPCOORD_JOB" 2>&1 || true)
check "a plaintext tpctl is refused" grep -q "UNAVAILABLE" <<<"$plaintext"

volume=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/output"}}{{.Name}}{{end}}{{end}}' "$(compose ps -q worker-0)")
secrets=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/secrets"}}{{.Name}}{{end}}{{end}}' "$(compose ps -q worker-0)")
verify_out=$(timeout 120 docker run --rm --label tpcoord-compose-test --network host -v "$volume:/output:ro" \
  -v "$secrets:/secrets:ro" -e TPCOORD_TLS_CA=/secrets/client/ca.crt -e TPCOORD_TLS_CERT=/secrets/client/tls.crt \
  -e TPCOORD_TLS_KEY=/secrets/client/tls.key -e TPCOORD_TOKEN_FILE=/secrets/token \
  -v "$repo/tests/compose/verify_ds_config.json:/opt/tpcoord/verify.json:ro" "$TPCOORD_IMAGE" \
  sh -c "ls /output/checkpoint && exec tp-worker --coordinator $coordinator_address --job $TPCOORD_JOB-verify \
    --world-size 1 --config /opt/tpcoord/verify.json --model-dir /output/checkpoint --steps 0 --host 127.0.0.1" 2>&1) &&
  verify_status=0 || verify_status=$?
echo "$verify_out" | sed 's/^/    /'
check "checkpoint in volume $volume has config.json and model.safetensors" \
  bash -c "grep -qx config.json <<<\"\$1\" && grep -qx model.safetensors <<<\"\$1\"" _ "$verify_out"
verify_eval=$(awk '$1 == "eval" && $2 == "loss" {print $3}' <<<"$verify_out")
check "checkpoint loads at TP=1 (exit $verify_status) and evaluates like the trained model (${verify_eval:-none} vs ${train_eval:-none})" \
  awk -v s="$verify_status" -v a="${verify_eval:-x}" -v b="${train_eval:-y}" \
  'BEGIN { d = a - b; if (d < 0) d = -d; exit !(s == 0 && a != "x" && b != "y" && d < 1e-3) }'

# --- scenario 2: a worker whose tp_size conflicts with the job's record ------------------------------
phase "a worker with a conflicting tp_size"
# The compose workers run config-only (no TPCOORD_TP_SIZE: no tp_model_init, the config's autotp_size), so
# the job holds no record; record what they ran with, as tp_model_init would, for a worker to conflict with.
tpctl record --job "$TPCOORD_JOB" --tp-size 2 --dtype fp32 >"$work/record.txt" 2>&1 || true
check "the job's TP args recorded (tp_size=2)" grep -q 'tp_size=2 ' "$work/record.txt"
conflict=$(COMPOSE_TIMEOUT=120 compose run -d --no-deps -e TPCOORD_TP_SIZE=4 worker-3 2>"$work/run.err" | tail -1) ||
  { cat "$work/run.err"; exit 1; }
conflict_status=$(timeout 120 docker wait "$conflict") || conflict_status=timeout
docker logs "$conflict" >"$work/conflict.log" 2>&1
docker rm -f "$conflict" >/dev/null
sed 's/^/    /' "$work/conflict.log"
check "the conflicting worker exits non-zero (exit $conflict_status)" \
  bash -c "[[ '$conflict_status' =~ ^[0-9]+\$ ]] && [ '$conflict_status' -ne 0 ]"
check "with DeepSpeed's message" grep -q "Conflicting tp_model_init arguments detected across multiple calls." \
  "$work/conflict.log"
check "the coordinator stays healthy" \
  bash -c "[ \"\$(docker inspect -f '{{.State.Running}} {{.RestartCount}} {{.State.Health.Status}}' $coordinator)\" = 'true 0 healthy' ]"
health=$(tpctl health 2>&1 || true)
check "tpctl health answers $health" test "$health" = SERVING
tpctl job "$TPCOORD_JOB" >"$work/job-after.txt" 2>&1 || true
check "the job's record is unchanged (tp_size=2)" grep -q '^  tp_model_init: tp_size=2 ' "$work/job-after.txt"

# --- scenario 3: a worker container killed mid-training ---------------------------------------------
# kill -9 of the container's tp-worker from the host, as the kernel's OOM killer or a crash would: Docker
# restarts the container (restart: on-failure), its tp-worker rejoins as rank 1, the survivors' trainers
# restart into the next generation, everyone resumes from the newest checkpoint, and the job ends with the
# uninterrupted run's loss (scenario 1: the same config, seed and steps).
phase "a worker container killed mid-training"
wait_exited() {  # wait_exited CONTAINER: its exit code once Docker will not restart it again
  local state
  for _ in $(seq 1500); do
    state=$(docker inspect -f '{{.State.Running}} {{.State.Restarting}} {{.State.ExitCode}}' "$1")
    if [ "${state% *}" = "false false" ]; then echo "${state##* }"; return 0; fi
    sleep 0.2
  done
  echo timeout
}
# finish_workers NAME: waits until Docker will not restart any of the four workers again, keeps their logs as
# $work/NAME-worker-N.log, and sets all_zero to whether every one exited 0.
finish_workers() {
  local w cid code
  all_zero=true
  for w in 0 1 2 3; do
    cid=$(compose ps -q "worker-$w")
    code=$(wait_exited "$cid")
    docker logs "$cid" >"$work/$1-worker-$w.log" 2>&1
    [ "$code" = 0 ] || { all_zero=false; say "worker-$w exited $code"; sed 's/^/    /' "$work/$1-worker-$w.log" | tail -20; }
  done
}
TPCOORD_JOB=compose-test-kill TPCOORD_OUTPUT_DIR=/output/kill COMPOSE_TIMEOUT=120 \
  compose up -d --no-deps worker-0 worker-1 worker-2 worker-3 2>&1 | sed 's/^/    /'
w0=$(compose ps -q worker-0)
w1=$(compose ps -q worker-1)
for _ in $(seq 1500); do docker exec "$w0" test -f /output/kill/checkpoint-10/trainer_state.json && break; sleep 0.2; done
killed_pid=$(docker inspect -f '{{.State.Pid}}' "$w1")
kill -9 "$killed_pid"
say "killed worker-1's tp-worker (pid $killed_pid) once checkpoint-10 was written"
finish_workers kill
grep -v '^step ' "$work/kill-worker-0.log" | sed 's/^/    /'
check "every worker exits 0 after the kill" $all_zero
restarts=$(docker inspect -f '{{.RestartCount}}' "$w1")
check "Docker restarted the killed worker's container once (restarts: $restarts)" test "$restarts" = 1
check "rank 0 trained on in generation 2, resumed from a checkpoint" \
  bash -c "grep -q 'generation 2: world 4 = tp 2 x dp 2' '$work/kill-worker-0.log' &&
           grep -q '^resumed from /output/kill/checkpoint-[0-9]* at step ' '$work/kill-worker-0.log'"
kill_last_loss=$(awk '$1 == "step" && $3 == "loss" {print $4}' "$work/kill-worker-0.log" | tail -1)
kill_eval=$(awk '$1 == "eval" && $2 == "loss" {print $3}' "$work/kill-worker-0.log")
check "the final loss equals the uninterrupted run's (${kill_last_loss:-none} vs ${last_loss:-none}, eval ${kill_eval:-none} vs ${train_eval:-none})" \
  bash -c "[ -n '$kill_last_loss' ] && [ '$kill_last_loss' = '$last_loss' ] && [ '$kill_eval' = '$train_eval' ]"

# --- scenario 4: the same stack at another shape, from environment variables only --------------------
phase "the workers again as TP=4 x DP=1 (TPCOORD_TP_SIZE=4, ds_config_any_tp.json)"
TPCOORD_JOB=compose-test-tp4 TPCOORD_TP_SIZE=4 TPCOORD_STEPS=10 TPCOORD_CONFIG=/opt/tpcoord/ds_config_any_tp.json \
  COMPOSE_TIMEOUT=120 compose up -d --no-deps worker-0 worker-1 worker-2 worker-3 2>&1 | sed 's/^/    /'
all_zero=true
for w in 0 1 2 3; do
  cid=$(compose ps -q "worker-$w")
  code=$(timeout 300 docker wait "$cid") || code="timeout"
  docker logs "$cid" >"$work/tp4-worker-$w.log" 2>&1
  [ "$code" = 0 ] || { all_zero=false; say "worker-$w exited $code"; sed 's/^/    /' "$work/tp4-worker-$w.log" | tail -20; }
done
head -1 "$work/tp4-worker-0.log" | sed 's/^/    /'
check "every TP=4 worker exits 0" $all_zero
check "rank 0 reports world 4 = tp 4 x dp 1" grep -q "world 4 = tp 4 x dp 1" "$work/tp4-worker-0.log"

# --- scenario 4b: the `agents` profile: two "hosts", each one container whose tp-agent starts two workers ------
phase "two tp-agents (--profile agents: host-a, host-b), each starting two tp-workers"
agents() { compose --profile agents "$@"; }
TPCOORD_JOB=compose-test-agents TPCOORD_STEPS=10 TPCOORD_OUTPUT_DIR=/output/agents \
  COMPOSE_TIMEOUT=120 agents up -d --no-deps host-a host-b 2>&1 | sed 's/^/    /'
all_zero=true
for h in host-a host-b; do
  cid=$(agents ps -q "$h")
  code=$(timeout 300 docker wait "$cid") || code="timeout"
  docker logs "$cid" >"$work/agents-$h.log" 2>&1
  [ "$code" = 0 ] || { all_zero=false; say "$h exited $code"; sed 's/^/    /' "$work/agents-$h.log" | tail -20; }
done
grep -h "tp-agent: serving" "$work/agents-host-a.log" | sed 's/^/    /' || true
check "both agents exit 0" $all_zero
check "their four workers trained as world 4 = tp 2 x dp 2" \
  bash -c "cat '$work/agents-host-a.log' '$work/agents-host-b.log' | grep -q 'world 4 = tp 2 x dp 2'"

# --- scenario 5: high availability (--profile ha), the leading coordinator's container killed -------------
# Three etcd members and two coordinators on them; the four workers are given both coordinators. Once the
# job trains, the container of whichever coordinator leads is killed: the other takes over, the job goes on
# in the same generation, and no worker restarts.
phase "high availability: etcd x3, coordinator-a and -b (--profile ha); the leader's container killed"
ha() { compose --profile ha "$@"; }
COMPOSE_TIMEOUT=240 ha up -d --no-deps etcd-0 etcd-1 etcd-2 coordinator-a coordinator-b 2>&1 | sed 's/^/    /'
leader=""
for _ in $(seq 300); do
  for c in coordinator-a coordinator-b; do
    docker logs "$(ha ps -q $c)" 2>&1 | grep -q "tp-coordinator serving on" && { leader=$c; break 2; }
  done
  sleep 0.2
done
check "one of the two coordinators leads (${leader:-none})" test -n "$leader"
standby=coordinator-a; [ "$leader" = coordinator-a ] && standby=coordinator-b
TPCOORD_JOB=compose-test-ha TPCOORD_OUTPUT_DIR=/output/ha TPCOORD_COMPOSE_COORDINATOR=127.0.0.1:29652,127.0.0.1:29653 \
  COMPOSE_TIMEOUT=120 compose up -d --no-deps worker-0 worker-1 worker-2 worker-3 2>&1 | sed 's/^/    /'
w0=$(compose ps -q worker-0)
for _ in $(seq 1500); do docker logs "$w0" 2>&1 | grep -q '^step 10/' && break; sleep 0.2; done
docker kill "$(ha ps -q "$leader")" >/dev/null
say "killed $leader's container at step 10"
took_over=false
for _ in $(seq 300); do
  docker logs "$(ha ps -q "$standby")" 2>&1 | grep -q "tp-coordinator serving on" && { took_over=true; break; }
  sleep 0.2
done
check "$standby took over" $took_over
finish_workers ha
check "every worker exits 0 across the failover" $all_zero
restarts=$(for w in 0 1 2 3; do docker inspect -f '{{.RestartCount}}' "$(compose ps -q worker-$w)"; done | sort -u | tr '\n' ' ')
check "no worker container restarted (restart counts: $restarts)" test "$restarts" = "0 "
check "rank 0 trained in one generation" bash -c "! grep -q 'generation 2' '$work/ha-worker-0.log'"
ha_job=$(COMPOSE_TIMEOUT=60 ha exec -T "$standby" tpctl job compose-test-ha 2>&1 || true)
echo "$ha_job" | head -4 | sed 's/^/    /'
check "the new leader reports the job complete" grep -Eq '^  generation 1: completed, world_size 4$' <<<"$ha_job"

phase "done"
echo "compose: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
