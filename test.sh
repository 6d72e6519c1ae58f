#!/usr/bin/env bash
# promlet's whole test suite in one command, on a fresh Debian (12) machine.
# It installs what it needs (Debian packages, Rust components and targets), then runs:
# rustfmt, clippy, the host test suite (unit, CLI, the differential test against promtool),
# the library's unit tests on aarch64 and armv7 under qemu-user, the static release builds,
# each run end to end (under qemu for ARM) against node_exporter and Prometheus, and the
# packaging: Cross.toml, the systemd unit (systemd-analyze), the FROM-scratch image's root run
# chrooted, the .deb packages. Needs root (sudo for apt-get is not enough: the image root is
# chowned and chrooted into), and rustup's cargo.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

DEBIAN_PACKAGES=(
  prometheus                 # promtool: the reference for check config (differential test)
  prometheus-node-exporter   # a real scrape target
  victoria-metrics           # second receiver and vmagent, the peer to compare against
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross    # aarch64 linker
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross  # armv7 linker
  qemu-user-static           # runs the ARM tests and binaries
  file                       # reports static linking
  openssl                    # test certificates and a TLS server for the sender's TLS test
  python3-venv               # a venv for kubernetes-validate (deploy/k8s manifests)
  systemd                    # systemd-analyze checks systemd/promlet.service
  strace                     # traces promlet's syscalls against the unit's filter
)
RUST_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf x86_64-unknown-linux-musl)

step "installing Debian packages"
missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
echo "debian packages: ok"

step "installing Rust components and targets"
if ! command -v cargo >/dev/null || ! command -v rustup >/dev/null; then
  echo "cargo and rustup are needed: install them from https://rustup.rs, then rerun ./test.sh" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null
rustup target add "${RUST_TARGETS[@]}" >/dev/null
echo "rust $(rustc --version), targets: ${RUST_TARGETS[*]}"

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
# Runs cargo test with its output kept for the final count.
cargo_test() { cargo test "$@" 2>&1 | tee -a "$LOG"; }

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --all-targets -- -D warnings

