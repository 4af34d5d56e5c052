// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The directory reader process that readahead.c starts. It gets the
 * private copy of the mount and one end of a socket, on fixed
 * descriptors, and nothing else of the daemon. Its threads take one path
 * per message and list that directory below the copy, which makes the
 * kernel ask the daemon for the entries with their attributes. The first
 * message goes the other way: the thread ids of the readers, so that the
 * daemon does not count their own lookups as a caller's.
 *
 * A caller that works in a directory is likely to walk into its
 * subdirectories next, so half of the threads list those, newest first,
 * before the caller gets there. Only one level: listing whole trees
 * ahead costs more CPU time than it saves (a git repository's object
 * store is never walked by git status). Below that level the daemon
 * sends the path again once a caller looks up a name there.
 *
 * It ends when the daemon shuts the socket down or dies (the daemon set
 * the parent-death signal before starting it).
 */
#include "ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RA_READS 4    /* getdents64() calls per directory */
#define RA_BUF 32768  /* bytes per call: some 180 entries */
#define RA_AHEAD 1024 /* subdirectories waiting to be listed */

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int count;
	uint32_t tids[OVL_READAHEAD_THREADS];
} started = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};

/* Subdirectories to list, last in first out; the oldest are dropped. */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char *items[RA_AHEAD];
	unsigned int head, count;
} ahead = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0, 0};

static void ahead_push(const char *dir, const char *name)
{
	char *path;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		return;
	pthread_mutex_lock(&ahead.lock);
	if (ahead.count == RA_AHEAD) {
		free(ahead.items[ahead.head]);
		ahead.head = (ahead.head + 1) % RA_AHEAD;
		ahead.count--;
	}
	ahead.items[(ahead.head + ahead.count++) % RA_AHEAD] = path;
	pthread_cond_signal(&ahead.cond);
	pthread_mutex_unlock(&ahead.lock);
}

static char *ahead_pop(void)
{
	char *path;

	pthread_mutex_lock(&ahead.lock);
	while (!ahead.count)
		pthread_cond_wait(&ahead.cond, &ahead.lock);
	ahead.count--;
	path = ahead.items[(ahead.head + ahead.count) % RA_AHEAD];
	pthread_mutex_unlock(&ahead.lock);
	return path;
}

/* Queue the subdirectories among n bytes of entries of dir. */
static void queue_subdirs(const char *dir, const char *buf, long n)
{
	const struct linux_dirent64 *d;
	long pos;

	for (pos = 0; pos < n; pos += d->d_reclen) {
		d = (const void *)(buf + pos);
		if (d->d_type == DT_DIR && strcmp(d->d_name, ".") &&
		    strcmp(d->d_name, ".."))
			ahead_push(dir, d->d_name);
	}
}

/*
 * List the directory at path below the copy, at most RA_READS times, and
 * with subdirs queue its subdirectories. O_NOATIME keeps the kernel from
 * moving the access time of a directory that no caller listed. The stat at the
 * end refreshes the attributes that the listing made stale (the access time),
 * so that a caller's stat of the directory needs no request.
 */
static void read_dir(const char *path, bool subdirs)
{
	struct open_how how = {
	    .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOATIME,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
		       RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	char buf[RA_BUF];
	struct stat st;
	long n;
	int fd, i;

	/* Renamed or removed since, or not readable: nothing to do. */
	fd = (int)syscall(SYS_openat2, OVL_READAHEAD_COPY_FD, path, &how,
			  sizeof(how));
	if (fd < 0)
		return;
	for (i = 0; i < RA_READS; i++) {
		n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (subdirs)
			queue_subdirs(path, buf, n);
	}
	fstat(fd, &st);
	close(fd);
}

static void note_started(void)
{
	pthread_mutex_lock(&started.lock);
	started.tids[started.count++] = gettid();
	pthread_cond_signal(&started.cond);
	pthread_mutex_unlock(&started.lock);
}

static void *reader_main(void *arg)
{
	char path[OVL_PATH_MAX + 1];
	ssize_t n;

	(void)arg;
	note_started();
	for (;;) {
		n = recv(OVL_READAHEAD_SOCK_FD, path, sizeof(path) - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0); /* the daemon shut the socket down */
		path[n] = '\0';
		read_dir(path, true);
	}
	return NULL;
}

static void *ahead_main(void *arg)
{
	char *path;

	(void)arg;
	note_started();
	for (;;) {
		path = ahead_pop();
		read_dir(path, false);
		free(path);
	}
	return NULL;
}

/* Check the type without a request to the daemon, which has not replied
 * to INIT yet. */
static bool fd_is(int fd, mode_t type)
{
	struct statx stx;

	return statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE,
		     &stx) == 0 &&
	       (stx.stx_mode & S_IFMT) == type;
}

/* Only a sequenced-packet socket keeps message bounds and reports the
 * end of the stream, which the threads rely on. */
static bool is_seqpacket(int fd)
{
	socklen_t len = sizeof(int);
	int type;

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
	       type == SOCK_SEQPACKET;
}

/* Start the threads; returns how many started. */
static unsigned int start_threads(void)
{
	pthread_t thread;
	unsigned int i;

	for (i = 0; i < OVL_READAHEAD_THREADS; i++) {
		if (pthread_create(&thread, NULL,
				   i % 2 ? ahead_main : reader_main, NULL))
			break;
		pthread_detach(thread);
	}
	pthread_mutex_lock(&started.lock);
	while (started.count < i)
		pthread_cond_wait(&started.cond, &started.lock);
	pthread_mutex_unlock(&started.lock);
	return i;
}

int ovl_readahead_child(void)
{
	unsigned int n;

	prctl(PR_SET_NAME, OVL_READAHEAD_CHILD);
	if (!fd_is(OVL_READAHEAD_COPY_FD, S_IFDIR) ||
	    !fd_is(OVL_READAHEAD_SOCK_FD, S_IFSOCK) ||
	    !is_seqpacket(OVL_READAHEAD_SOCK_FD)) {
		fprintf(
		    stderr,
		    "lamina: %s is started by the lamina daemon, not by hand\n",
		    OVL_READAHEAD_CHILD);
		return 2;
	}
	n = start_threads();
	if (!n || send(OVL_READAHEAD_SOCK_FD, started.tids,
		       n * sizeof(uint32_t), MSG_NOSIGNAL) < 0)
		return 1;
	for (;;)
		pause();
}
