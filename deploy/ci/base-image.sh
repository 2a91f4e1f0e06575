#!/usr/bin/env bash
# Makes the Debian 12 base image the gateway's image builds FROM, without any registry:
# debootstrap (minbase) from the package source this machine's apt is configured with, read
# from apt at run time (no mirror or registry host is written in the repository), trimmed like
# Debian's own "slim" images, then `podman import`ed.
#
# Usage: deploy/ci/base-image.sh [IMAGE]   (default localhost/pgw-base/debian:12)
# Prints the image name. An image made less than PGW_BASE_MAX_AGE_DAYS (default 7) days ago
# is reused: podman's store outlives CI runs on a machine that is kept, so most runs skip this.
set -euo pipefail

image=${1:-localhost/pgw-base/debian:12}
max_age_days=${PGW_BASE_MAX_AGE_DAYS:-7}
podman=(podman --runtime runc --cgroup-manager cgroupfs)

if created=$("${podman[@]}" image inspect --format '{{.Created.Unix}}' "$image" 2>/dev/null); then
  age=$(($(date +%s) - created))
  if [ "$age" -lt $((max_age_days * 86400)) ]; then
    echo "base image $image reused (made $((age / 3600)) h ago)" >&2
    echo "$image"
    exit 0
  fi
fi

# The configured Debian sources for bookworm, as apt itself parsed them (one-line or deb822
# files alike): "URI SUITE" pairs for the suites the image's apt should use. apt lists only
# the targets it has downloaded indexes for, so update once if there are none.
configured_sources() {
  # shellcheck disable=SC2016 # $(...) here is apt's format syntax, not the shell's
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' \
    'Target-Of: deb' | awk '$2 ~ /^bookworm(-updates|-security)?$/ && $3 == "main" {print $1, $2}' | sort -u
}
mapfile -t sources < <(configured_sources)
if [ "${#sources[@]}" -eq 0 ]; then
  apt-get update -qq
  mapfile -t sources < <(configured_sources)
fi
main_uri=""
for s in "${sources[@]}"; do
  read -r uri suite <<<"$s"
  [ "$suite" = bookworm ] && main_uri=$uri
done
if [ -z "$main_uri" ]; then
  echo "base-image: apt has no Debian bookworm main source configured (run apt-get update?)" >&2
  exit 1
fi

work=$(mktemp -d /var/tmp/pgw-rootfs.XXXXXX)
cleanup() {
  # debootstrap may leave proc/sys mounted inside the tree when it fails half-way.
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
rootfs=$work/rootfs

# The archive signature is checked against Debian's keyring: a source that is not Debian's
# fails here rather than producing an image.
debootstrap --variant=minbase --arch=amd64 --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
  bookworm "$rootfs" "$main_uri" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# apt inside the image: the same suites as this machine (bookworm, -updates, -security), in
# deb822 form, and the machine's date checks (a snapshot mirror has an old Release date).
rm -f "$rootfs/etc/apt/sources.list"
{
  for s in "${sources[@]}"; do
    read -r uri suite <<<"$s"
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n' "$uri" "$suite"
  done
} >"$rootfs/etc/apt/sources.list.d/debian.sources"
: >"$rootfs/etc/apt/apt.conf.d/50pgw-machine"
for opt in Acquire::Check-Valid-Until Acquire::Check-Date; do
  v=$(apt-config dump "$opt" | awk -v k="$opt" '$1 == k {gsub(/[";]/, "", $2); print $2}')
  [ -n "$v" ] && printf '%s "%s";\n' "$opt" "$v" >>"$rootfs/etc/apt/apt.conf.d/50pgw-machine"
done

# Slim: no documentation, manuals or translations, now or from later installs (the same
# dpkg path filters Debian's slim images use), and no package caches or lists.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90pgw-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
cat >"$rootfs/etc/apt/apt.conf.d/90pgw-slim" <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
CFG
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/{man,info,locale,lintian}/* "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/* \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old
for m in proc sys dev/pts dev; do umount -l "$rootfs/$m" 2>/dev/null || true; done

tar --numeric-owner --xattrs -C "$rootfs" -c . |
  "${podman[@]}" import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$image" >/dev/null
echo "base image $image made with debootstrap ($("${podman[@]}" image inspect --format '{{.Size}}' "$image") bytes)" >&2
echo "$image"
