#!/bin/bash
# Build lamina and walk through a small layer stack: two read-only lower
# layers and a writable upper layer, merged by lamina. Shows the merged
# view, copy-up on write, a whiteout after a deletion, an opaque directory,
# and that the lower layers stay unchanged.
#
# Run as root from anywhere: scripts/demo.sh
# Everything lives in a fresh directory under /tmp, which is unmounted and
# removed on every exit, including errors and Ctrl-C.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "demo.sh: must run as root, because it mounts a filesystem" >&2
	exit 1
fi

"$repo/scripts/install-deps.sh"
make -s -C "$repo"
lamina=${LAMINA:-$repo/build/lamina}

demo=$(mktemp -d /tmp/lamina-demo.XXXXXX)
merged=$demo/merged

# Unmount the demo mount if it is still there, then remove the demo
# directory. The directory is kept if anything is still mounted inside it,
# so that removing it can never reach through a mount.
cleanup() {
	local status=$?
	if mountpoint -q "$merged" 2>/dev/null; then
		"$lamina" umount "$merged" 2>/dev/null ||
			umount "$merged" 2>/dev/null ||
			umount -l "$merged" ||
			true
	fi
	if findmnt -rn -o TARGET | grep -q "^$demo/"; then
		echo "demo.sh: $demo still has a mount inside it; not removing it" >&2
	else
		rm -rf "$demo"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() {
	printf '\n== %s\n' "$*"
}

# List the entries of a directory tree, relative to its root, one a line.
# Directories are left out unless they are opaque, and overlayfs whiteouts
# (character device 0/0) are marked.
show_tree() {
	local root=$1 path kind
	(cd "$root" && find . -mindepth 1 -printf '%P\t%y\n' | sort) |
		while IFS=$'\t' read -r path kind; do
			case $kind in
			d)
				if [ "$(getfattr --only-values -n trusted.overlay.opaque \
					"$root/$path" 2>/dev/null)" = y ]; then
					echo "  $path/  (opaque directory)"
				fi
				;;
			c)
				if [ "$(stat -c '%t:%T' "$root/$path")" = 0:0 ]; then
					echo "  $path  (whiteout)"
				else
					echo "  $path  (character device)"
				fi
				;;
			l) echo "  $path -> $(readlink "$root/$path")" ;;
			*) echo "  $path" ;;
			esac
		done
}

# Print one checksum over the names, types, modes and contents of a tree.
tree_checksum() {
	(
		cd "$1"
		find . -printf '%p %y %m %s\n' | sort
		find . -type f -print0 | sort -z | xargs -0 -r sha256sum
	) | sha256sum | cut -c1-16
}

golden=$demo/golden
patch=$demo/patch
upper=$demo/upper
mkdir -p "$golden"/{etc,opt/app,usr/bin} "$patch"/{etc,opt/app} \
	"$upper" "$demo/work" "$merged"

echo "Golden image 1.0" >"$golden/etc/issue"
echo "Welcome to the golden image." >"$golden/etc/motd"
echo "colour=blue" >"$golden/opt/app/settings"
echo "cache=on" >"$golden/opt/app/cache.conf"
printf '#!/bin/sh\necho hello from the golden image\n' >"$golden/usr/bin/greet"
chmod 755 "$golden/usr/bin/greet"

echo "Welcome to the patched image." >"$patch/etc/motd"
echo "plugin=enabled" >"$patch/opt/app/plugin.conf"

golden_sum=$(tree_checksum "$golden")
patch_sum=$(tree_checksum "$patch")

step "Layers in $demo"
echo "golden (lowest layer):"
show_tree "$golden"
echo "patch (lower layer above golden):"
show_tree "$patch"
echo "upper: empty"

options="lowerdir=$patch:$golden,upperdir=$upper,workdir=$demo/work"
step "Mount: lowerdir=patch:golden, upperdir=upper, workdir=work"
"$lamina" mount -o "$options" "$merged"

echo "merged view:"
show_tree "$merged"
echo "etc/motd, where both lowers have it, comes from the leftmost lower:"
echo "  $(cat "$merged/etc/motd")"

step "Copy-up: append a line to etc/issue"
echo "patched by the demo" >>"$merged/etc/issue"
echo "merged etc/issue:  $(tr '\n' ' ' <"$merged/etc/issue")"
echo "golden etc/issue:  $(tr '\n' ' ' <"$golden/etc/issue")"

step "Whiteout: delete etc/motd and usr/bin/greet"
rm "$merged/etc/motd" "$merged/usr/bin/greet"
for name in etc/motd usr/bin/greet; do
	if [ -e "$merged/$name" ]; then
		echo "  $name is still visible in the merged view"
	else
		echo "  $name is gone from the merged view"
	fi
done
echo "  etc/motd is still in both lowers (patch / golden):" \
	"$(cat "$patch/etc/motd") / $(cat "$golden/etc/motd")"
echo "  usr/bin/greet is only in golden, whose usr/bin still lists:" \
	"$(ls "$golden/usr/bin" | tr '\n' ' ')"

step "Opaque directory: remove opt/app, then create it again"
rm -r "$merged/opt/app"
mkdir "$merged/opt/app"
echo "colour=red" >"$merged/opt/app/settings"
echo "merged opt/app now lists: $(ls "$merged/opt/app" | tr '\n' ' ')"

step "The upper layer now holds"
show_tree "$upper"

step "Lower layers unchanged"
for layer in golden patch; do
	before=${layer}_sum
	after=$(tree_checksum "$demo/$layer")
	if [ "$after" = "${!before}" ]; then
		echo "  $layer: unchanged (checksum $after)"
	else
		echo "  $layer: CHANGED (checksum ${!before} before, $after after)"
		exit 1
	fi
done

step "Factory reset: lamina reset --remount empties the upper and mounts again"
"$lamina" reset --remount "$merged" | sed 's/^/  /'
echo "  etc/motd is back: $(cat "$merged/etc/motd")"
echo "  opt/app lists again: $(ls "$merged/opt/app" | tr '\n' ' ')"
"$lamina" umount "$merged"
