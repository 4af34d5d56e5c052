// SPDX-License-Identifier: GPL-2.0-or-later
/* Worker threads: each reads requests from its own clone of the device. */
#include "internal.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WORKER_FORGET_PAUSE_US 2000

static int worker_clone_fd(struct fuse_session *se)
{
	uint32_t master = se->fd;
	int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (ioctl(fd, FUSE_DEV_IOC_CLONE, &master) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

void fuse_session_exit(struct fuse_session *se)
{
	if (atomic_exchange(&se->exited, true))
		return;
	fuse_session_mark_ready(se);
	if (se->on_exit)
		se->on_exit(se->on_exit_arg);
}

static void worker_handle(struct fuse_worker *w, ssize_t len)
{
	const struct fuse_in_header *in = (const void *)w->buf;
	struct fuse_req req = {
		.se = w->se,
		.worker = w,
		.fd = w->fd,
		.unique = in->unique,
		.opcode = in->opcode,
		.nodeid = in->nodeid,
		.ctx = {.uid = in->uid, .gid = in->gid, .pid = in->pid},
	};

	if ((size_t)len < sizeof(*in) || in->len != (uint32_t)len) {
		log_warn_rl("short request from the kernel: %zd bytes", len);
		return;
	}
	fuse_dispatch(&req, w->buf + sizeof(*in), len - sizeof(*in));
}

/*
 * While the rings carry the requests, /dev/fuse brings mostly FORGETs,
 * one wake-up each. A short pause after each lets the kernel gather
 * them, and the next read takes them all in one BATCH_FORGET.
 */
static void worker_pace_forgets(struct fuse_session *se, const char *buf,
				ssize_t len)
{
	const struct fuse_in_header *in = (const void *)buf;

	if ((size_t)len >= sizeof(*in) && atomic_load(&se->uring_active) &&
	    (in->opcode == FUSE_FORGET || in->opcode == FUSE_BATCH_FORGET))
		usleep(WORKER_FORGET_PAUSE_US);
}

static void *worker_main(void *arg)
{
	struct fuse_worker *w = arg;
	struct fuse_session *se = w->se;

	/*
	 * A private fs context per thread lets each request apply its own
	 * umask while it creates files.
	 */
	if (unshare(CLONE_FS) < 0)
		log_warn("unshare(CLONE_FS) failed: %s", strerror(errno));

	while (!atomic_load(&se->exited)) {
		ssize_t n = read(w->fd, w->buf, se->bufsize);

		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN ||
			    errno == ENOENT)
				continue;
			/* ENODEV: unmounted; ECONNABORTED: aborted, as a
			 * stop during a request does. */
			if (errno != ENODEV && errno != ECONNABORTED)
				log_err("reading /dev/fuse failed: %s",
					strerror(errno));
			break;
		}
		worker_handle(w, n);
		if (atomic_load(&se->got_destroy))
			break;
		worker_pace_forgets(se, w->buf, n);
	}
	fuse_session_exit(se);
	return NULL;
}

/*
 * A pipe large enough for the biggest read reply lets read data go from
 * the file to /dev/fuse by splice, without a copy through lamina.
 */
static void worker_open_pipe(struct fuse_worker *w)
{
	int size = FUSE_MAX_PAGES_WANTED * 4096 + 4096;

	w->pipe[0] = w->pipe[1] = -1;
	/* Non-blocking, so that draining a failed reply cannot hang. */
	if (pipe2(w->pipe, O_CLOEXEC | O_NONBLOCK) < 0)
		return;
	if (fcntl(w->pipe[1], F_SETPIPE_SZ, size) < size) {
		close(w->pipe[0]);
		close(w->pipe[1]);
		w->pipe[0] = w->pipe[1] = -1;
	}
}

static int worker_start(struct fuse_session *se, struct fuse_worker *w,
			bool first)
{
	int err;

	w->se = se;
	w->fd = first ? se->fd : worker_clone_fd(se);
	if (w->fd < 0)
		return w->fd;
	w->buf = malloc(se->bufsize);
	if (!w->buf)
		return -ENOMEM;
	worker_open_pipe(w);
	err = pthread_create(&w->thread, NULL, worker_main, w);
	return -err;
}

int fuse_session_start(struct fuse_session *se, unsigned int workers,
		       void (*on_exit)(void *arg), void *arg)
{
	unsigned int i;
	int err = 0;

	if (workers < 1)
		workers = 1;
	se->bufsize = FUSE_MAX_PAGES_WANTED * 4096 + 4096;
	se->on_exit = on_exit;
	se->on_exit_arg = arg;
	se->workers = calloc(workers, sizeof(*se->workers));
	if (!se->workers)
		return -ENOMEM;
	for (i = 0; i < workers; i++) {
		err = worker_start(se, &se->workers[i], i == 0);
		if (err)
			break;
		se->nworkers++;
	}
	/* A worker that could not start is a smaller pool, not a failure. */
	if (err && se->nworkers > 0) {
		log_warn("started %u of %u worker threads: %s", se->nworkers,
			 workers, strerror(-err));
		err = 0;
	}
	return err;
}

void fuse_session_join(struct fuse_session *se)
{
	unsigned int i;

	for (i = 0; i < se->nworkers; i++) {
		struct fuse_worker *w = &se->workers[i];

		pthread_join(w->thread, NULL);
		if (w->fd != se->fd)
			close(w->fd);
		if (w->pipe[0] >= 0) {
			close(w->pipe[0]);
			close(w->pipe[1]);
		}
		free(w->buf);
	}
	free(se->workers);
	fuse_uring_join(se);
	se->workers = NULL;
	se->nworkers = 0;
}
