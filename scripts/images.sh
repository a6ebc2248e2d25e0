#!/usr/bin/env bash
# scripts/images.sh — chatd's container images, built with podman from a local
# Debian 12 base made by debootstrap: no image registry is needed, only the
# Debian archive the host's apt already uses. `make images` runs `build`.
#
#   scripts/images.sh [build] [NAME...]  the base when missing, then the images
#                                        (all, or those named); prints their sizes
#   scripts/images.sh background [NAME...] the same build, started in the background
#                                        (log: $CHATD_IMAGES_DIR/background.log); a
#                                        later build waits for it, then finds every
#                                        layer cached. `make test` starts it first
#                                        thing, so the images are ready by the time
#                                        its compose test runs
#   scripts/images.sh base               only the base image
#   scripts/images.sh sizes              the images' sizes
#   scripts/images.sh list               the images' names, one a line
#   scripts/images.sh rm                 remove the images built here and chatd's cached
#                                        build stage (the base and its tar stay)
#
# The base: `debootstrap --variant=minbase bookworm` with the host's Debian
# mirror and apt sources, without apt lists, caches, documentation, manuals or
# translations (dpkg keeps them out of every later install too), imported as
# localhost/chatd-base:bookworm. Its tar is cached in $CHATD_IMAGES_DIR/base.tar,
# so the next run on this machine (or after `podman rmi`) only imports it; a
# base already in podman's storage is kept as is, so podman's layer cache stays
# valid and an unchanged image rebuilds in seconds.
#
# The images: one Dockerfile each (deploy/images/NAME/Dockerfile; chatd's is
# ./Dockerfile), FROM the base (build argument BASE), Debian packages only, one
# apt-get per image, non-root, with a HEALTHCHECK (so built in docker format:
# the OCI format has no place for it). Each is tagged localhost/chatd-NAME:local
# (chatd's localhost/chatd:local). A rebuild that changes an image removes the
# old one, so nothing piles up in podman's storage.
#
# Environment: CHATD_IMAGES_DIR (var/images), CHATD_DEBIAN_MIRROR (the host's
# bookworm mirror, from apt), CONTAINERS_CONF (deploy/podman/containers.conf:
# runtime runc, ulimits this host grants). Needs root (debootstrap, podman's
# storage) and the Debian packages podman, runc, debootstrap (scripts/deps.sh).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/deploy/podman/containers.conf}
DIR=${CHATD_IMAGES_DIR:-$REPO/var/images}
[[ $DIR == /* ]] || DIR=$REPO/$DIR
BASE=localhost/chatd-base:bookworm
SUITE=bookworm
ALL=(chatd postgres pgbouncer redis prometheus alertmanager postgres-exporter redis-exporter pgbouncer-exporter
  haproxy)

say() { printf 'images: %s\n' "$*"; }
die() {
  printf 'images: error: %s\n' "$*" >&2
  exit 1
}

image_of() { # NAME — the image's reference
  if [[ $1 == chatd ]]; then echo localhost/chatd:local; else echo "localhost/chatd-$1:local"; fi
}
dockerfile_of() { if [[ $1 == chatd ]]; then echo Dockerfile; else echo "deploy/images/$1/Dockerfile"; fi; }
context_of() { # chatd and the PgBouncer exporter copy files of the repo; the others only their folder
  case $1 in chatd | pgbouncer-exporter) echo . ;; *) echo "deploy/images/$1" ;; esac
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 missing: run scripts/deps.sh (Debian package $2)"; }

# the host's Debian mirror for $SUITE, as apt knows it
host_mirror() {
  if [[ -n ${CHATD_DEBIAN_MIRROR:-} ]]; then
    echo "$CHATD_DEBIAN_MIRROR"
    return
  fi
  # shellcheck disable=SC2016 # apt's own $(FIELD) placeholders, not the shell's
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null |
    awk -v s="$SUITE" '$2 == s { print $1; exit }'
}

# the base's root file system, in $1
make_rootfs() {
  local root=$1 mirror
  mirror=$(host_mirror)
  [[ -n $mirror ]] || die "no Debian $SUITE mirror in apt's sources; set CHATD_DEBIAN_MIRROR"
  say "debootstrap --variant=minbase $SUITE from $mirror (log: $DIR/debootstrap.log)"
  nice -n 10 debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$DIR/debootstrap.log" 2>&1 ||
    die "debootstrap failed; see $DIR/debootstrap.log"
  # apt inside the images uses the host's Debian sources (updates, security)
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/debian.sources"
    : >"$root/etc/apt/sources.list"
  fi
  # packages' services are not started at install time (no init runs in a build)
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  # as small as an install can be: no recommends, no caches, no documentation;
  # and quick: dpkg does not fsync each file (a failed build is simply redone)
  cat >"$root/etc/apt/apt.conf.d/90chatd-image" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/90chatd-image" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
force-unsafe-io
EOF
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
}

cmd_base() {
  if podman image exists "$BASE"; then
    return 0
  fi
  mkdir -p "$DIR"
  if [[ ! -s $DIR/base.tar ]]; then
    need debootstrap debootstrap
    local root=$DIR/rootfs t0=$SECONDS
    rm -rf "$root" "$DIR/base.tar.tmp"
    mkdir -p "$root"
    make_rootfs "$root"
    tar --numeric-owner -C "$root" -cf "$DIR/base.tar.tmp" .
    rm -rf "$root"
    mv "$DIR/base.tar.tmp" "$DIR/base.tar"
    say "base made in $((SECONDS - t0)) s: $DIR/base.tar ($(du -m "$DIR/base.tar" | cut -f1) MB)"
  fi
  podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
    "$DIR/base.tar" "$BASE" >/dev/null 9>&-
  say "imported $BASE"
}

build_one() { # NAME
  local name=$1 ref old new t0=$SECONDS
  ref=$(image_of "$name")
  old=$(podman image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
  if ! nice -n 10 podman build --pull=never --format docker --layers \
    --build-arg BASE="$BASE" -t "$ref" -f "$(dockerfile_of "$name")" "$(context_of "$name")" \
    >"$DIR/build-$name.log" 2>&1 9>&-; then
    tail -n 30 "$DIR/build-$name.log" >&2
    die "building $ref failed; see $DIR/build-$name.log"
  fi
  new=$(podman image inspect --format '{{.Id}}' "$ref")
  if [[ -n $old && $old != "$new" ]]; then
    podman rmi "$old" >/dev/null 2>&1 || true # still used by a container: it stays
  fi
  say "$ref built in $((SECONDS - t0)) s"
}

cmd_sizes() {
  local n ref
  printf '%-40s %8s\n' IMAGE 'SIZE MB'
  for ref in "$BASE" $(for n in "${ALL[@]}"; do image_of "$n"; done); do
    if podman image exists "$ref"; then
      printf '%-40s %8s\n' "$ref" \
        "$(podman image inspect --format '{{.Size}}' "$ref" | awk '{ printf "%.0f", $1 / 1e6 }')"
    else
      printf '%-40s %8s\n' "$ref" missing
    fi
  done
}

cmd_build() {
  local names=("$@") n
  ((${#names[@]})) || names=("${ALL[@]}")
  for n in "${names[@]}"; do
    [[ -f $(dockerfile_of "$n") ]] || die "no image $n (one of: ${ALL[*]})"
  done
  need podman podman
  mkdir -p "$DIR"
  # one build at a time on this machine: a second waits for the first
  exec 9>"$DIR/build.lock"
  if ! flock -n 9; then
    local t0=$SECONDS
    say "waiting for the build already running (see $DIR/background.log)"
    flock 9
    say "waited $((SECONDS - t0)) s"
  fi
  cmd_base
  # two lanes: chatd's compile is CPU, the others mostly download and unpack,
  # so on two cores they overlap well
  local lane=() pid=
  for n in "${names[@]}"; do [[ $n == chatd ]] && pid=start || lane+=("$n"); done
  if [[ -n $pid ]]; then
    build_one chatd &
    pid=$!
  fi
  local rc=0
  for n in "${lane[@]}"; do build_one "$n" || { rc=1; break; }; done
  if [[ -n $pid ]]; then wait "$pid" || rc=1; fi
  ((rc == 0)) || die "some images failed to build"
  cmd_sizes
}

case ${1:-build} in
  build) shift || true; cmd_build "$@" ;;
  background)
    shift
    mkdir -p "$DIR"
    # its own session, so that it outlives the command that started it; no
    # output to the caller's terminal or pipe
    setsid "$0" build "$@" </dev/null >"$DIR/background.log" 2>&1 &
    say "building in the background (log: $DIR/background.log)"
    ;;
  base) need podman podman; cmd_base ;;
  sizes) cmd_sizes ;;
  list) for n in "${ALL[@]}"; do image_of "$n"; done ;;
  rm)
    for n in "${ALL[@]}"; do
      if podman image exists "$(image_of "$n")"; then podman rmi "$(image_of "$n")" >/dev/null; fi
    done
    # the cached layers of chatd's build stage (compilers)
    ids=$(podman images -a -q --filter label=io.chatd.stage=build | sort -u)
    # shellcheck disable=SC2086 # one id a word
    [[ -z $ids ]] || podman rmi -f $ids >/dev/null
    ;;
  -h | --help | help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) cmd_build "$@" ;;
esac
