#!/bin/sh
# Assembles the runtime root filesystem in $1 (run inside the image build, as root, on
# Debian 12): the named Debian packages and everything they depend on, unpacked whole from
# Debian's own .debs (no maintainer scripts, no dpkg, no shell, no package manager), plus
# the CA bundle, a passwd/group with the non-root user, and the dynamic linker's cache.
# Usage: rootfs.sh DIR PACKAGE...
set -eu
root=$1
shift
mkdir -p "$root" /tmp/debs
cd /tmp/debs

# The dependency closure: Depends and Pre-Depends only, virtual packages dropped (each has a
# real provider in the closure). ca-certificates is not unpacked: its postinst builds the
# bundle, so it is installed here and only the bundle copied.
apt-get update -qq
apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
  --no-breaks --no-replaces --no-enhances "$@" | grep '^[a-z0-9]' | sort -u)
# shellcheck disable=SC2086 # one word per package
apt-get download -qq $closure

# Debian 12 has a merged /usr: /bin, /lib, /lib64, /sbin are links into /usr, and packages
# still ship some files under the old paths, so the links must exist before unpacking.
mkdir -p "$root/usr/bin" "$root/usr/lib" "$root/usr/lib64" "$root/usr/sbin" "$root/etc" \
  "$root/var/lib/dpkg/status.d" "$root/tmp" "$root/usr/local/bin"
for d in bin lib lib64 sbin; do ln -sfn "usr/$d" "$root/$d"; done
chmod 1777 "$root/tmp"
for deb in ./*.deb; do
  dpkg-deb --fsys-tarfile "$deb" | tar -x --keep-directory-symlink -C "$root"
  # One status record per package (the layout distroless images use), so image scanners
  # see exactly which Debian package versions are inside.
  name=$(dpkg-deb -f "$deb" Package)
  { dpkg-deb -f "$deb"; echo "Status: install ok installed"; } >"$root/var/lib/dpkg/status.d/$name"
done

# Like Debian's slim images: no documentation but the copyright files, no manuals, no
# translations, no lintian overrides.
find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/locale" \
  "$root/usr/share/lintian" "$root/usr/share/bug"

mkdir -p "$root/etc/ssl/certs" "$root/usr/share/doc/ca-certificates"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
cp /usr/share/doc/ca-certificates/copyright "$root/usr/share/doc/ca-certificates/"

cat >"$root/etc/passwd" <<'PW'
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:65532:65532:personalize-gateway:/nonexistent:/usr/sbin/nologin
PW
cat >"$root/etc/group" <<'GR'
root:x:0:
nonroot:x:65532:
GR
# Kubernetes manages /etc/hosts and /etc/resolv.conf; read the first before DNS.
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
echo 'include /etc/ld.so.conf.d/*.conf' >"$root/etc/ld.so.conf"
ldconfig -r "$root"
rm -rf /tmp/debs
