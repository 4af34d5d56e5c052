// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A link between a mount's daemon and the commands that manage it. The
 * daemon listens on an abstract socket named after its mount point until
 * it has finished. lamina umount connects and waits for the daemon's
 * cleanup (the volatile marker, the workdir lock) before it returns;
 * lamina status, diff and reset send "config" and read the daemon's
 * configuration (daemon_answer.c is the daemon's side).
 */
#include "cli.h"
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Seconds lamina umount waits for the daemon to finish. */
#define DAEMON_EXIT_WAIT 30
/* Milliseconds between two checks of the state of a daemon that has not
 * finished yet. */
#define DAEMON_STATE_INTERVAL 200
/* Connections that may wait for the daemon to accept them */
#define DAEMON_LINK_BACKLOG 16
/* Seconds a query waits for the daemon's whole reply. */
#define DAEMON_QUERY_WAIT 5
/* Largest reply accepted: 500 lower layers of PATH_MAX bytes and more. */
#define DAEMON_REPLY_MAX (4 << 20)

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
	if (bind(fd, (struct sockaddr *)&a, len) < 0 ||
	    listen(fd, DAEMON_LINK_BACKLOG) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * Daemon side, in the child that serves after the mount command forked:
 * listen again. A client's SO_PEERCRED then names this process instead
 * of the parent that exited, because the kernel records the credentials
 * of the process that last called listen() (see unix(7)).
 */
void daemon_link_adopt(int fd)
{
	if (fd >= 0)
		listen(fd, DAEMON_LINK_BACKLOG);
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

/*
 * The state of process pid, the letter after its name in /proc/PID/stat
 * ('S' sleeping, 'T' stopped by a signal, 't' stopped by a tracer, ...),
 * or 0 when it cannot be read.
 */
static char process_state(pid_t pid)
{
	char path[64], stat[512], *name_end;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, stat, sizeof(stat) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	stat[n] = '\0';
	/* The name is in parentheses and may itself contain ')'. */
	name_end = strrchr(stat, ')');
	if (!name_end || name_end[1] != ' ')
		return 0;
	return name_end[2];
}

/*
 * Report a stopped daemon, which cannot finish until it is resumed, and
 * return true. Returns false when pid is not stopped.
 */
static bool report_stopped(pid_t pid, const char *mountpoint)
{
	char state = pid > 0 ? process_state(pid) : 0;

	if (state == 'T')
		fprintf(
		    stderr,
		    "lamina: warning: %s is unmounted, but its daemon, pid %d, is stopped (state T), so it cannot finish and still holds the upper and work directories; resume it with kill -CONT %d\n",
		    mountpoint, (int)pid, (int)pid);
	else if (state == 't')
		fprintf(
		    stderr,
		    "lamina: warning: %s is unmounted, but its daemon, pid %d, is stopped by a debugger or tracer (state t), so it cannot finish and still holds the upper and work directories; let the tracer resume or detach from it\n",
		    mountpoint, (int)pid);
	return state == 'T' || state == 't';
}

/*
 * Wait until the daemon has closed its end, that is, has exited. A
 * daemon that is stopped is reported at once instead of at the end of
 * the wait.
 */
void daemon_link_wait(int fd, const char *mountpoint)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	struct ucred peer;
	socklen_t len = sizeof(peer);
	pid_t pid = 0;
	int waited, ready = 0;
	char byte;

	if (fd < 0)
		return;
	/* 0 when the daemon is in a pid namespace that this one cannot see */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0)
		pid = peer.pid;
	for (waited = 0; waited < DAEMON_EXIT_WAIT * 1000;
	     waited += DAEMON_STATE_INTERVAL) {
		ready = poll(&p, 1, DAEMON_STATE_INTERVAL);
		if (ready != 0 && !(ready < 0 && errno == EINTR))
			break;
		if (report_stopped(pid, mountpoint)) {
			close(fd);
			return;
		}
	}
	if (ready <= 0)
		fprintf(
		    stderr,
		    "lamina: warning: the daemon of %s is still running after %d seconds; another mount of the same filesystem, such as a copy in another mount namespace, keeps it serving\n",
		    mountpoint, DAEMON_EXIT_WAIT);
	else if (read(fd, &byte, 1) < 0 && errno != ECONNRESET)
		fprintf(
		    stderr,
		    "lamina: warning: waiting for the daemon of %s failed: %s\n",
		    mountpoint, strerror(errno));
	close(fd);
}

/* Read the daemon's reply until it closes the connection. */
static int query_read(int fd, char **reply, size_t *len)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	size_t cap = 0, n = 0;
	char *buf = NULL, *grown;
	ssize_t got;
	int err = 0;

	for (;;) {
		if (n + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			grown =
			    cap > DAEMON_REPLY_MAX ? NULL : realloc(buf, cap);
			if (!grown) {
				err = cap > DAEMON_REPLY_MAX ? -EMSGSIZE
							     : -ENOMEM;
				break;
			}
			buf = grown;
		}
		if (poll(&p, 1, DAEMON_QUERY_WAIT * 1000) <= 0) {
			err = -ETIMEDOUT;
			break;
		}
		got = read(fd, buf + n, cap - n - 1);
		if (got <= 0) {
			err = got < 0 ? -errno : 0;
			break;
		}
		n += (size_t)got;
	}
	if (err) {
		free(buf);
		return err;
	}
	buf[n] = '\0';
	*reply = buf;
	*len = n;
	return 0;
}

