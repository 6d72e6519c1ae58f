#!/bin/sh
# Makes the build context of deploy/container/Containerfile in DIR: one image root per
# platform, named for BuildKit's TARGETARCH and TARGETVARIANT (rootfs-amd64, rootfs-arm64,
# rootfs-armv7), holding every file of the image and nothing else:
#   /promlet                     that platform's static release binary
#   /etc/promlet/prometheus.yml  promlet's default config (src/config/default.yml)
#   /etc/passwd, /etc/group      the user and group 65532, promlet, so tools show a name
#   /data/                       the ring's volume, empty
# The release binaries must be built first (README: Builds and packaging).
# Usage: deploy/container/context.sh DIR
set -eu
out=${1:?usage: context.sh DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
for pair in amd64:x86_64-unknown-linux-musl arm64:aarch64-unknown-linux-musl \
            armv7:armv7-unknown-linux-gnueabihf; do
  platform=${pair%%:*}
  triple=${pair#*:}
  bin=$target_dir/$triple/release/promlet
  if [ ! -f "$bin" ]; then
    echo "context.sh: no $bin: cargo build --release --target $triple" >&2
    exit 1
  fi
  root=$out/rootfs-$platform
  rm -rf "$root"
  mkdir -p "$root/etc/promlet" "$root/data"
  # Modes set here, not left to the umask: COPY keeps them.
  chmod 0755 "$root" "$root/etc" "$root/etc/promlet"
  chmod 0700 "$root/data"
  install -m 0755 "$bin" "$root/promlet"
  install -m 0644 "$repo/src/config/default.yml" "$root/etc/promlet/prometheus.yml"
  printf 'promlet:x:65532:65532:promlet:/data:/sbin/nologin\n' > "$root/etc/passwd"
  printf 'promlet:x:65532:\n' > "$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
done
echo "context.sh: image roots for amd64, arm64 and arm/v7 in $out"
