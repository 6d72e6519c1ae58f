#!/usr/bin/env bash
# Builds promlet_<version>_<arch>.deb for amd64, arm64 and armhf in DIR from the release
# binaries, with dpkg-deb alone: a static binary has no shared-library dependencies for
# dpkg-shlibdeps to find, so debhelper or cargo-deb would add a toolchain and nothing else.
# Each package holds:
#   /usr/bin/promlet                      the static binary of that architecture
#   /lib/systemd/system/promlet.service   systemd/promlet.service
#   /etc/default/promlet                  systemd/promlet.default (flags; a conffile)
#   /etc/promlet/prometheus.yml           src/config/default.yml (a conffile)
#   /usr/share/doc/promlet/README.md, copyright
# No maintainer scripts: DynamicUser= needs no user created; `systemctl daemon-reload` and
# `systemctl enable --now promlet` are the operator's (README, Builds and packaging).
# The version is Cargo.toml's. Usage: deploy/deb/build.sh DIR
set -euo pipefail
out=${1:?usage: build.sh DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$repo/target}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
[ -n "$version" ] || { echo "build.sh: no version in Cargo.toml" >&2; exit 1; }
# Reproducible archives: file times from the last commit, not from this build.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
mkdir -p "$out"

for pair in amd64:x86_64-unknown-linux-musl arm64:aarch64-unknown-linux-musl \
            armhf:armv7-unknown-linux-gnueabihf; do
  arch=${pair%%:*}
  triple=${pair#*:}
  bin=$target_dir/$triple/release/promlet
  [ -f "$bin" ] || { echo "build.sh: no $bin: cargo build --release --target $triple" >&2; exit 1; }
  stage=$(mktemp -d)
  install -D -m 0755 "$bin" "$stage/usr/bin/promlet"
  install -D -m 0644 "$repo/systemd/promlet.service" "$stage/lib/systemd/system/promlet.service"
  install -D -m 0644 "$repo/systemd/promlet.default" "$stage/etc/default/promlet"
  install -D -m 0644 "$repo/src/config/default.yml" "$stage/etc/promlet/prometheus.yml"
  install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/promlet/README.md"
  cat > "$stage/usr/share/doc/promlet/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: promlet

Files: *
Copyright: the promlet authors
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
 .
 The binary links statically against Rust crates under MIT or Apache-2.0
 (and compatible) licences, and against musl (MIT) on amd64 and arm64 or the
 GNU C Library (LGPL-2.1+) on armhf.
COPYRIGHT
  chmod 0644 "$stage/usr/share/doc/promlet/copyright"
  mkdir -p "$stage/DEBIAN"
  printf '/etc/default/promlet\n/etc/promlet/prometheus.yml\n' > "$stage/DEBIAN/conffiles"
  installed_kib=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  description=$(sed -n 's/^description = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
  cat > "$stage/DEBIAN/control" <<CONTROL
Package: promlet
Version: $version
Architecture: $arch
Maintainer: promlet maintainers <dev@promlet>
Installed-Size: $installed_kib
Section: net
Priority: optional
Description: ${description%%:*}
 ${description#*: }.
 Reads prometheus.yml and takes the flags of prometheus --agent; runs as the
 systemd unit promlet.service (flags in /etc/default/promlet).
CONTROL
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
    | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
  chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/conffiles" "$stage/DEBIAN/md5sums"
  find "$stage" -type d -exec chmod 0755 {} +
  dpkg-deb --root-owner-group --build "$stage" "$out/promlet_${version}_${arch}.deb" >/dev/null
  rm -rf "$stage"
  echo "$out/promlet_${version}_${arch}.deb"
done
