// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directory readahead through the mount. A program that stats names in a
 * directory without listing it, as git status does for every file it
 * tracks, makes the kernel ask for each name with its own LOOKUP round
 * trip. One listing with attributes (READDIRPLUS) gives the kernel a few
 * hundred entries at once. So a reader thread lists a directory through
 * the mount once callers have looked up two names in it, or one name
 * where its parent was listed ahead. The names that the caller stats
 * next are then in the kernel's cache.
 *
 * The readers work in a private copy of the mount, made with open_tree()
 * and OPEN_TREE_CLONE right after mounting. It is a second mount of the
 * same superblock. The readers never touch the mount point itself, so an
 * unmount never finds it busy because of them. The copy keeps the
 * superblock alive, though, so a watch on the mount table closes it once
 * no mount of the superblock is left, and the kernel ends the connection
 * then. Making the copy needs CAP_SYS_ADMIN over the mount namespace,
 * and without it there is no readahead.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define RA_THREADS 8
#define RA_QUEUE 256 /* directories waiting */
#define RA_READS 4   /* getdents64() calls per directory */
#define RA_BUF 32768 /* bytes per call: some 180 entries */

struct ovl_readahead {
	char *mountpoint;
	dev_t dev; /* of this mount's superblock */
	pthread_mutex_t lock;
	pthread_cond_t wake; /* items queued, or stop */
	pthread_cond_t idle; /* busy fell to 0 */
	/* A ring buffer, newest first. The oldest are dropped when full. */
	char *items[RA_QUEUE];
	unsigned int head, count;
	int clone_fd;	   /* the private copy, or -1 once unmounted */
	unsigned int busy; /* readers inside clone_fd */
	bool stop;
	atomic_bool on; /* started, and still mounted */
	unsigned int nthreads;
	pthread_t threads[RA_THREADS];
	atomic_int tids[RA_THREADS];
	struct ovl_mount_watch watch;
	bool watching;
};

/* The device number of the mount at path, without asking the daemon. */
static int mount_dev(int dirfd, const char *path, dev_t *dev)
{
	struct statx stx;

	if (statx(dirfd, path,
		  AT_EMPTY_PATH | AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT,
		  STATX_TYPE, &stx) < 0)
		return -errno;
	*dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
	return 0;
}

static int open_copy(const char *mountpoint)
{
	long fd = syscall(SYS_open_tree, AT_FDCWD, mountpoint,
			  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);

	return fd < 0 ? -errno : (int)fd;
}

/*
 * Make the private copy right after mounting, while the mount point
 * surely leads to this mount, and note the superblock's device number.
 * Runs before the daemon forks, and the readers start at INIT.
 */
void ovl_readahead_probe(struct ovl_fs *fs)
{
	struct ovl_readahead *ra;
	dev_t dev, copy_dev;
	int fd;

	if (!fs->config.prefetch)
		return;
	fd = open_copy(fs->config.mountpoint);
	if (fd < 0) {
		log_debug(
		    "no directory readahead: copying the mount %s failed: %s",
		    fs->config.mountpoint, strerror(-fd));
		return;
	}
	if (mount_dev(fd, "", &copy_dev) ||
	    mount_dev(AT_FDCWD, fs->config.mountpoint, &dev) ||
	    dev != copy_dev) {
		close(fd);
		return;
	}
	ra = calloc(1, sizeof(*ra));
	if (ra)
		ra->mountpoint = strdup(fs->config.mountpoint);
	if (!ra || !ra->mountpoint) {
		free(ra);
		close(fd);
		return;
	}
	ra->dev = dev;
	ra->clone_fd = fd;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->wake, NULL);
	pthread_cond_init(&ra->idle, NULL);
	fs->readahead = ra;
}

static bool is_reader(struct ovl_readahead *ra, uint32_t pid)
{
	unsigned int i;

	for (i = 0; i < RA_THREADS; i++)
		if ((uint32_t)atomic_load(&ra->tids[i]) == pid)
			return true;
	return false;
}

static void queue_front(struct ovl_readahead *ra, char *path)
{
	pthread_mutex_lock(&ra->lock);
	if (ra->count == RA_QUEUE) {
		free(ra->items[(ra->head + ra->count - 1) % RA_QUEUE]);
		ra->count--;
	}
	ra->head = (ra->head + RA_QUEUE - 1) % RA_QUEUE;
	ra->items[ra->head] = path;
	ra->count++;
	pthread_cond_signal(&ra->wake);
	pthread_mutex_unlock(&ra->lock);
}

/*
 * A caller other than a reader looked up a name in dir. The second such
 * lookup queues dir, or the first where the parent was listed ahead. A
 * node is queued once in its life.
 */
void ovl_readahead_note(struct ovl_fs *fs, struct ovl_node *dir, uint32_t pid)
{
	struct ovl_readahead *ra = fs->readahead;
	char path[OVL_PATH_MAX], *copy;
	unsigned int flags;

	if (!ra || !atomic_load(&ra->on) || is_reader(ra, pid))
		return;
	flags = atomic_load(&dir->flags);
	if (flags & OVL_N_RA_QUEUED)
		return;
	/* Below a directory listed ahead, the caller most likely walks the
	 * tree, and the first name is enough. */
	if (!(flags & OVL_N_RA_SEEN) &&
	    !(dir->parent && ovl_node_has(dir->parent, OVL_N_RA_QUEUED))) {
		atomic_fetch_or(&dir->flags, OVL_N_RA_SEEN);
		return;
	}
	if (atomic_fetch_or(&dir->flags, OVL_N_RA_QUEUED) & OVL_N_RA_QUEUED)
		return;
	if (ovl_node_path(fs, dir, path, sizeof(path)))
		return;
	copy = strdup(path);
	if (copy)
		queue_front(ra, copy);
}

