// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Kept descriptors of a directory node, one per layer. A directory that
 * moves keeps its inode in the upper layer and, through its redirect,
 * its place in each lower layer, and the lower layers do not change
 * while mounted. So an O_PATH descriptor opened once stays right for the
 * node's whole life, and a request below the directory uses it instead
 * of walking the path from the layer root.
 *
 * An upper descriptor is opened by path only while no directory moves
 * (see moves.c), so that it is the node's own directory and not one that
 * a rename put at its path for a moment. It is kept only once the
 * directory exists there, since a copy-up may create it later. A lower
 * layer where the directory is missing is remembered too. A node whose
 * name is removed or replaced is marked deleted and never reaches its
 * descriptors again. They close when the node is freed, after the kernel
 * sends FORGET for it. Their number is capped to a quarter of the
 * descriptors the daemon does not use itself, so that files opened
 * through the mount find free descriptors.
 */
#include "ovl.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define DIRFD_UNKNOWN (-1)
#define DIRFD_ABSENT (-2)
#define DIRFD_MAX 65536
/* Opens of an upper directory that a move overlapped, before giving up. */
#define DIRFD_OPEN_TRIES 1000
#define DIRFD_RESERVE 32 /* descriptors held by running requests */
#define DIRFD_PER_CPU 4	 /* a worker and a ring queue, two each */

struct ovl_dirfds {
	int first; /* the node's topmost lower layer, or -1 */
	int count; /* lower slots */
	atomic_int upper;
	atomic_int fd[]; /* an O_PATH descriptor, or DIRFD_* */
};

/* Count the descriptors open in the daemon now, or -1 when unknown. */
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
 * the ones a request keeps open while it runs.
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
	/*
	 * NOTE: kept descriptors are not given back when the daemon runs out
	 * of descriptors, since requests use them without a duplicate. Under
	 * a small limit, opens through the mount fail with EMFILE while they
	 * still hold their share.
	 */
	if (left < 0)
		left = 0;
	if (left > DIRFD_MAX)
		left = DIRFD_MAX;
	fs->dirfd_max = (int)left;
	atomic_store(&fs->dirfd_count, 0);
	if (fs->dirfd_max < 64)
		log_info(
		    "kept directory descriptors are limited to %d by the open file limit %ld; raise it (ulimit -n) for faster lookups",
		    fs->dirfd_max, max);
}

static struct ovl_dirfds *slots_of(struct ovl_node *node)
{
	struct ovl_dirfds *d = atomic_load(&node->dirfds), *mine;
	int i, count = 0;

	if (d)
		return d;
	if (node->lower >= 0)
		count = node->lower_last - node->lower + 1;
	mine = malloc(sizeof(*mine) + count * sizeof(mine->fd[0]));
	if (!mine)
		return NULL;
	mine->first = node->lower;
	mine->count = count;
	atomic_init(&mine->upper, DIRFD_UNKNOWN);
	for (i = 0; i < count; i++)
		atomic_init(&mine->fd[i], DIRFD_UNKNOWN);
	if (atomic_compare_exchange_strong(&node->dirfds, &d, mine))
		return mine;
	free(mine); /* another thread installed d first */
	return d;
}

/* The slot of layer for node, or NULL when it has none. */
static atomic_int *slot_of(struct ovl_fs *fs, struct ovl_node *node, int layer)
{
	struct ovl_dirfds *d;
	bool upper = fs->layers[layer].is_upper;

	if (node->type != S_IFDIR || node->anon_fd >= 0)
		return NULL;
	if (upper ? !ovl_node_has(node, OVL_N_UPPER)
		  : node->lower < 0 || layer < node->lower ||
			layer > node->lower_last)
		return NULL;
	d = slots_of(node);
	if (!d)
		return NULL;
	if (upper)
		return &d->upper;
	return layer - d->first < d->count ? &d->fd[layer - d->first] : NULL;
}

/*
 * Open the directory by its path in layer, with O_PATH. In the upper
 * layer, open it while no directory moves. *sure is false when that
 * could not be checked, and then the descriptor is not kept.
 */
