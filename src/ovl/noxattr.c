// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lower files known to carry no extended attributes at all. The
 * directory prefetch lists the attributes of every entry it stats, and
 * notes those without any here, by layer and inode number. A lookup that
 * finds such a file then reads none of the overlay attributes (metacopy,
 * opaque, redirect, xattr whiteouts), and the node answers getxattr and
 * listxattr itself: ls -l asks for two attributes of every entry, and no
 * kernel cache keeps the answers.
 *
 * Lower layers do not change while mounted, so an entry never goes
 * stale. The table is a fixed array of keys with one slot per hash: a
 * note may overwrite another, which only costs that file the syscalls
 * again. A key is one 64-bit word, so a reader never sees half of one.
 */
#include "ovl.h"

#include <stdatomic.h>
#include <errno.h>
#include <stdlib.h>

#define NOXATTR_SLOTS (1u << 16) /* 512 KiB */
#define NOXATTR_LAYER_BITS 10

struct ovl_noxattr {
	_Atomic uint64_t keys[NOXATTR_SLOTS];
};

/* The key of (layer, ino), or 0 when it does not fit in one word. */
static uint64_t noxattr_key(int layer, ino_t ino)
{
	uint64_t i = (uint64_t)ino;

	if (layer < 0 || layer >= (1 << NOXATTR_LAYER_BITS) ||
	    i >> (63 - NOXATTR_LAYER_BITS))
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

void ovl_noxattr_note(struct ovl_fs *fs, int layer, ino_t ino)
{
	uint64_t key = noxattr_key(layer, ino);

	if (fs->noxattr && key)
		atomic_store_explicit(&fs->noxattr->keys[noxattr_slot(key)],
				      key, memory_order_relaxed);
}

bool ovl_noxattr_known(const struct ovl_fs *fs, int layer, ino_t ino)
{
	uint64_t key = noxattr_key(layer, ino);

	return fs->noxattr && key &&
	       atomic_load_explicit(&fs->noxattr->keys[noxattr_slot(key)],
				    memory_order_relaxed) == key;
}