/* Drop everything queued. The caller holds the lock. */
static void queue_clear(struct ovl_readahead *ra)
{
	while (ra->count) {
		free(ra->items[ra->head]);
		ra->head = (ra->head + 1) % RA_QUEUE;
		ra->count--;
	}
}

/*
 * The last mount of the superblock is gone (mount_watch.c): drop the
 * queue, wait for the readers inside the copy and close it, so that the
 * superblock can end.
 */
static void mount_gone(void *arg)
{
	struct ovl_readahead *ra = arg;
	int fd;

	pthread_mutex_lock(&ra->lock);
	atomic_store(&ra->on, false);
	queue_clear(ra);
	while (ra->busy)
		pthread_cond_wait(&ra->idle, &ra->lock);
	fd = ra->clone_fd;
	ra->clone_fd = -1;
	pthread_mutex_unlock(&ra->lock);
	if (fd >= 0)
		close(fd);
	log_debug("directory readahead stops: %s is unmounted", ra->mountpoint);
}

/* List the directory at path below the copy, at most RA_READS times. */
static void read_dir(int copy, const char *path)
{
	struct open_how how = {
	    .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		       RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	char buf[RA_BUF];
	int fd, i;

	/* Renamed or removed since, or not readable: nothing to do. */
	fd = (int)syscall(SYS_openat2, copy, path[0] ? path : ".", &how,
			  sizeof(how));
	if (fd < 0)
		return;
	for (i = 0; i < RA_READS; i++)
		if (syscall(SYS_getdents64, fd, buf, sizeof(buf)) <= 0)
			break;
	close(fd);
}

struct reader_arg {
	struct ovl_readahead *ra;
	unsigned int index;
};

static void *reader_main(void *arg)
{
	struct reader_arg *a = arg;
	struct ovl_readahead *ra = a->ra;
	char *path;
	int copy;

	atomic_store(&ra->tids[a->index], gettid());
	free(a);
	pthread_mutex_lock(&ra->lock);
	while (!ra->stop) {
		if (!ra->count) {
			pthread_cond_wait(&ra->wake, &ra->lock);
			continue;
		}
		path = ra->items[ra->head];
		ra->head = (ra->head + 1) % RA_QUEUE;
		ra->count--;
		copy = ra->clone_fd;
		if (copy < 0) {
			free(path);
			continue;
		}
		ra->busy++;
		pthread_mutex_unlock(&ra->lock);
		read_dir(copy, path);
		free(path);
		pthread_mutex_lock(&ra->lock);
		if (--ra->busy == 0)
			pthread_cond_broadcast(&ra->idle);
	}
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

void ovl_readahead_start(struct ovl_fs *fs)
{
	struct ovl_readahead *ra = fs->readahead;
	unsigned int i;
	int err;

	if (!ra || ra->nthreads)
		return;
	for (i = 0; i < RA_THREADS; i++) {
		struct reader_arg *a = malloc(sizeof(*a));

		if (!a)
			break;
		a->ra = ra;
		a->index = i;
		err = pthread_create(&ra->threads[i], NULL, reader_main, a);
		if (err) {
			free(a);
			log_warn(
			    "starting a directory readahead thread failed: %s",
			    strerror(err));
			break;
		}
		pthread_setname_np(ra->threads[i], "lamina-readdir");
		ra->nthreads++;
	}
	err = ovl_mount_watch_start(&ra->watch, ra->dev, mount_gone, ra);
	if (err) {
		/* Without the watch the copy would outlive an unmount. */
		log_warn(
		    "watching the mount table failed: %s; no directory readahead",
		    strerror(-err));
		mount_gone(ra);
		return;
	}
	ra->watching = true;
	atomic_store(&ra->on, ra->nthreads > 0);
}

/*
 * Stop the readers and free everything. Call it after the connection has
 * ended, so that no reader still waits inside a request.
 */
void ovl_readahead_stop(struct ovl_fs *fs)
{
	struct ovl_readahead *ra = fs->readahead;
	unsigned int i;

	if (!ra)
		return;
	atomic_store(&ra->on, false);
	if (ra->watching)
		ovl_mount_watch_stop(&ra->watch);
	pthread_mutex_lock(&ra->lock);
	ra->stop = true;
	pthread_cond_broadcast(&ra->wake);
	pthread_mutex_unlock(&ra->lock);
	for (i = 0; i < ra->nthreads; i++)
		pthread_join(ra->threads[i], NULL);
	fs->readahead = NULL;
	queue_clear(ra);
	if (ra->clone_fd >= 0)
		close(ra->clone_fd);
	pthread_mutex_destroy(&ra->lock);
	pthread_cond_destroy(&ra->wake);
	pthread_cond_destroy(&ra->idle);
	free(ra->mountpoint);
	free(ra);
}
