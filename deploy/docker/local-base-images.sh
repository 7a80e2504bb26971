#!/bin/sh
# Builds local stand-ins for the Dockerfile's base images, for a machine whose Docker Engine can
# reach no container registry (nothing can be pulled) but can install Debian packages:
#
#   runtime  ffd-base/debian:<release>-slim   debootstrap of the Dockerfile's RUNTIME_IMAGE release
#   build    ffd-base/rust:<rustc>-<release>  the same release plus gcc and libc6-dev (the linker
#                                             rustc calls) and CA certificates, with this
#                                             machine's Rust toolchain (`rustc --print sysroot`,
#                                             cargo included) copied to /usr/local/rust
#
# and, with `--prometheus`, the Prometheus stand-in the compose stack uses (deploy/docker/
# prometheus.Dockerfile: Debian's `prometheus` package on the runtime image); with `--nats`, the
# NATS stand-in the cluster compose file uses (deploy/docker/nats.Dockerfile: Debian's
# `nats-server` package on the runtime image).
#
# Use them through the Dockerfile's own build arguments; the last lines this script prints are
# those arguments, e.g.
#
#   docker build --network host $(deploy/docker/local-base-images.sh) -t ffd .
#
# Crates: the build stage fetches them from crates.io over the host's network (`docker build
# --network host`) rather than from a `cargo vendor` directory in the build context. Vendoring
# would need a source-replacement `.cargo/config.toml` in the context and a few hundred MB of
# sources sent with every build, so the Dockerfile a user builds would no longer be the one
# tested; the host network reaches crates.io exactly as cargo on the host does (no bridge NAT or
# container DNS in the way), and BuildKit's cache mount keeps the downloaded crates for the
# next build.
#
# Idempotent: an image that exists is kept (`--force` rebuilds the images). The debootstrap
# root filesystems are cached as tarballs in $FFD_BASE_IMAGE_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/ffd/base-images; delete it to bootstrap again), so a rebuild
# after `docker system prune` needs no download. Needs root (for debootstrap), the Debian
# package debootstrap and a Docker Engine. DEBIAN_MIRROR overrides debootstrap's default mirror.
#
# Also the build trusts the certificate authorities the host trusts (the host's CA bundle is
# copied in), so a host behind a TLS-inspecting proxy reaches crates.io from the build too.
set -eu

usage() {
    echo "usage: $0 [--force] [--prometheus] [--nats]" >&2
    exit 2
}

force=0
prometheus=0
nats=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --prometheus) prometheus=1 ;;
        --nats) nats=1 ;;
        *) usage ;;
    esac
done

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# The release comes from the Dockerfile's default runtime image, so the stand-ins follow it.
release="$(sed -n 's/^ARG RUNTIME_IMAGE=debian:\([a-z]*\)-slim$/\1/p' "$repo/Dockerfile")"
if [ -z "$release" ]; then
    echo "$0: no 'ARG RUNTIME_IMAGE=debian:<release>-slim' line in $repo/Dockerfile" >&2
    exit 1
fi

rust_version="$(rustc --version | cut -d' ' -f2)"
sysroot="$(rustc --print sysroot)"
runtime_image="ffd-base/debian:$release-slim"
rust_image="ffd-base/rust:$rust_version-$release"
prometheus_image="ffd-base/prometheus:$release"
nats_image="ffd-base/nats:$release"

cache="${FFD_BASE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ffd/base-images}"
mkdir -p "$cache/debs"
# Absolute: debootstrap's --cache-dir needs it.
cache="$(cd "$cache" && pwd)"

# One run at a time (tests may start several at once): the others wait, then find the images.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$cache/lock"
    flock 9
fi

log() {
    echo "local-base-images: $*" >&2
}