/* One "key=value" field of the reply. */
static int query_field(struct cli_stack *s, const char *field, bool *seen)
{
	const char *value = strchr(field, '=');
	char err[1024];
	size_t klen;

	if (!value)
		return -EPROTO;
	klen = (size_t)(value++ - field);
	if (klen == 7 && !strncmp(field, "options", klen)) {
		if (cli_stack_from_options(value, s, err, sizeof(err)))
			return -EPROTO;
		s->options = strdup(value);
		*seen = true;
		return s->options ? 0 : -ENOMEM;
	}
	if (klen == 3 && !strncmp(field, "pid", klen))
		s->pid = (pid_t)atol(value);
	else if (klen == 11 && !strncmp(field, "passthrough", klen))
		s->passthrough = !strcmp(value, "1");
	else if (klen == 8 && !strncmp(field, "io_uring", klen))
		s->io_uring = !strcmp(value, "1");
	else if (klen == 8 && !strncmp(field, "prefetch", klen))
		s->prefetch = !strcmp(value, "1");
	else if (klen == 5 && !strncmp(field, "index", klen))
		s->index = !strcmp(value, "1");
	else if (klen == 8 && !strncmp(field, "metacopy", klen))
		s->metacopy = !strcmp(value, "1");
	else if (klen == 4 && !strncmp(field, "xino", klen))
		snprintf(s->xino, sizeof(s->xino), "%s", value);
	return 0;
}

/*
 * Ask the daemon of mountpoint (canonical) for its configuration: the
 * layers with absolute paths, the options, its pid and whether FUSE
 * passthrough is in use. Returns 0 or a negative errno.
 */
int daemon_link_query(const char *mountpoint, struct cli_stack *s)
{
	int fd = daemon_link_connect(mountpoint), err;
	bool seen = false;
	char *reply = NULL, *p;
	size_t len = 0;

	if (fd < 0)
		return -ECONNREFUSED;
	if (send(fd, "config\n", 7, MSG_NOSIGNAL) != 7) {
		err = -errno;
		close(fd);
		return err;
	}
	err = query_read(fd, &reply, &len);
	close(fd);
	/* Fields end with a NUL byte: paths may hold any other byte. */
	for (p = reply; !err && p && p < reply + len; p += strlen(p) + 1)
		err = query_field(s, p, &seen);
	free(reply);
	if (!err && !seen)
		err = -EPROTO;
	return err;
}
