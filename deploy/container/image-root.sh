#!/usr/bin/env bash
# What `docker build` makes of deploy/container/Containerfile for one platform, as a plain
# directory: for machines with no container engine (./test.sh chroots into it). It applies the
# file's instructions to a context made by context.sh and refuses any it does not know, so the
# Containerfile cannot grow a step this copy would miss. Prints the image's config as shell
# assignments (IMAGE_USER, IMAGE_VOLUME, IMAGE_ENTRYPOINT, IMAGE_CMD; values without spaces).
# Needs root, for the owners COPY --chown gives.
# Usage: deploy/container/image-root.sh CONTEXT PLATFORM ROOT  (PLATFORM: linux/arm/v7, …)
set -euo pipefail
context=${1:?usage: image-root.sh CONTEXT PLATFORM ROOT}
platform=${2:?usage: image-root.sh CONTEXT PLATFORM ROOT}
root=${3:?usage: image-root.sh CONTEXT PLATFORM ROOT}
containerfile=$(dirname "$0")/Containerfile

fail() { echo "image-root.sh: $containerfile:$n: $*" >&2; exit 1; }

# BuildKit's platform arguments: linux/arm/v7 gives TARGETARCH=arm, TARGETVARIANT=v7.
IFS=/ read -r os TARGETARCH TARGETVARIANT <<< "$platform"
[ "$os" = linux ] || { echo "image-root.sh: $platform: linux platforms only" >&2; exit 1; }

# A JSON array of plain words (["/promlet", "--a=b"]) as the words, space-separated.
words() {
  local body=${1#[}
  [ "$body" != "$1" ] && [ "${body%]}" != "$body" ] || fail "not a JSON array: $1"
  body=${body%]}
  local out=() w
  IFS=, read -ra parts <<< "$body"
  for w in "${parts[@]}"; do
    w=${w#"${w%%[![:space:]]*}"}; w=${w%"${w##*[![:space:]]}"}
    [[ $w =~ ^\"([A-Za-z0-9_./:=@+-]+)\"$ ]] || fail "not a plain word: $w"
    out+=("${BASH_REMATCH[1]}")
  done
  echo "${out[*]}"
}

rm -rf "$root"
mkdir -p "$root"
user=0:0 volume= entrypoint= cmd= from=
n=0
while IFS= read -r line || [ -n "$line" ]; do
  n=$((n + 1))
  case "$line" in ''|'#'*) continue ;; esac
  read -r instruction args <<< "$line"
  case "$instruction" in
    FROM) [ "$args" = scratch ] || fail "FROM $args: only scratch"; from=scratch ;;
    ARG)
      case "$args" in TARGETARCH|TARGETVARIANT) ;; *) fail "ARG $args: unknown" ;; esac ;;
    COPY)
      chown=0:0
      if [[ $args == --chown=* ]]; then
        read -r option args <<< "$args"
        chown=${option#--chown=}
      fi
      read -r src dest extra <<< "$args"
      [ -z "$extra" ] && [ -n "$dest" ] || fail "COPY: one source and a destination"
      src=${src//'${TARGETARCH}'/$TARGETARCH}
      src=${src//'${TARGETVARIANT}'/$TARGETVARIANT}
      [[ $src != *'$'* ]] || fail "COPY: unknown variable in $src"
      [ -e "$context/$src" ] || fail "COPY: no $src in $context"
      mkdir -p "$root/$dest"
      # A directory's contents, as COPY copies them; owners as --chown says, root by default.
      cp -a "$context/$src/." "$root/$dest"
      chown -R "$chown" "$root/$dest"
      ;;
    USER) user=$args ;;
    VOLUME) volume=$args ;;
    EXPOSE) ;;
    ENTRYPOINT) entrypoint=$(words "$args") ;;
    CMD) cmd=$(words "$args") ;;
    *) fail "$instruction: not an instruction image-root.sh applies" ;;
  esac
done < "$containerfile"
n=end
[ "$from" = scratch ] || fail "no FROM scratch"
[ -n "$entrypoint" ] || fail "no ENTRYPOINT"
[[ $user =~ ^[0-9]+:[0-9]+$ ]] || fail "USER $user: numeric uid:gid expected"
[[ $volume =~ ^/[A-Za-z0-9_./-]*$ ]] || fail "VOLUME $volume: one plain path expected"
echo "IMAGE_USER=$user"
echo "IMAGE_VOLUME=$volume"
echo "IMAGE_ENTRYPOINT='$entrypoint'"
echo "IMAGE_CMD='$cmd'"
