#!/usr/bin/env bash
# Build the streamguard daemon image with podman, from a Debian 12 base made by mmdebstrap (no
# image registry is needed: only Debian's mirror and the Python package index).
#
#   deploy/container/build.sh [--variant cpu|cuda] [--tag NAME] [--force] [--keep-old]
#
# Prints the image reference on stdout (progress and figures go to stderr), e.g.
#   localhost/streamguard:cpu-3f9c2a1b7d0e
# and tags it NAME too (default localhost/streamguard:<variant>).
#
#   --variant cpu   (default) torch's CUDA build without what a CPU never loads (triton, cuSOLVER,
#                   NVTX: see select_packages.py); cuda: everything pip resolves.
#   --force         build even when an image of this exact source tree exists.
#   --keep-old      keep the images of older source trees (default: remove them, ~4 GB each).
#
# What it does:
#   1. installs podman, runc and mmdebstrap with apt-get when missing (root or sudo);
#   2. runs podman through podman.sh, which applies containers-vm.conf on hosts where podman's
#      defaults fail (this project's VMs: no systemd, low RLIMIT_NOFILE; see that file);
#   3. makes the base once per recipe: mmdebstrap bookworm minbase + python3.11, python3.11-venv,
#      ca-certificates, tini -> podman import -> localhost/streamguard-base:bookworm-<hash>;
#   4. hashes the package sources (pyproject.toml, setup.py, README.md, streamguard/, training/,
#      this directory) and the variant: an image of that hash is reused (the test's cache);
#   5. podman build --format docker (HEALTHCHECK needs it) with host networking, the host's pip
#      configuration as build arguments and its local wheel store (find-links, file:// indexes,
#      constraint file) bind-mounted read-only at the same paths: torch comes from disk. pip's
#      `cert` (a CA bundle, e.g. for a TLS-inspecting proxy) is mounted and used the same way.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian), PYTHON (for reading the
# host's pip configuration; default python3), SG_PODMAN_PROFILE (podman.sh), SG_BUILD_CACHE
# (default ~/.cache/streamguard-build: the pip download cache of the build).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
variant=cpu
tag=
force=0
keep_old=0
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --force) force=1; shift ;;
        --keep-old) keep_old=1; shift ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$variant" in cpu|cuda) ;; *) echo "build.sh: --variant must be cpu or cuda" >&2; exit 2 ;; esac
tag=${tag:-localhost/streamguard:$variant}
say() { echo "build.sh: $*" >&2; }

# --- 1. tools -------------------------------------------------------------------------------
missing=()
for tool in podman:podman runc:runc mmdebstrap:mmdebstrap; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]}; install them with your package manager"; exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
        say "missing ${missing[*]}; install them with apt-get as root"; exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
podman() { "$here/podman.sh" "$@"; }
podman info >/dev/null || { say "podman cannot run here (podman info failed, see above)"; exit 1; }

cache=${SG_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamguard-build}
mkdir -p "$cache/pip"
started=$(date +%s)

# --- 3. the base image ------------------------------------------------------------------------
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
base_packages=python3.11,python3.11-venv,ca-certificates,tini
base_recipe="bookworm minbase $base_packages $mirror v1"
base="localhost/streamguard-base:bookworm-$(printf '%s' "$base_recipe" | sha256sum | cut -c1-12)"
if ! podman image exists "$base"; then
    say "making the base $base with mmdebstrap (about 2 minutes)"
    tarball=$(mktemp "$cache/base.XXXXXX.tar")
    # minbase without recommends, docs, man pages or translations (copyright files are kept).
    nice -n 10 mmdebstrap --quiet --variant=minbase --include="$base_packages" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$tarball" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb ${mirror%/debian}/debian-security bookworm-security main" >&2
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$base" >/dev/null
    rm -f "$tarball"
fi

# --- 4. the build context and its hash --------------------------------------------------------
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/src" "$context/container"
cd "$root"
if git rev-parse --git-dir >/dev/null 2>&1; then
    # What a commit of this checkout would hold: tracked + untracked, not ignored.
    mapfile -d '' files < <(git ls-files -z --cached --others --exclude-standard -- \
        pyproject.toml setup.py README.md streamguard training)
    commit=$(git rev-parse HEAD)
    git diff --quiet HEAD -- . 2>/dev/null || commit="$commit-dirty"
