#!/bin/bash
# Install the Debian 12 packages that lamina's build, tests, demo and
# benchmarks need, and load the fuse and overlay kernel modules.
#
# Safe to run again: when every package is already installed it runs
# neither "apt-get update" nor "apt-get install" and finishes in well under
# a second. Must run as root when something is missing.
set -euo pipefail

packages=(
	# build
	build-essential
	clang-format
	git
	# tar and compression for lamina export and import
	libarchive-dev
	zstd
	# FUSE tools and the other union filesystems the benchmarks compare
	fuse3
	fuse-overlayfs
	unionfs-fuse
	# mount, umount, losetup, unshare, nsenter, findmnt
	util-linux
	mount
	# modprobe
	kmod
	# tests
	python3
	python3-pytest
	attr
	acl
	rsync
	# makes mknod fail for the xattr whiteout tests
	strace
	tar
	gzip
	# mke2fs, for the test of an upper filesystem without d_type
	e2fsprogs
	# acceptance test: a Debian root filesystem as the lower layer
	debootstrap
	debian-archive-keyring
	gpgv
	ca-certificates
	# benchmarks
	hyperfine
	# man -l man/lamina.8
	man-db
	groff-base
)

# Print the packages from the list above that dpkg does not report as
# installed.
missing_packages() {
	local package status
	for package in "${packages[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
		if [ "$status" != "installed" ]; then
			echo "$package"
		fi
	done
}

mapfile -t missing < <(missing_packages)

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "install-deps.sh: missing packages: ${missing[*]}" >&2
		echo "install-deps.sh: run this script as root to install them" >&2
		exit 1
	fi
	echo "install-deps.sh: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt_options=(-q -y -o DPkg::Lock::Timeout=300)
	apt-get "${apt_options[@]}" update
	apt-get "${apt_options[@]}" install --no-install-recommends "${missing[@]}"
fi

# The modules may be built into the kernel, or the machine may not allow
# loading modules at all, so a failed modprobe is not an error as long as
# the kernel then lists the filesystem.
for fs in fuse overlay; do
	if ! grep -qw "$fs" /proc/filesystems; then
		modprobe "$fs" 2>/dev/null || true
	fi
	if ! grep -qw "$fs" /proc/filesystems; then
		echo "install-deps.sh: warning: the kernel has no $fs filesystem" \
			"and modprobe $fs did not load one" >&2
	fi
done

if [ ! -c /dev/fuse ]; then
	echo "install-deps.sh: warning: /dev/fuse is missing" >&2
fi