# The manifests' schema, offline: kubernetes-validate ships the OpenAPI schemas of each
# Kubernetes version. Pinned, in a venv under target/ so the system Python is left alone.
KUBERNETES_VALIDATE=1.37.0
KUBERNETES_VERSION=1.29.0
step "kubernetes manifests (kubernetes-validate $KUBERNETES_VALIDATE, Kubernetes $KUBERNETES_VERSION, strict)"
venv="target/kubernetes-validate-$KUBERNETES_VALIDATE"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KUBERNETES_VALIDATE"
fi
manifests=(deploy/k8s/*.yaml)
"$venv/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet "${manifests[@]}"
echo "${#manifests[@]} manifests valid: ${manifests[*]}"

step "tests on the host (unit, CLI, differential against promtool $(promtool --version 2>&1 | awk 'NR==1{print $3}'))"
cargo_test --all-targets -- --nocapture --test-threads=2

for target in aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf; do
  step "unit tests on $target under qemu"
  cargo_test --lib --target "$target"
done

step "static release builds"
for target in "${RUST_TARGETS[@]}"; do
  cargo build --release --quiet --target "$target"
  bin="target/$target/release/promlet"
  desc=$(file -b "$bin")
  case "$desc" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "$bin is not static: $desc" >&2; exit 1 ;;
  esac
  printf '%-32s %9d bytes  %s\n' "$target" "$(stat -c %s "$bin")" "${desc%%,*}"
done
# DESIGN.md's budget: the static aarch64 binary fits in 3 MiB of edge flash.
aarch64_bytes=$(stat -c %s target/aarch64-unknown-linux-musl/release/promlet)
if [ "$aarch64_bytes" -gt $((3 << 20)) ]; then
  echo "the aarch64 binary is $aarch64_bytes bytes, over the 3 MiB budget" >&2
  exit 1
fi

step "release binaries under qemu"
default_config=$(mktemp)
target/x86_64-unknown-linux-musl/release/promlet --print-default-config > "$default_config"
for pair in aarch64-unknown-linux-musl:qemu-aarch64-static armv7-unknown-linux-gnueabihf:qemu-arm-static; do
  target=${pair%%:*}; qemu=${pair##*:}
  "$qemu" "target/$target/release/promlet" --version
  "$qemu" "target/$target/release/promlet" check config "$default_config"
done
rm -f "$default_config"

# Which qemu-user runs each release binary here; none for the host's own.
declare -A RUNNER=([x86_64-unknown-linux-musl]="" [aarch64-unknown-linux-musl]=qemu-aarch64-static
                   [armv7-unknown-linux-gnueabihf]=qemu-arm-static)

# cross itself needs a container engine, absent here (README: Builds and packaging).
step "Cross.toml agrees with .cargo/config.toml"
python3 - "${RUST_TARGETS[@]}" <<'PY'
import sys, tomllib
cross = tomllib.load(open("Cross.toml", "rb"))["target"]
cargo = tomllib.load(open(".cargo/config.toml", "rb"))["target"]
for t in sys.argv[1:]:
    assert t in cross, f"Cross.toml has no [target.{t}]"
    flags = " ".join(cargo[t].get("rustflags", []))
    if flags:
        env = f"CARGO_TARGET_{t.upper().replace('-', '_')}_RUSTFLAGS={flags}"
        passed = cross[t].get("env", {}).get("passthrough", [])
        assert env in passed, f"Cross.toml: [target.{t}.env] passthrough lacks {env}"
print("Cross.toml: a table for each of", ", ".join(sys.argv[1:]), "with .cargo/config.toml's rustflags")
PY

step "systemd unit: systemd-analyze verify and security --offline (exposure at most 2.0)"
unit_dir=$(mktemp -d)
# verify refuses a unit whose ExecStart binary does not exist, and /usr/bin/promlet is not
# installed on this machine (the .deb is only built here), so it checks a copy that names the
# built amd64 binary instead; the copy differs from the unit in that path only.
sed "s|^ExecStart=/usr/bin/promlet |ExecStart=$PWD/target/x86_64-unknown-linux-musl/release/promlet |" \
  systemd/promlet.service > "$unit_dir/promlet.service"
[ "$(diff systemd/promlet.service "$unit_dir/promlet.service" | grep -c '^[<>]')" = 2 ] ||
  { echo "the unit's ExecStart line is not the one this step rewrites" >&2; exit 1; }
# verify exits 0 after warning about an unknown key or a bad value: any output fails the step.
verify=$(systemd-analyze verify "$unit_dir/promlet.service" 2>&1)
rm -rf "$unit_dir"
if [ -n "$verify" ]; then echo "$verify" >&2; exit 1; fi
security=$(systemd-analyze security --offline=true systemd/promlet.service 2>&1)
if grep -E '^/.*:[0-9]+: ' <<< "$security" >&2; then exit 1; fi
grep '✗' <<< "$security" || true
exposure=$(sed -n 's/.*Overall exposure level for promlet.service: \([0-9.]*\).*/\1/p' <<< "$security")
[ -n "$exposure" ] || { echo "$security" >&2; echo "no exposure level found" >&2; exit 1; }
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || { echo "exposure $exposure is over 2.0" >&2; exit 1; }
echo "systemd-analyze verify: no findings; exposure level $exposure (at most 2.0)"

# tests/release.rs: each binary as it ships; the syscalls of each run traced (strace, or
# qemu's -strace) and held to the unit's SystemCallFilter and RestrictAddressFamilies.
step "release binaries end to end (node_exporter → promlet → Prometheus), syscalls traced"
for target in "${RUST_TARGETS[@]}"; do
  PROMLET_E2E_BIN="target/$target/release/promlet" PROMLET_E2E_RUNNER="${RUNNER[$target]}" \
    cargo_test --test release -- --nocapture
done

# No container engine here: deploy/container/image-root.sh applies the Containerfile to the
# context deploy/container/context.sh makes, and the binary runs chrooted in that root as the
# image's user. For ARM the static qemu is copied in; nothing else is added.
step "container image root (FROM scratch), chrooted as the image's user"
[ "$(id -u)" = 0 ] || { echo "this step needs root: it chowns the image root and chroots into it" >&2; exit 1; }
context="$PWD/target/container"
deploy/container/context.sh "$context"
for pair in linux/amd64:x86_64-unknown-linux-musl linux/arm64:aarch64-unknown-linux-musl \
            linux/arm/v7:armv7-unknown-linux-gnueabihf; do
  platform=${pair%%:*}; target=${pair#*:}; qemu=${RUNNER[$target]}
  root="$context/image-${platform//\//-}"
  eval "$(deploy/container/image-root.sh "$context" "$platform" "$root")"
  files=$(cd "$root" && find . -printf '%M %U:%G %p\n' | sort -k3 | tr '\n' ' ')
  expected="drwxr-xr-x 0:0 . drwx------ 65532:65532 ./data drwxr-xr-x 0:0 ./etc -rw-r--r-- 0:0 ./etc/group -rw-r--r-- 0:0 ./etc/passwd drwxr-xr-x 0:0 ./etc/promlet -rw-r--r-- 0:0 ./etc/promlet/prometheus.yml -rwxr-xr-x 0:0 ./promlet "
  [ "$files" = "$expected" ] || { echo "$platform image root: $files" >&2; exit 1; }
  grep -q "^promlet:x:${IMAGE_USER%%:*}:${IMAGE_USER##*:}:" "$root/etc/passwd"
  runner=(chroot "--userspec=$IMAGE_USER" "$root")
  if [ -n "$qemu" ]; then cp "$(command -v "$qemu")" "$root/"; runner+=("/$qemu"); fi
  config=; storage=
  for word in $IMAGE_CMD; do
    case "$word" in
      --config.file=*) config=${word#*=} ;;
      --storage.agent.path=*) storage=${word#*=} ;;
    esac
  done
  [ "$storage" = "$IMAGE_VOLUME" ] || { echo "CMD's ring is in $storage, the VOLUME is $IMAGE_VOLUME" >&2; exit 1; }
  echo "$platform: $files"
  "${runner[@]}" $IMAGE_ENTRYPOINT --version
  "${runner[@]}" $IMAGE_ENTRYPOINT check config "$config"
  PROMLET_E2E_ROOT="$root" PROMLET_E2E_STORAGE="$IMAGE_VOLUME" PROMLET_E2E_BIN="$IMAGE_ENTRYPOINT" \
    PROMLET_E2E_RUNNER="${runner[*]}" \
    cargo_test --test release -- --nocapture --exact scrapes_node_exporter_and_remote_writes_to_prometheus
  ls -ln "$root$IMAGE_VOLUME"
done

step ".deb packages (dpkg-deb -I and -c; unpacked with dpkg-deb -x, never installed)"
deploy/deb/build.sh target/deb
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb_expected="drwxr-xr-x root/root ./
drwxr-xr-x root/root ./etc/
drwxr-xr-x root/root ./etc/default/
-rw-r--r-- root/root ./etc/default/promlet
drwxr-xr-x root/root ./etc/promlet/
-rw-r--r-- root/root ./etc/promlet/prometheus.yml
drwxr-xr-x root/root ./lib/
drwxr-xr-x root/root ./lib/systemd/
drwxr-xr-x root/root ./lib/systemd/system/
-rw-r--r-- root/root ./lib/systemd/system/promlet.service
drwxr-xr-x root/root ./usr/
drwxr-xr-x root/root ./usr/bin/
-rwxr-xr-x root/root ./usr/bin/promlet
drwxr-xr-x root/root ./usr/share/
drwxr-xr-x root/root ./usr/share/doc/
drwxr-xr-x root/root ./usr/share/doc/promlet/
-rw-r--r-- root/root ./usr/share/doc/promlet/README.md
-rw-r--r-- root/root ./usr/share/doc/promlet/copyright"
for triple in amd64:x86_64-unknown-linux-musl:x86-64 arm64:aarch64-unknown-linux-musl:"ARM aarch64" \
              armhf:armv7-unknown-linux-gnueabihf:"ARM, EABI5"; do
  IFS=: read -r arch target elf <<< "$triple"
  deb="target/deb/promlet_${version}_$arch.deb"
  [ "$(dpkg-deb -f "$deb" Package Version Architecture)" = "Package: promlet
Version: $version
Architecture: $arch" ]
  [ "$(dpkg-deb -I "$deb" conffiles)" = "/etc/default/promlet
/etc/promlet/prometheus.yml" ]
  contents=$(dpkg-deb -c "$deb" | awk '{ print $1, $2, $6 }')
  [ "$contents" = "$deb_expected" ] || { echo "$deb holds:" >&2; echo "$contents" >&2; exit 1; }
  unpacked=$(mktemp -d)
  dpkg-deb -x "$deb" "$unpacked"
  cmp "$unpacked/usr/bin/promlet" "target/$target/release/promlet"
  cmp "$unpacked/lib/systemd/system/promlet.service" systemd/promlet.service
  cmp "$unpacked/etc/default/promlet" systemd/promlet.default
  cmp "$unpacked/etc/promlet/prometheus.yml" src/config/default.yml
  file -b "$unpacked/usr/bin/promlet" | grep -q "$elf" || { echo "$deb: not $elf" >&2; exit 1; }
  qemu=${RUNNER[$target]}
  [ "$(${qemu:+"$qemu"} "$unpacked/usr/bin/promlet" --version)" = "promlet $version" ]
  ${qemu:+"$qemu"} "$unpacked/usr/bin/promlet" check config "$unpacked/etc/promlet/prometheus.yml" >/dev/null
  rm -rf "$unpacked"
  printf '%-28s %9d bytes: %d paths as expected, conffiles, %s binary runs, its config checks valid\n' \
    "$(basename "$deb")" "$(stat -c %s "$deb")" "$(wc -l <<< "$contents")" "$elf"
done

step "summary"
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$LOG"
