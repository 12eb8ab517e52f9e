#!/usr/bin/env bash
# The system packages that the demo and the tests need, set up one way for every entry point:
# `make demo`, `make test` and `.ci/run` all run this script.
#
#   scripts/setup-system.sh           as root with apt-get: install what is missing (one
#                                     `apt-get update`); elsewhere: say what is missing and the
#                                     command that installs it. Exits 0 either way: the demo and
#                                     the tests skip only what needs a missing package.
#   scripts/setup-system.sh --check   only say what is missing; exit 1 if anything is.
#
# Add a package the demo or the tests come to need with one `need` line below.
set -euo pipefail

mode=install
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

default_fashion_dir=/usr/share/datasets/fashion-mnist
fashion_dir="${EMBEDREC_FASHION_MNIST_DIR:-$default_fashion_dir}"

has_cmd() {
  for name in "$@"; do
    command -v "$name" >/dev/null 2>&1 && return 0
  done
  return 1
}

has_fashion_mnist() {
  local name
  for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
    t10k-labels-idx1-ubyte; do
    [ -f "$fashion_dir/$name.gz" ] || return 1
  done
}

missing=()
reasons=()
# need PACKAGE "WHAT NEEDS IT" CHECK...: PACKAGE is missing when CHECK fails.
need() {
  local package=$1 why=$2
  shift 2
  if ! "$@"; then
    missing+=("$package")
    reasons+=("$package: $why")
  fi
}

survey() {
  missing=()
  reasons=()
  local where="looked for in $fashion_dir"
  if [ "$fashion_dir" != "$default_fashion_dir" ]; then
    where="$where from EMBEDREC_FASHION_MNIST_DIR; the package installs into $default_fashion_dir"
  fi
  need dataset-fashion-mnist "Fashion-MNIST for demo step 2 and the image tests ($where)" \
    has_fashion_mnist
  need wrk "the HTTP load test (benchmarks/load_test.py)" has_cmd wrk
  need docker-compose "validating docker-compose.yml in .ci/run" has_cmd docker-compose
  need chromium "the web app's browser test" has_cmd chromium chromium-browser
  need redis-server "the event stream tests, demo step and benchmarks/freshness.py" has_cmd redis-server
}

report() {
  echo "setup-system: missing system packages:"
  printf '  - %s\n' "${reasons[@]}"
  if has_cmd apt-get; then
    echo "setup-system: install them with: sudo scripts/setup-system.sh"
    echo "  (it runs: apt-get update && apt-get install --no-install-recommends ${missing[*]})"
  else
    echo "setup-system: no apt-get here; these are Debian/Ubuntu package names: install the"
    echo "  equivalents with this system's package manager (Fashion-MNIST: put its four .gz"
    echo "  files in a folder and point EMBEDREC_FASHION_MNIST_DIR at it)"
  fi
  echo "setup-system: until then the demo and the tests skip only what needs them"
}

install_missing() {
  export DEBIAN_FRONTEND=noninteractive
  echo "setup-system: installing ${missing[*]}"
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    local package  # one unavailable package must not keep the others out
    for package in "${missing[@]}"; do
      apt-get install -y -qq --no-install-recommends "$package" ||
        echo "setup-system: apt-get could not install $package"
    done
  fi
}

survey
if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup-system: every system package the demo and the tests use is installed"
  exit 0
fi
if [ "$mode" = check ]; then
  report
  exit 1
fi
if [ "$(id -u)" = 0 ] && has_cmd apt-get; then
  install_missing
  survey
  [ "${#missing[@]}" -eq 0 ] && exit 0
fi
report
exit 0
