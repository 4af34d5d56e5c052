// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Kept descriptors of a directory node in the lower layers. A directory
 * that moves keeps, through its redirect, its place in each lower layer,
 * and the lower layers do not change while mounted. So an O_PATH
 * descriptor opened once stays right for the node's whole life, and a
 * lookup below the directory duplicates it instead of walking the path
 * from the layer root.
 *
 * A lower layer where the directory is missing is remembered too. A
 * node whose name is removed or replaced is marked deleted and never
 * reaches its descriptors again. They close when the node is freed,
 * after the kernel forgets it, and their number is capped to a quarter of
 * the descriptors the daemon does not use itself, so that files opened
 * through the mount find free descriptors.
 */
#include "ovl.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define DIRFD_UNKNOWN (-1)
#define DIRFD_ABSENT (-2)
#define DIRFD_MAX 65536
#define DIRFD_RESERVE 32 /* descriptors held by running requests */
#define DIRFD_PER_CPU 4	 /* a worker and a ring queue, two each */

struct ovl_dirfds {
	int first; /* the node's topmost lower layer, or -1 */
	int count;
	atomic_int fd[]; /* an O_PATH descriptor, or DIRFD_* */
};

/* Count the descriptors the daemon holds now, or -1 when unknown. */
static int count_open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!dir)
		return -1;
	while ((de = readdir(dir)))
		if (de->d_name[0] != '.')
			n++;
	closedir(dir);
	return n - 1; /* the directory's own descriptor */
}

/*
 * Keep at most a quarter of the descriptors left after the daemon's own:
 * those open now, and a few for each thread that may still start and for
 * the ones a request holds while it runs.
 */
void ovl_dirfd_init(struct ovl_fs *fs)
{
	struct rlimit rl;
	long cpus = sysconf(_SC_NPROCESSORS_CONF);
	long max = 1024, used = count_open_fds(), left;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < (rlim_t)LONG_MAX)
		max = (long)rl.rlim_cur;
	if (used < 0)
		used = 64;
	left =
	    max - used - DIRFD_RESERVE - DIRFD_PER_CPU * (cpus > 0 ? cpus : 1);
	left /= 4;
	fs->dirfd_max = left < 0 ? 0 : left > DIRFD_MAX ? DIRFD_MAX : (int)left;
	atomic_store(&fs->dirfd_count, 0);
	if (fs->dirfd_max < 64)
		log_info(
		    "the open file limit %ld leaves room for only %d kept directory descriptors; raise it (ulimit -n) for faster lookups",
		    max, fs->dirfd_max);
}

/* Return the slot index of layer for node, or -1 when it has none. */
static int slot_index(struct ovl_fs *fs, const struct ovl_node *node, int layer)
{
	if (node->type != S_IFDIR || node->anon_fd >= 0)
		return -1;
	/*
	 * NOTE: the upper layer is not kept. Its path is opened by name, and
	 * a RENAME_EXCHANGE of an ancestor between building the path and
	 * opening it would keep the other directory for the node's life, so
	 * that files created in it would land there.
	 */
	if (fs->layers[layer].is_upper)
		return -1;
	if (node->lower < 0 || layer < node->lower || layer > node->lower_last)
		return -1;
	return layer - node->lower;
}

static struct ovl_dirfds *slots_of(struct ovl_node *node)
{
	struct ovl_dirfds *d = atomic_load(&node->dirfds), *mine;
	int i, count = node->lower_last - node->lower + 1;

	if (d)
		return d;
	mine = malloc(sizeof(*mine) + count * sizeof(mine->fd[0]));
	if (!mine)
		return NULL;
	mine->first = node->lower;
	mine->count = count;
	for (i = 0; i < count; i++)
		atomic_init(&mine->fd[i], DIRFD_UNKNOWN);
	if (atomic_compare_exchange_strong(&node->dirfds, &d, mine))
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
	int fd = atomic_load(slot), want, expected = DIRFD_UNKNOWN;

	*owned = false;
	if (fd != DIRFD_UNKNOWN)
		return fd == DIRFD_ABSENT ? -ENOENT : fd;
	fd = open_by_path(fs, node, layer);
	if (fd == -ENOENT || fd == -ENOTDIR)
		want = DIRFD_ABSENT;
	else if (fd < 0)
		return fd; /* maybe transient, such as EMFILE, so not kept */
	else if (atomic_fetch_add(&fs->dirfd_count, 1) >= fs->dirfd_max) {
		atomic_fetch_sub(&fs->dirfd_count, 1);
		*owned = true;
		return fd;
	} else
		want = fd;
	if (!atomic_compare_exchange_strong(slot, &expected, want)) {
		if (want >= 0) {
			close(want);
			atomic_fetch_sub(&fs->dirfd_count, 1);
		}
		want = expected;
	}
	return want == DIRFD_ABSENT ? -ENOENT : want;
}

/*
 * Open a directory node in layer from its kept descriptor. Return true
 * with a new descriptor or a negative errno in *out. Return false when
 * this node and layer are not kept, so the caller walks the path.
 */
bool ovl_dirfd_open(struct ovl_fs *fs, struct ovl_node *node, int layer,
		    int flags, int *out)
{
	int index = slot_index(fs, node, layer), fd;
	struct ovl_dirfds *d;
	bool owned;

	if (index < 0)
		return false;
	d = slots_of(node);
	if (!d || index >= d->count)
		return false;
	fd = slot_fd(fs, node, layer, &d->fd[index], &owned);
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

void ovl_dirfd_free(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_dirfds *d = atomic_load(&node->dirfds);
	int i, fd;

	if (!d)
		return;
	for (i = 0; i < d->count; i++) {
		fd = atomic_load(&d->fd[i]);
		if (fd >= 0) {
			close(fd);
			atomic_fetch_sub(&fs->dirfd_count, 1);
		}
	}
	free(d);
}
