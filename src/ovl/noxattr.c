// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lower files known to carry no extended attributes at all. The
 * directory prefetch lists the attributes of every entry it stats, and a
 * lookup lists those of the lower file it finds. Both note the files
 * without any here, by layer and inode number. A later lookup that
 * finds such a file then reads none of the overlay attributes (metacopy,
 * opaque, redirect, xattr whiteouts), and lamina replies to getxattr and
 * listxattr of the node itself. ls -l reads two attributes of every
 * entry, and no kernel cache keeps the results.
 *
 * Lower layers do not change while mounted, so an entry never goes
 * stale. The table is a fixed array of keys with one slot per hash: a
 * note may overwrite another, which only costs that file the syscalls
 * again. A key is one 64-bit word, so a reader never sees half of one.
 *
 * Only files on the filesystem of their layer's root count, because
 * inode numbers repeat across the filesystems mounted inside a layer.
 * That filesystem must be one known to give each file its own inode
 * number. It must also return ENODATA for a missing name in each
 * namespace that lamina reports on: a filesystem without xattrs lists
 * none but rejects every name with EOPNOTSUPP.
 */
#include "ovl.h"

#include <stdatomic.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>

#define NOXATTR_SLOTS (1u << 16) /* 512 KiB */
#define NOXATTR_LAYER_BITS 10

struct ovl_noxattr {
	_Atomic uint64_t keys[NOXATTR_SLOTS];
};

/* The key of a file in layer, or 0 when it may not have one. */
static uint64_t noxattr_key(const struct ovl_fs *fs, int layer,
			    const struct stat *st)
{
	uint64_t i = (uint64_t)st->st_ino;

	if (!fs->noxattr || layer < fs->first_lower || layer >= fs->nlayers ||
	    layer >= (1 << NOXATTR_LAYER_BITS) ||
	    i >> (63 - NOXATTR_LAYER_BITS) || !fs->layers[layer].bare_ok ||
	    st->st_dev != fs->layers[layer].dev)
		return 0;
	return ((i << NOXATTR_LAYER_BITS) | (uint64_t)layer) + 1;
}

static unsigned int noxattr_slot(uint64_t key)
{
	key ^= key >> 29;
	key *= 0xbf58476d1ce4e5b9ull;
	key ^= key >> 32;
	return (unsigned int)(key & (NOXATTR_SLOTS - 1));
}

/* One probe name per namespace that lamina reports as absent itself. */
static const char *const noxattr_probes[] = {
    "user.lamina.probe", "trusted.lamina.probe", "security.lamina.probe",
    "system.posix_acl_access"};

/* A name in one of those namespaces, with something after the prefix:
 * the prefix alone is invalid (EINVAL) on every filesystem. */
bool ovl_noxattr_name(const char *name)
{
	return (!strncmp(name, "user.", 5) && name[5]) ||
	       (!strncmp(name, "trusted.", 8) && name[8]) ||
	       (!strncmp(name, "security.", 9) && name[9]) ||
	       !strcmp(name, "system.posix_acl_access") ||
	       !strcmp(name, "system.posix_acl_default");
}

/*
 * Filesystems whose inode numbers name one file each on a device. A
 * FUSE or overlay filesystem may show the same number for two files
 * (fuse-overlayfs over two filesystems, an overlay with xino=off), and a
 * network filesystem's xattrs may change under the mount.
 */
static bool unique_inodes(int fd)
{
	static const unsigned long types[] = {
	    0xEF53,	/* ext2, ext3, ext4 */
	    0x58465342, /* xfs */
	    0x9123683E, /* btrfs: a subvolume is a device of its own */
	    0x01021994, /* tmpfs */
	    0xF2F52010, /* f2fs */
	    0xE0F5E1E2, /* erofs */
	    0x73717368, /* squashfs */
	};
	struct statfs sf;
	size_t i;

	if (fstatfs(fd, &sf) < 0)
		return false;
	for (i = 0; i < sizeof(types) / sizeof(*types); i++)
		if ((unsigned long)sf.f_type == types[i])
			return true;
	return false;
}

static bool layer_answers_enodata(struct ovl_layer *layer)
{
	size_t i;

	if (!unique_inodes(layer->fd))
		return false;
	for (i = 0; i < sizeof(noxattr_probes) / sizeof(*noxattr_probes); i++) {
		int n =
		    ovl_do_getxattr(layer->fd, ".", noxattr_probes[i], NULL, 0);

		if (n < 0 && n != -ENODATA)
			return false;
	}
	return true;
}

/* Record which layers return ENODATA for missing names: the upper too,
 * for the security.capability of created files. */
void ovl_noxattr_probe(struct ovl_fs *fs)
{
	int i;

	for (i = 0; i < fs->nlayers; i++)
		fs->layers[i].bare_ok = layer_answers_enodata(&fs->layers[i]);
}

int ovl_noxattr_init(struct ovl_fs *fs)
{
	if (!fs->noxattr)
		fs->noxattr = calloc(1, sizeof(*fs->noxattr));
	return fs->noxattr ? 0 : -ENOMEM;
}

void ovl_noxattr_free(struct ovl_fs *fs)
{
	free(fs->noxattr);
	fs->noxattr = NULL;
}

void ovl_noxattr_note(struct ovl_fs *fs, int layer, const struct stat *st)
{
	uint64_t key = noxattr_key(fs, layer, st);

	if (key)
		atomic_store_explicit(&fs->noxattr->keys[noxattr_slot(key)],
				      key, memory_order_relaxed);
}

bool ovl_noxattr_known(const struct ovl_fs *fs, int layer,
		       const struct stat *st)
{
	uint64_t key = noxattr_key(fs, layer, st);

	return key &&
	       atomic_load_explicit(&fs->noxattr->keys[noxattr_slot(key)],
				    memory_order_relaxed) == key;
}

/*
 * Check with one listxattr() whether the entry name in dirfd, of layer,
 * has no xattrs, and note it if so. For such a file the call replaces
 * the one or two overlay xattr reads of its lookup, and its later
 * getxattr and listxattr requests need no call. A file with xattrs costs
 * one call more.
 */
bool ovl_noxattr_learn(struct ovl_fs *fs, int layer, int dirfd,
		       const char *name, const struct stat *st)
{
	if (!noxattr_key(fs, layer, st) ||
	    ovl_do_listxattr(dirfd, name, NULL, 0) != 0)
		return false;
	ovl_noxattr_note(fs, layer, st);
	return true;
}
