#!/usr/bin/env bash
# Installs Lockstep's build and test dependencies (Debian 12 packages), idempotently:
# packages already present are not reinstalled, and apt is not touched when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config ccache clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libsqlite3-dev libcurl4-openssl-dev libspdlog-dev libfmt-dev
  libboost-dev libboost-filesystem-dev
  libgtest-dev libgmock-dev libyaml-cpp-dev nlohmann-json3-dev libcpp-httplib-dev
  libssl-dev libarchive-dev libpq-dev
)
if [[ "${LOCKSTEP_TEST_DEPS:-0}" == 1 ]]; then
  PACKAGES+=(prometheus openssl chromium fonts-liberation)  # fonts: chromium only recommends them
  # Regional artifact mirrors are tested behind a real caching nginx (tests/integration/nginx).
  PACKAGES+=(nginx-light)
  # The high-availability tests start a PostgreSQL 15 of their own (tests/support/postgres_server).
  PACKAGES+=(postgresql-15)
  # The fuzz targets (tests/fuzz, scripts/fuzz.sh): clang 14 with its libFuzzer and sanitizer
  # runtimes (libclang-rt-14-dev), and llvm-symbolizer (llvm) for readable sanitizer stacks.
  PACKAGES+=(clang libclang-rt-14-dev llvm)
  # The browser tests (tests/browser) run on Node.js; Debian's is enough.
  if ! command -v node >/dev/null 2>&1; then PACKAGES+=(nodejs npm); fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# playwright-core for the browser tests, at the version pinned in tests/browser/package-lock.json
# (1.57: the newest that runs on Debian 12's Node.js 18). It drives Debian's chromium
# (installed above); it never downloads a browser of its own. Installed again when the pin
# changes.
if [[ "${LOCKSTEP_TEST_DEPS:-0}" == 1 ]]; then
  browser="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
  node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
  if ((node_major < 18)); then
    echo "setup: the browser tests need Node.js 18 or newer; found $(node --version 2>/dev/null || echo none)" >&2
    exit 1
  fi
  want="$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$browser/package.json")"
  have="$(node -p 'require(process.argv[1]).version' "$browser/node_modules/playwright-core/package.json" 2>/dev/null || true)"
  if [[ "$have" != "$want" ]]; then
    echo "setup: installing the browser tests' npm packages (playwright-core $want)"
    npm ci --prefix "$browser" --no-audit --no-fund >/dev/null
  fi
fi
