// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A short-lived cache of directory descriptors. Filling a listing with
 * attributes looks up every entry, and each lookup opens the same
 * directory in each layer by walking its path from the layer root. While
 * a fill runs, the thread keeps the first descriptor for each directory
 * and layer and hands out duplicates, which cost no path walk. The cache
 * lives for one request, so a rename or copy-up between requests never
 * meets a stale descriptor, and it holds a reference on each node it
 * keeps, so that no other node can take a freed one's address.
 */
#include "ovl.h"

#include <fcntl.h>
#include <unistd.h>

#define DIRCACHE_SLOTS 16

struct dircache_slot {
	struct ovl_node *node;
	int layer;
	int flags;
	int fd;
};

static __thread struct {
	struct ovl_fs *fs;
	bool on;
	int used;
	struct dircache_slot slots[DIRCACHE_SLOTS];
} cache;

void ovl_dircache_begin(struct ovl_fs *fs)
{
	cache.fs = fs;
	cache.on = true;
	cache.used = 0;
}

void ovl_dircache_end(void)
{
	int i;

	for (i = 0; i < cache.used; i++) {
		close(cache.slots[i].fd);
		ovl_node_put(cache.fs, cache.slots[i].node);
	}
	cache.used = 0;
	cache.on = false;
}

/* A duplicate of the cached descriptor, or -1 when there is none. */
int ovl_dircache_get(const struct ovl_node *node, int layer, int flags)
{
	int i;

	if (!cache.on)
		return -1;
	for (i = 0; i < cache.used; i++) {
		const struct dircache_slot *s = &cache.slots[i];

		if (s->node == node && s->layer == layer && s->flags == flags)
			return fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
	}
	return -1;
}

/* Keep a duplicate of fd, just opened for node in layer, if there is room. */
void ovl_dircache_put(struct ovl_node *node, int layer, int flags, int fd)
{
	struct dircache_slot *s;

	if (!cache.on || cache.used == DIRCACHE_SLOTS)
		return;
	s = &cache.slots[cache.used];
	s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (s->fd < 0)
		return;
	ovl_node_get(node);
	s->node = node;
	s->layer = layer;
	s->flags = flags;
	cache.used++;
}
