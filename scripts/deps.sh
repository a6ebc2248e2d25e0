#!/usr/bin/env bash
# scripts/deps.sh [EXTRA-PACKAGE...] — install the Debian 12 packages chatd needs.
#
# Installs only what is missing (dpkg-query), running `apt-get update` first
# when something is; as root, or through sudo. Quiet and idempotent when all is
# present. Extra package names on the command line are added (e.g. clang-format
# for `make format-check`).
#
# The Debian packages of PostgreSQL, PgBouncer and Redis start system services
# on their default ports — 5432, 6432, 6379, exactly where the dev stack
# (scripts/stack.sh) listens. So services are kept from starting during the
# install (policy-rc.d), and afterwards the distro's instances are stopped and
# set to manual start: the cluster 15/main that postgresql-common creates, the
# pgbouncer and redis-server services; likewise nginx (port 80), which the
# benchmark only runs privately on its own port, and haproxy, which make cluster runs
# privately. Each step runs only when needed.
set -euo pipefail

PKGS=(
  # build
  cmake gcc make pkg-config
  libuv1-dev libhttp-parser-dev libpq-dev libjansson-dev libssl-dev
  libhiredis-dev libcmocka-dev
  # servers and their clients (psql, pg_isready, redis-cli)
  postgresql-15 postgresql-client-15 pgbouncer redis-server redis-tools
  # integration tests (run with /usr/bin/python3)
  python3 python3-pytest python3-requests python3-psycopg2 python3-redis
  prometheus prometheus-alertmanager prometheus-postgres-exporter prometheus-redis-exporter prometheus-pgbouncer-exporter python3-yaml
  # the web client's browser tests (tests/integration/test_web.py); python3-yaml also
  # converts docs/openapi.yaml for the build
  chromium chromium-driver python3-selenium
  # the integration suite checks every answer against docs/openapi.yaml
  python3-jsonschema
  # make openapi-check: the validator in tools/openapi runs on Node.js (npm ci)
  nodejs
  # make fuzz (scripts/fuzz.sh) and its smoke in make test: libFuzzer and its runtime
  clang-14 libclang-rt-14-dev
  # make lint (scripts/lint.sh)
  shellcheck cppcheck
  # stack.sh uses these
  util-linux coreutils
  # make bench (bench/run.sh) and its smoke test: references (nginx, pgbench in
  # postgresql-15, redis-benchmark in redis-tools), wrk, and the plots
  nginx-light wrk gnuplot-nox
  # make images and the compose test (scripts/images.sh, scripts/test-compose.sh):
  # podman with runc, the Debian base made by debootstrap, compose through
  # podman's Docker-compatible API
  podman runc debootstrap docker-compose
  # make cluster (scripts/cluster.sh) and tests/integration/test_cluster.py: the load
  # balancer in front of the chatd instances (deploy/haproxy/haproxy.cfg)
  haproxy
)
# npm: Debian's package, unless an npm came with nodejs (NodeSource's does,
# and conflicts with Debian's)
command -v npm >/dev/null 2>&1 || PKGS+=(npm)
PKGS+=("$@")

say() { printf 'deps: %s\n' "$*"; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
    [[ -t 0 ]] || SUDO=(sudo -n)
  fi
fi
as_root() {
  if [[ $(id -u) -ne 0 && ${#SUDO[@]} -eq 0 ]]; then
    say "need root for: $*  (run as root, or install sudo)" >&2
    return 1
  fi
  "${SUDO[@]}" "$@"
}

missing=()
for p in "${PKGS[@]}"; do
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  say "installing: ${missing[*]}"
  # keep the packages' services from starting while installing
  # (invoke-rc.d asks /usr/sbin/policy-rc.d; 101 = "action forbidden")
  POLICY=/usr/sbin/policy-rc.d
  own_policy=
  if [[ ! -e $POLICY ]]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY && chmod 755 $POLICY"
    own_policy=1
  fi
  cleanup() { [[ -z $own_policy ]] || as_root rm -f "$POLICY"; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
  cleanup
  trap - EXIT
  say "installed"
fi

# --- the distro's own servers: stopped and not started at boot ---------------
have_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; }

if command -v pg_lsclusters >/dev/null 2>&1; then
  # "15 main 5432 online postgres /var/lib/... /var/log/..."
  while read -r ver name port status _; do
    [[ $ver =~ ^[0-9]+$ ]] || continue
    conf=/etc/postgresql/$ver/$name/start.conf
    if [[ -f $conf ]] && grep -qx 'auto' "$conf"; then
      if as_root sh -c "sed -i 's/^auto\$/manual/' '$conf'"; then
        say "distro cluster $ver/$name set to manual start"
      else
        say "warning: could not set distro cluster $ver/$name to manual start" >&2
      fi
    fi
    if [[ $status == online* ]]; then
      if as_root pg_ctlcluster "$ver" "$name" stop -m fast; then
        say "distro cluster $ver/$name (port $port) stopped"
      else
        say "warning: distro cluster $ver/$name still runs on port $port" >&2
      fi
    fi
  done < <(pg_lsclusters -h 2>/dev/null || true)
fi

for svc in pgbouncer redis-server nginx haproxy; do
  if have_systemd; then
    for unit in "$svc.service" "$svc.socket"; do
      if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
        as_root systemctl disable --quiet "$unit" 2>/dev/null || true
        say "distro service $unit disabled"
      fi
      if systemctl is-active --quiet "$unit" 2>/dev/null; then
        if as_root systemctl stop "$unit"; then say "distro service $unit stopped"
        else say "warning: distro service $unit still runs" >&2; fi
      fi
    done
  elif [[ -x /etc/init.d/$svc ]]; then
    # no systemd (containers): the sysv script and its pid file
    case $svc in
      pgbouncer) pidf=/var/run/postgresql/pgbouncer.pid ;;
      redis-server) pidf=/var/run/redis/redis-server.pid ;;
      nginx) pidf=/var/run/nginx.pid ;;
      haproxy) pidf=/var/run/haproxy.pid ;;
    esac
    if [[ -r $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
      as_root /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
      say "distro service $svc stopped"
    fi
    if compgen -G "/etc/rc[2-5].d/S*$svc" >/dev/null && command -v update-rc.d >/dev/null; then
      as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
      say "distro service $svc disabled at boot"
    fi
  fi
done
exit 0
