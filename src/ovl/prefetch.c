// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directory prefetch. When the kernel learns of a lower directory, in a
 * lookup or in a listing with attributes, it is likely to list that
 * directory and look up its entries next. One background thread reads
 * such directories in the lower layers ahead of time and stats every
 * entry. The lower filesystem then has their dentries and inodes cached
 * by the time a request needs them, so the disk reads overlap with the
 * requests instead of waiting behind them.
 *
 * The thread only reads, and only lower layers. The one thing it leaves
 * for lookups is the note of files without xattrs (noxattr.c), which
 * stays true while the layers do not change. So a prefetch that comes
 * too late, or that reads a directory that is never used, costs time and
 * nothing else. The newest directories go first, because a tree walk
 * descends into the directory it has just listed. The oldest are
 * dropped when the queue is full. The thread runs at the lowest priority
 * of the normal policy, so it mostly uses CPU time that no other task
 * wants.
 */
#include "ovl.h"
#include "../common/log.h"
#include "fuse/transport.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PREFETCH_QUEUE 512	   /* directories waiting */
#define PREFETCH_BATCH 256	   /* directories queued by one request */
#define PREFETCH_MAX_ENTRIES 20000 /* entries read in one directory */

struct prefetch_item {
	int layer;
	char *path;
};

struct ovl_prefetch {
	struct ovl_fs *fs;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	atomic_bool stop; /* read without the lock between entries, too */
	/* A ring buffer. head is the next item to take, and new items go
	 * before it. */
	struct prefetch_item items[PREFETCH_QUEUE];
	unsigned int head, count;
};

/* Directories found by the current request, queued together at its end. */
static __thread struct {
	bool on;
	int count;
	struct prefetch_item items[PREFETCH_BATCH];
} batch;

static void item_free(struct prefetch_item *it)
{
	free(it->path);
	it->path = NULL;
}

/* Put items in front of the queue in their order, dropping the oldest. */
static void queue_front(struct ovl_prefetch *p, struct prefetch_item *items,
			int n)
{
	int i;

	pthread_mutex_lock(&p->lock);
	for (i = n - 1; i >= 0; i--) {
		if (p->count == PREFETCH_QUEUE) {
			unsigned int last =
			    (p->head + p->count - 1) % PREFETCH_QUEUE;

			item_free(&p->items[last]);
			p->count--;
		}
		p->head = (p->head + PREFETCH_QUEUE - 1) % PREFETCH_QUEUE;
		p->items[p->head] = items[i];
		p->count++;
	}
	/* Before the wake-up: the ring thread that queued the items then
	 * commits its reply at normal priority, ahead of this thread. */
	fuse_session_other_work(p->fs->se, true);
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
}

void ovl_prefetch_begin(void)
{
	batch.on = true;
	batch.count = 0;
}

void ovl_prefetch_end(struct ovl_fs *fs)
{
	int i;

	batch.on = false;
	if (!batch.count)
		return;
	if (fs->prefetch)
		queue_front(fs->prefetch, batch.items, batch.count);
	else
		for (i = 0; i < batch.count; i++)
			item_free(&batch.items[i]);
	batch.count = 0;
}

/* Queue a directory node that was just looked up, in each lower layer. */
void ovl_prefetch_dir(struct ovl_fs *fs, struct ovl_node *node)
{
	char rel[OVL_PATH_MAX];
	bool own = !batch.on;
	int layer;

	if (!fs->prefetch || !S_ISDIR(node->type) || node->lower < 0)
		return;
	if (own)
		ovl_prefetch_begin();
	for (layer = node->lower; layer <= node->lower_last; layer++) {
		struct prefetch_item *it;

		if (batch.count == PREFETCH_BATCH)
			break;
		if (ovl_node_lower_path(fs, node, layer, rel, sizeof(rel)))
			continue;
		it = &batch.items[batch.count];
		it->layer = layer;
		it->path = strdup(rel);
		if (it->path)
			batch.count++;
	}
	if (own)
		ovl_prefetch_end(fs);
}

static bool stopping(struct ovl_prefetch *p)
{
	return atomic_load_explicit(&p->stop, memory_order_relaxed);
}

/* Read one directory with getdents64() and stat every entry. */
static void prefetch_one(struct ovl_prefetch *p, const struct prefetch_item *it)
{
	struct ovl_fs *fs = p->fs;
	bool note = fs->noxattr && fs->layers[it->layer].bare_ok;
	char buf[32768];
	int fd, seen = 0;
	long n;

	/*
	 * O_NOATIME fails with EPERM on another user's directory without
	 * CAP_FOWNER. Reading it would then change its access time, so skip.
	 */
	fd = ovl_open_layer_dir(fs->layers[it->layer].fd, it->path,
				O_RDONLY | O_NOATIME);
	if (fd < 0)
		return; /* removed, or no directory in this layer */
	while (seen < PREFETCH_MAX_ENTRIES && !stopping(p) &&
	       (n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		long off = 0;

		while (off < n) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			struct stat st;

			off += d->d_reclen;
			if (stopping(p))
				break;
			if (d->d_name[0] == '.' &&
			    (!d->d_name[1] ||
			     (d->d_name[1] == '.' && !d->d_name[2])))
				continue;
			if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
				0 &&
			    note &&
			    ovl_do_listxattr(fd, d->d_name, NULL, 0) == 0)
				ovl_noxattr_note(fs, it->layer, &st);
			seen++;
		}
	}
	close(fd);
}

static void *prefetch_main(void *arg)
{
	struct ovl_prefetch *p = arg;
	struct prefetch_item it;

	/* Nice 19 rather than SCHED_IDLE: at SCHED_IDLE the thread fell
	 * behind the ring threads, which commit replies at SCHED_IDLE. */
	if (setpriority(PRIO_PROCESS, gettid(), 19) < 0)
		log_warn(
		    "setting nice 19 for directory prefetch failed: %s; it runs at normal priority",
		    strerror(errno));
	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (!p->stop && !p->count)
			fuse_session_other_work(p->fs->se, false);
		while (!p->stop && !p->count)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stop)
			break;
		it = p->items[p->head];
		p->head = (p->head + 1) % PREFETCH_QUEUE;
		p->count--;
		pthread_mutex_unlock(&p->lock);
		prefetch_one(p, &it);
		item_free(&it);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int ovl_prefetch_start(struct ovl_fs *fs)
{
	struct ovl_prefetch *p = calloc(1, sizeof(*p));
	int err;

	if (!p)
		return -ENOMEM;
	p->fs = fs;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	err = pthread_create(&p->thread, NULL, prefetch_main, p);
	if (err) {
		pthread_mutex_destroy(&p->lock);
		pthread_cond_destroy(&p->wake);
		free(p);
		return -err;
	}
	pthread_setname_np(p->thread, "lamina-prefetch");
	fs->prefetch = p;
	return 0;
}

void ovl_prefetch_stop(struct ovl_fs *fs)
{
	struct ovl_prefetch *p = fs->prefetch;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->thread, NULL);
	fs->prefetch = NULL;
	while (p->count) {
		item_free(&p->items[p->head]);
		p->head = (p->head + 1) % PREFETCH_QUEUE;
		p->count--;
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->wake);
	free(p);
}