else
    mapfile -d '' files < <(find pyproject.toml setup.py README.md streamguard training \
        -type f ! -path '*/__pycache__/*' -print0)
    commit=unknown
fi
for f in "${files[@]}"; do
    [ -f "$f" ] || continue  # deleted but still in the index
    mkdir -p "$context/src/$(dirname "$f")"
    cp -p "$f" "$context/src/$f"
done
cp -p "$here"/{Containerfile,install-venv.sh,select_packages.py,streamguard.toml,probe.py} \
    "$context/container/"
source_hash=$(cd "$context" && find src container -type f -print0 | LC_ALL=C sort -z \
    | xargs -0 sha256sum | { cat; echo "$variant $base"; } | sha256sum | cut -c1-12)
image="localhost/streamguard:$variant-$source_hash"

if [ "$force" -eq 0 ] && podman image exists "$image"; then
    podman tag "$image" "$tag"
    say "$image is up to date (same sources); --force rebuilds it"
    echo "$image"
    exit 0
fi

# --- 5. pip's configuration and local wheel store ---------------------------------------------
declare -A pip_values=()
mounts=()
add_mount() {  # a local path pip reads: the same path, read-only, inside the build
    local path=$1
    path=${path#file://}
    case "$path" in /*) ;; *) return ;; esac
    path=${path%/}
    # A PEP 503 index's pages link to ../../files: mount the folder above "simple".
    [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
    [ -e "$path" ] && mounts+=(--volume "$path:$path:ro")
}
if "${PYTHON:-python3}" -m pip --version >/dev/null 2>&1; then
    while IFS= read -r line; do
        key=${line%%=*}; key=${key#*.}
        value=${line#*=}; value=${value#\'}; value=${value%\'}
        case "$key" in find-links|extra-index-url|index-url|constraint|cert) ;; *) continue ;; esac
        for entry in $value; do
            case " ${pip_values[$key]:-} " in *" $entry "*) continue ;; esac
            pip_values[$key]="${pip_values[$key]:+${pip_values[$key]} }$entry"
            add_mount "$entry"
        done
    done < <("${PYTHON:-python3}" -m pip config list 2>/dev/null)
fi
say "pip inside the build: find-links='${pip_values[find-links]:-}'" \
    "extra-index-url='${pip_values[extra-index-url]:-}' constraint='${pip_values[constraint]:-}'"

# --- build --------------------------------------------------------------------------------------
say "building $image ($variant) from $base"
nice -n 10 "$here/podman.sh" build --format docker --layers=false --network host \
    --file "$context/container/Containerfile" --tag "$image" --tag "$tag" \
    --build-arg BASE="$base" --build-arg VARIANT="$variant" \
    --build-arg PIP_FIND_LINKS="${pip_values[find-links]:-}" \
    --build-arg PIP_EXTRA_INDEX_URL="${pip_values[extra-index-url]:-}" \
    --build-arg PIP_INDEX_URL="${pip_values[index-url]:-}" \
    --build-arg PIP_CONSTRAINT="${pip_values[constraint]:-}" \
    --build-arg PIP_CERT="${pip_values[cert]:-}" \
    --build-arg SOURCE_HASH="$source_hash" --build-arg GIT_COMMIT="$commit" \
    --volume "$cache/pip:/root/.cache/pip" "${mounts[@]}" \
    "$context" >&2

if [ "$keep_old" -eq 0 ]; then
    for old in $(podman images --format '{{.Repository}}:{{.Tag}}' \
        | grep -E "^localhost/streamguard:$variant-[0-9a-f]{12}$" | grep -vx "$image"); do
        podman rmi "$old" >/dev/null 2>&1 && say "removed the older image $old" || true
    done
fi
size=$(podman image inspect --format '{{.Size}}' "$image")
say "$image built in $(($(date +%s) - started)) s; size $((size / 1000000)) MB (uncompressed)"
echo "$image"
