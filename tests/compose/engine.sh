#!/usr/bin/env bash
# A Docker engine for the compose tests on a Debian 12 machine (root) that reaches Debian's package
# registry but no registry of images: dockerd from Debian's docker.io with no bridge and no iptables,
# docker-compose v1, and a debian:bookworm-slim base image made locally by debootstrap.
#
#   source tests/compose/engine.sh; engine_start   # installs, starts dockerd, exports DOCKER_HOST,
#                                                  # makes the base image if the engine lacks it
#   ... docker / docker-compose -f docker-compose.yml -f tests/compose/docker-compose.host.yml ...
#   engine_stop                                    # stops only the dockerd that engine_start started
#   tests/compose/engine.sh start|stop             # the same from a shell
#
# Rules that matter on these machines:
# - Only host networking (network_mode: host): the engine has no bridge, so no network is ever created,
#   and nothing but 127.0.0.1 is addressed. Services do not resolve each other by name there.
# - Nothing can be pulled: the base image is debootstrapped and tagged debian:bookworm-slim so that an
#   ordinary `FROM debian:bookworm-slim` builds unchanged (the legacy builder never pulls by default).
# - RUN steps reach Debian's registry only over the host network: `docker build --network host`.
# - ENGINE_DIR (default ${TMPDIR:-/tmp}/tpcoord-engine) holds the engine's data root; it is kept between
#   runs as the image and layer cache. Remove it for a cold start.
# Adapted from the shared recipe compose-engine.sh; this copy is the project's own.
set -euo pipefail
ENGINE_DIR=${ENGINE_DIR:-${TMPDIR:-/tmp}/tpcoord-engine}
BASE_TAG=${BASE_TAG:-debian:bookworm-slim}
# Debian's client matches Debian's daemon (a newer client elsewhere on PATH may want BuildKit).
export PATH="/usr/bin:/usr/sbin:$PATH"

# What the official -slim images do: no docs, man pages or translations from later installs, no package
# archives or lists left in layers.
slim_rootfs() {
  local root=$1
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CLEAN'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CLEAN
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  find "$root/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
}

engine_start() {
  mkdir -p "$ENGINE_DIR"
  export DEBIAN_FRONTEND=noninteractive
  if ! { [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] && command -v docker-compose >/dev/null &&
         command -v debootstrap >/dev/null; }; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends docker.io docker-compose debootstrap >/dev/null
  fi
  export DOCKER_HOST="unix://$ENGINE_DIR/engine.sock"
  local pid
  if pid=$(cat "$ENGINE_DIR/engine.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    echo "engine: a dockerd ($pid) already serves $ENGINE_DIR" >&2
    return 1
  fi
  rm -f "$ENGINE_DIR/engine.sock"
  dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    -H "$DOCKER_HOST" --data-root "$ENGINE_DIR/data" --exec-root "$ENGINE_DIR/exec" \
    --pidfile "$ENGINE_DIR/dockerd.pid" >"$ENGINE_DIR/dockerd.log" 2>&1 &
  echo $! >"$ENGINE_DIR/engine.pid"
  for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
  docker version >/dev/null || { tail -20 "$ENGINE_DIR/dockerd.log" >&2; return 1; }
  if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    echo "engine: making $BASE_TAG with debootstrap" >&2
    if [ ! -f "$ENGINE_DIR/rootfs/.complete" ]; then
      rm -rf "$ENGINE_DIR/rootfs"
      debootstrap --variant=minbase bookworm "$ENGINE_DIR/rootfs" >"$ENGINE_DIR/debootstrap.log" 2>&1
      touch "$ENGINE_DIR/rootfs/.complete"
    fi
    slim_rootfs "$ENGINE_DIR/rootfs"
    tar --numeric-owner --exclude=./.complete -C "$ENGINE_DIR/rootfs" -c . |
      docker import -c 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null
  fi
}

engine_stop() {
  local pid
  if pid=$(cat "$ENGINE_DIR/engine.pid" 2>/dev/null); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$ENGINE_DIR/engine.pid"
  fi
  # dockerd leaves its network namespace mounted (exec/netns/default); nothing else under ENGINE_DIR
  # stays mounted once it has stopped, but unmount whatever does, deepest first.
  awk -v dir="$ENGINE_DIR/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mount; do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true; done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    start) engine_start; echo "export DOCKER_HOST=$DOCKER_HOST" ;;
    stop) engine_stop ;;
    *) echo "usage: engine.sh start|stop  (or source it for engine_start / engine_stop)" >&2; exit 2 ;;
  esac
fi
