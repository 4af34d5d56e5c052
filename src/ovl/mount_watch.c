// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A watch on the mount table: a thread that calls back once no mount of
 * a given superblock is left in the daemon's mount namespace. poll() on
 * /proc/self/mountinfo reports every change of the table, after which
 * the thread reads the table again.
 */
#include "ovl.h"
#include "../common/log.h"
#include "fuse/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MOUNTINFO "/proc/self/mountinfo"

static void *watch_main(void *arg)
{
	struct ovl_mount_watch *w = arg;
	struct pollfd fds[2] = {
	    {.fd = w->table_fd, .events = POLLPRI},
	    {.fd = w->wake_fd, .events = POLLIN},
	};
	int mounted;

	for (;;) {
		mounted = fuse_dev_mounted(w->dev);
		if (mounted < 0)
			log_warn(
			    "reading %s failed: %s; directory readahead stops",
			    MOUNTINFO, strerror(-mounted));
		if (mounted <= 0) {
			w->gone(w->arg);
			return NULL;
		}
		if (poll(fds, 2, -1) < 0 && errno != EINTR) {
			log_warn(
			    "poll() on %s failed: %s; directory readahead stops",
			    MOUNTINFO, strerror(errno));
			w->gone(w->arg);
			return NULL;
		}
		if (fds[1].revents)
			return NULL; /* ovl_mount_watch_stop() */
	}
}

/* Start watching for the last mount of dev to go; gone(arg) runs then,
 * in the watch's thread. */
int ovl_mount_watch_start(struct ovl_mount_watch *w, dev_t dev,
			  void (*gone)(void *arg), void *arg)
{
	int err;

	w->dev = dev;
	w->gone = gone;
	w->arg = arg;
	w->table_fd = open(MOUNTINFO, O_RDONLY | O_CLOEXEC);
	if (w->table_fd < 0)
		return -errno;
	w->wake_fd = eventfd(0, EFD_CLOEXEC);
	if (w->wake_fd < 0) {
		err = -errno;
		close(w->table_fd);
		return err;
	}
	err = pthread_create(&w->thread, NULL, watch_main, w);
	if (err) {
		close(w->table_fd);
		close(w->wake_fd);
		return -err;
	}
	pthread_setname_np(w->thread, "lamina-mntwatch");
	return 0;
}

/* Stop the watch and wait for its thread, which may be inside gone(). */
void ovl_mount_watch_stop(struct ovl_mount_watch *w)
{
	uint64_t wake = 1;

	if (write(w->wake_fd, &wake, sizeof(wake)) < 0)
		log_warn("waking the mount watch failed: %s", strerror(errno));
	pthread_join(w->thread, NULL);
	close(w->table_fd);
	close(w->wake_fd);
}