have_image() {
    [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1
}

work=""
cleanup() {
    if [ -n "$work" ]; then
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
work="$(mktemp -d "$cache/work.XXXXXX")"

# rootfs_tarball NAME INCLUDE: a debootstrap (variant minbase) of $release with the packages in
# INCLUDE, slimmed like Debian's -slim images (no documentation, manuals, locales or apt lists),
# cached as $cache/NAME.tar.gz. Prints the tarball's path.
rootfs_tarball() {
    tarball="$cache/$1.tar.gz"
    if [ -s "$tarball" ]; then
        log "cached root filesystem $tarball"
        echo "$tarball"
        return
    fi
    root="$work/$1"
    log "debootstrap $release ($1) into $root"
    # The .deb files stay in $cache/debs, shared by both root filesystems and later runs.
    # shellcheck disable=SC2086 # DEBIAN_MIRROR is one optional word.
    debootstrap --variant=minbase --cache-dir="$cache/debs" ${2:+--include="$2"} \
        "$release" "$root" ${DEBIAN_MIRROR:-} >&2
    # What Debian's -slim images leave out, and keep out of later installs.
    cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root/usr/share/man/"* "$root/usr/share/info/"* "$root/var/lib/apt/lists/"* \
        "$root/var/cache/apt/"*.bin "$root/var/cache/apt/archives/"*.deb "$root/var/log/"*.log
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias \
        -exec rm -rf {} +
    tar --numeric-owner -C "$root" -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
    echo "$tarball"
}

if have_image "$runtime_image"; then
    log "$runtime_image exists"
else
    tarball="$(rootfs_tarball "debian-$release-minbase" "")"
    log "docker import $runtime_image"
    docker import --change 'CMD ["bash"]' "$tarball" "$runtime_image" >/dev/null
fi

if have_image "$rust_image"; then
    log "$rust_image exists"
else
    tarball="$(rootfs_tarball "debian-$release-build" "gcc,libc6-dev,ca-certificates")"
    root="$work/rust"
    mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
    tar -C "$root" -xzf "$tarball"
    # The toolchain's binaries and libraries (rustc finds its sysroot next to itself), not its
    # 800 MB of documentation. `cargo` here is the real one, not rustup's proxy.
    log "copy the Rust toolchain $rust_version from $sysroot"
    for dir in bin lib libexec; do
        if [ -d "$sysroot/$dir" ]; then
            cp -a "$sysroot/$dir" "$root/usr/local/rust/"
        fi
    done
    # The build reaches crates.io as the host does, so it trusts the certificate authorities the
    # host trusts (a host behind a TLS-inspecting proxy has its own CA among them).
    if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    fi
    log "docker import $rust_image"
    # The official rust images' layout: CARGO_HOME=/usr/local/cargo (the Dockerfile's cache
    # mount for the registry sits there), cargo and rustc on PATH.
    path=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin
    path=$path:/usr/sbin:/usr/bin:/sbin:/bin
    tar --numeric-owner -C "$root" -c . | docker import \
        --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change "ENV PATH=$path" \
        --change 'CMD ["bash"]' \
        - "$rust_image" >/dev/null
    rm -rf "$root"
fi

if [ "$prometheus" = 1 ]; then
    if have_image "$prometheus_image"; then
        log "$prometheus_image exists"
    else
        log "docker build $prometheus_image"
        # Host network: apt inside the build reaches Debian's mirror as the host does.
        docker build --network host --build-arg "RUNTIME_IMAGE=$runtime_image" \
            -f "$here/prometheus.Dockerfile" -t "$prometheus_image" "$here" >&2
    fi
fi

if [ "$nats" = 1 ]; then
    if have_image "$nats_image"; then
        log "$nats_image exists"
    else
        log "docker build $nats_image"
        docker build --network host --build-arg "RUNTIME_IMAGE=$runtime_image" \
            -f "$here/nats.Dockerfile" -t "$nats_image" "$here" >&2
    fi
fi

echo "--build-arg RUST_IMAGE=$rust_image"
echo "--build-arg RUNTIME_IMAGE=$runtime_image"