static int open_by_path(struct ovl_fs *fs, struct ovl_node *node, int layer,
			bool *sure)
{
	bool upper = fs->layers[layer].is_upper;
	char rel[OVL_PATH_MAX];
	unsigned int seen = 0;
	int fd, tries;

	*sure = true;
	for (tries = 0;; tries++) {
		if (upper)
			*sure = ovl_moves_settle(fs, &seen);
		fd = ovl_node_lower_path(fs, node, layer, rel, sizeof(rel));
		if (fd)
			return fd;
		fd = ovl_open_layer_dir(fs->layers[layer].fd, rel, O_PATH);
		if (!upper || !*sure || ovl_moves_none_since(fs, seen))
			return fd;
		/* A directory moved meanwhile: the path may name another. */
		if (fd >= 0)
			close(fd);
		if (tries == DIRFD_OPEN_TRIES) {
			*sure = false;
			return ovl_open_layer_dir(fs->layers[layer].fd, rel,
						  O_PATH);
		}
		sched_yield();
	}
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
	bool upper = fs->layers[layer].is_upper, sure;

	*owned = false;
	if (fd != DIRFD_UNKNOWN)
		return fd == DIRFD_ABSENT ? -ENOENT : fd;
	fd = open_by_path(fs, node, layer, &sure);
	/* An upper directory that is missing has moved away: not kept. */
	if ((fd == -ENOENT || fd == -ENOTDIR) && !upper)
		want = DIRFD_ABSENT;
	else if (fd < 0)
		return fd; /* maybe transient, such as EMFILE, so not kept */
	else if (!sure) {
		*owned = true;
		return fd;
	} else if (atomic_fetch_add(&fs->dirfd_count, 1) >= fs->dirfd_max) {
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
	bool owned;
	int fd;

	if (!ovl_dirfd_get(fs, node, layer, &fd, &owned))
		return false;
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

/*
 * Get the kept descriptor of a directory node in layer itself, which
 * stays open while the caller has a reference on node, or a negative
 * errno. When the cache is full the descriptor is a new one and *owned
 * is set. Return false when this node and layer are not kept.
 */
bool ovl_dirfd_get(struct ovl_fs *fs, struct ovl_node *node, int layer,
		   int *out, bool *owned)
{
	atomic_int *slot = slot_of(fs, node, layer);

	if (!slot)
		return false;
	*out = slot_fd(fs, node, layer, slot, owned);
	return true;
}

/*
 * Copy into path the name of node in its parent's place in layer, and
 * return a reference on the parent. NULL when the name is not below the
 * parent there: an absolute redirect, or a name too long.
 */
static struct ovl_node *place_of(struct ovl_fs *fs, struct ovl_node *node,
				 int layer, struct ovl_path *path)
{
	const struct ovl_redirect *r = NULL;
	struct ovl_node *parent = NULL;
	const char *name;

	pthread_rwlock_rdlock(&fs->rename_lock);
	if (!fs->layers[layer].is_upper)
		r = ovl_redirect_at(node->redirect, layer);
	name = r ? r->path : node->name;
	if ((!r || r->relative) && strlen(name) < sizeof(path->name)) {
		strcpy(path->name, name);
		parent = node->parent;
		ovl_node_get(parent);
	}
	pthread_rwlock_unlock(&fs->rename_lock);
	return parent;
}

/*
 * Point path at node's entry through its parent's kept descriptor in
 * layer. The path keeps a reference on the parent, and so the descriptor
 * open, until ovl_path_close(). Return false when the parent's
 * descriptor is not kept, so the caller walks the path.
 */
bool ovl_dirfd_open_place(struct ovl_fs *fs, struct ovl_node *node, int layer,
			  struct ovl_path *path, int *err)
{
	struct ovl_node *parent;
	bool owned;
	int fd;

	if (!node->parent)
		return false;
	parent = place_of(fs, node, layer, path);
	if (!parent)
		return false;
	if (ovl_node_has(parent, OVL_N_DELETED) ||
	    !ovl_dirfd_get(fs, parent, layer, &fd, &owned)) {
		ovl_node_put(fs, parent);
		return false;
	}
	*err = fd == -ENOTDIR ? -ENOENT : (fd < 0 ? fd : 0);
	if (fd < 0 || owned) {
		ovl_node_put(fs, parent);
		path->dirfd = fd >= 0 ? fd : -1;
		return true;
	}
	path->dirfd = fd;
	path->pin = parent;
	path->fs = fs;
	return true;
}

void ovl_dirfd_free(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_dirfds *d = atomic_load(&node->dirfds);
	int i, fd;

	if (!d)
		return;
	for (i = -1; i < d->count; i++) {
		fd = atomic_load(i < 0 ? &d->upper : &d->fd[i]);
		if (fd >= 0) {
			close(fd);
			atomic_fetch_sub(&fs->dirfd_count, 1);
		}
	}
	free(d);
}
