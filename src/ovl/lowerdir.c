// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Descriptors of a directory node in the lower layers. The lower layers
 * do not change while mounted, and a directory that moves keeps its
 * place in each of them through its redirect, so an O_PATH descriptor
 * opened once stays right for the node's whole life. A lookup below the
 * directory then duplicates it instead of walking the path from the
 * layer root. A layer where the directory does not exist is remembered
 * as well. The descriptors close when the node is freed, which happens
 * when the kernel forgets it, and their number is capped so that the
 * files users open never run short of descriptors.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#define LOWERDIR_UNKNOWN (-1)
#define LOWERDIR_ABSENT (-2)
#define LOWERDIR_MAX 65536

struct ovl_lowerdirs {
	int first; /* the node's topmost lower layer */
	int count;
	atomic_int fd[]; /* an O_PATH descriptor, or LOWERDIR_* */
};

/* Keep at most a quarter of the descriptor limit in this cache. */
void ovl_lowerdir_init(struct ovl_fs *fs)
{
	struct rlimit rl;
	rlim_t max = 1024;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		max = rl.rlim_cur;
	fs->lowerdir_max = max / 4 > LOWERDIR_MAX ? LOWERDIR_MAX : max / 4;
	atomic_store(&fs->lowerdir_fds, 0);
}

static bool cacheable(struct ovl_fs *fs, const struct ovl_node *node, int layer)
{
	return node->type == S_IFDIR && node->lower >= 0 &&
	       layer >= node->lower && layer <= node->lower_last &&
	       !fs->layers[layer].is_upper && node->anon_fd < 0;
}

static struct ovl_lowerdirs *slots_of(struct ovl_node *node)
{
	struct ovl_lowerdirs *d = atomic_load(&node->lowerdirs), *mine;
	int i, count = node->lower_last - node->lower + 1;

	if (d)
		return d;
	mine = malloc(sizeof(*mine) + count * sizeof(mine->fd[0]));
	if (!mine)
		return NULL;
	mine->first = node->lower;
	mine->count = count;
	for (i = 0; i < count; i++)
		atomic_init(&mine->fd[i], LOWERDIR_UNKNOWN);
	if (atomic_compare_exchange_strong(&node->lowerdirs, &d, mine))
		return mine;
	free(mine); /* another thread installed d first */
	return d;
}

/* Open the directory by its path in layer, with O_PATH. */
static int open_by_path(struct ovl_fs *fs, struct ovl_node *node, int layer)
{
	char rel[OVL_PATH_MAX];
	int err = ovl_node_lower_path(fs, node, layer, rel, sizeof(rel));

	if (err)
		return err;
	return ovl_open_layer_dir(fs->layers[layer].fd, rel, O_PATH);
}

/*
 * Return the slot's descriptor, and fill the slot first if it is unknown.
 * When the cache is full, the descriptor is not kept and *owned is set,
 * so the caller closes it.
 */
static int slot_fd(struct ovl_fs *fs, struct ovl_node *node, int layer,
		   atomic_int *slot, bool *owned)
{
	int fd = atomic_load(slot), want, expected = LOWERDIR_UNKNOWN;

	*owned = false;
	if (fd != LOWERDIR_UNKNOWN)
		return fd == LOWERDIR_ABSENT ? -ENOENT : fd;
	fd = open_by_path(fs, node, layer);
	if (fd == -ENOENT || fd == -ENOTDIR)
		want = LOWERDIR_ABSENT;
	else if (fd < 0)
		return fd; /* maybe transient, such as EMFILE, so not kept */
	else if (atomic_fetch_add(&fs->lowerdir_fds, 1) >= fs->lowerdir_max) {
		atomic_fetch_sub(&fs->lowerdir_fds, 1);
		*owned = true;
		return fd;
	} else
		want = fd;
	if (!atomic_compare_exchange_strong(slot, &expected, want)) {
		if (want >= 0) {
			close(want);
			atomic_fetch_sub(&fs->lowerdir_fds, 1);
		}
		want = expected;
	}
	return want == LOWERDIR_ABSENT ? -ENOENT : want;
}

/*
 * Open a lower directory node in layer from its kept descriptor. Return
 * true with a new descriptor or a negative errno in *out. Return false
 * when this node and layer are not kept, so the caller walks the path.
 */
bool ovl_lowerdir_open(struct ovl_fs *fs, struct ovl_node *node, int layer,
		       int flags, int *out)
{
	struct ovl_lowerdirs *d;
	bool owned;
	int fd;

	if (!cacheable(fs, node, layer))
		return false;
	d = slots_of(node);
	if (!d)
		return false;
	fd = slot_fd(fs, node, layer, &d->fd[layer - d->first], &owned);
	if (fd < 0 || (owned && flags == O_PATH)) {
		*out = fd;
		return true;
	}
	if (flags != O_PATH)
		*out = ovl_reopen_dir(fd, flags);
	else if ((*out = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		*out = -errno;
	if (owned)
		close(fd);
	return true;
}

void ovl_lowerdir_free(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_lowerdirs *d = atomic_load(&node->lowerdirs);
	int i, fd;

	if (!d)
		return;
	for (i = 0; i < d->count; i++) {
		fd = atomic_load(&d->fd[i]);
		if (fd >= 0) {
			close(fd);
			atomic_fetch_sub(&fs->lowerdir_fds, 1);
		}
	}
	free(d);
}
