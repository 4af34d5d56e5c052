// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A link between a mount's daemon and lamina umount. The daemon listens
 * on an abstract socket named after its mount point until it has
 * finished. So lamina umount can wait for the daemon's cleanup (the
 * volatile marker, the workdir lock) before it returns.
 */
#include "cli.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Seconds lamina umount waits for the daemon to finish. */
#define DAEMON_EXIT_WAIT 30

static socklen_t link_address(const char *mountpoint, struct sockaddr_un *a)
{
	unsigned long long h = 0xcbf29ce484222325ULL;
	const char *p;
	int n;

	for (p = mountpoint; *p; p++)
		h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	/* Abstract: the name starts with a NUL byte and has no file. */
	n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1,
		     "lamina-daemon-%016llx", h);
	return offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

/* Daemon side: listen until the descriptor is closed at exit. */
int daemon_link_listen(const char *mountpoint)
{
	struct sockaddr_un a;
	socklen_t len = link_address(mountpoint, &a);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, 16) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* lamina umount side: connect before unmounting; -1 if no daemon. */
int daemon_link_connect(const char *mountpoint)
{
	struct sockaddr_un a;
	socklen_t len = link_address(mountpoint, &a);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Wait until the daemon has closed its end, that is, has exited. */
void daemon_link_wait(int fd, const char *mountpoint)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	char byte;

	if (fd < 0)
		return;
	if (poll(&p, 1, DAEMON_EXIT_WAIT * 1000) <= 0)
		fprintf(stderr, "lamina: warning: the daemon of %s is still running after %d seconds\n",
			mountpoint, DAEMON_EXIT_WAIT);
	else if (read(fd, &byte, 1) < 0 && errno != ECONNRESET)
		fprintf(stderr, "lamina: warning: waiting for the daemon of %s failed: %s\n",
			mountpoint, strerror(errno));
	close(fd);
}
