#!/usr/bin/env bash
# Make a Docker engine and the mentorgym base image available on this machine.
# Idempotent: installs docker.io and debootstrap only if missing, starts dockerd only if no
# engine answers, and the base-image build is cached. Without root or apt it says why and
# exits 0, so that the Docker tests skip with the reason instead of failing.
set -u

log() { echo "docker_up: $*"; }

engine_up() { docker info >/dev/null 2>&1; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi

if [ -n "${DOCKER_HOST:-}" ] && engine_up; then
  log "using the engine at DOCKER_HOST=$DOCKER_HOST"
else
  if [ "$(id -u)" -ne 0 ]; then
    if engine_up; then
      log "an engine answers; not root, so the base image may not build (it needs debootstrap as root)"
    else
      log "not root and no Docker engine answers: run this script as root, or set DOCKER_HOST; Docker tests will skip"
      exit 0
    fi
  else
    missing=""
    command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
    command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
    if [ -n "$missing" ]; then
      if ! command -v apt-get >/dev/null 2>&1; then
        log "missing:$missing and no apt-get to install them; install them by hand. Docker tests will skip"
        exit 0
      fi
      log "installing$missing"
      if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing); then
        log "apt-get could not install$missing; Docker tests will skip"
        exit 0
      fi
    fi
    if ! engine_up; then
      DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
      log "starting dockerd (log: $DOCKERD_LOG)"
      nohup dockerd >"$DOCKERD_LOG" 2>&1 &
      for _ in $(seq 60); do
        engine_up && break
        sleep 1
      done
      if ! engine_up; then
        log "dockerd did not answer within 60 s; see $DOCKERD_LOG. Docker tests will skip"
        exit 0
      fi
    fi
    log "engine up"
  fi
fi

log "building the base image (cached after the first time)"
if ! "$PYTHON" -c 'from mentorgym.sandboxes.image import build_base; print(build_base())'; then
  log "the base image did not build (see the error above); Docker tests that need it will fail"
  exit 1
fi
