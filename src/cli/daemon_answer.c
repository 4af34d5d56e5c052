// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The daemon's side of the daemon link: one thread accepts connections
 * on the link's socket and answers "config" requests. Any other client
 * that sends nothing, such as lamina umount, is held open until the
 * daemon has finished, so that it can wait for the daemon's exit.
 *
 * The thread must never stall the mount or let a client crash the
 * daemon: reads never block, a reply may take at most a few seconds,
 * only root and the daemon's own user are answered, and a fixed number
 * of clients is held; beyond that, new connections are closed at once.
 */
#include "cli.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LINK_CLIENTS 32
#define LINK_REQUEST_MAX 32
/* Seconds one reply may take before the client is dropped. */
#define LINK_SEND_TIMEOUT 2

struct link_client {
	int fd; /* -1 for a free slot */
	size_t len;
	char request[LINK_REQUEST_MAX];
};

static struct {
	pthread_t thread;
	bool started; /* clients[] contains descriptors */
	bool running;
	int listen_fd;
	int stop_pipe[2];
	daemon_link_reply_fn reply;
	void *arg;
	struct link_client clients[LINK_CLIENTS];
} server = {.listen_fd = -1, .stop_pipe = {-1, -1}};

static void client_close(struct link_client *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

/* Send all of buf, giving up once the client stops reading. */
static void client_send(struct link_client *c, const char *buf, size_t len)
{
	struct timeval tv = {.tv_sec = LINK_SEND_TIMEOUT};
	time_t deadline = time(NULL) + LINK_SEND_TIMEOUT;
	ssize_t n;

	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (len && time(NULL) <= deadline) {
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		buf += n;
		len -= (size_t)n;
	}
}

static void client_answer(struct link_client *c)
{
	size_t len = 0;
	char *reply;

	if (strcmp(c->request, "config")) {
		client_send(c, "error=unknown request", 22);
	} else {
		reply = server.reply(server.arg, &len);
		if (reply)
			client_send(c, reply, len);
		free(reply);
	}
	client_close(c);
}

/* Read a client's request and reply once a whole line has arrived. */
static void client_read(struct link_client *c)
{
	char *newline;
	ssize_t n = recv(c->fd, c->request + c->len,
			 sizeof(c->request) - 1 - c->len, MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_close(c);
		return;
	}
	c->len += (size_t)n;
	c->request[c->len] = '\0';
	newline = strchr(c->request, '\n');
	if (newline) {
		*newline = '\0';
		client_answer(c);
	} else if (c->len == sizeof(c->request) - 1) {
		client_close(c); /* no request is this long */
	}
}

static bool peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static void server_accept(void)
{
	int fd = accept4(server.listen_fd, NULL, NULL, SOCK_CLOEXEC), i;

	if (fd < 0)
		return;
	if (!peer_allowed(fd)) {
		close(fd);
		return;
	}
	for (i = 0; i < LINK_CLIENTS; i++) {
		if (server.clients[i].fd < 0) {
			server.clients[i].fd = fd;
			return;
		}
	}
	close(fd); /* every slot is taken */
}

static void *server_main(void *unused)
{
	struct pollfd p[LINK_CLIENTS + 2];
	int i;

	(void)unused;
	for (;;) {
		p[0] = (struct pollfd){.fd = server.stop_pipe[0],
				       .events = POLLIN};
		p[1] =
		    (struct pollfd){.fd = server.listen_fd, .events = POLLIN};
		for (i = 0; i < LINK_CLIENTS; i++)
			p[i + 2] = (struct pollfd){.fd = server.clients[i].fd,
						   .events = POLLIN};
		if (poll(p, LINK_CLIENTS + 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_warn(
			    "the daemon link stopped answering: poll failed: %s",
			    strerror(errno));
			return NULL;
		}
		if (p[0].revents)
			return NULL;
		for (i = 0; i < LINK_CLIENTS; i++)
			if (server.clients[i].fd >= 0 && p[i + 2].revents)
				client_read(&server.clients[i]);
		if (p[1].revents & POLLIN)
			server_accept();
	}
}

/*
 * Start the thread that replies on listen_fd (from daemon_link_listen)
 * in the daemon process. reply builds the configuration for each
 * request, on the link's thread, until daemon_link_stop() returns.
 */
int daemon_link_serve(int listen_fd, daemon_link_reply_fn reply, void *arg)
{
	int i, err;

	if (listen_fd < 0 || server.running)
		return -EINVAL;
	for (i = 0; i < LINK_CLIENTS; i++)
		server.clients[i].fd = -1;
	server.started = true;
	if (pipe2(server.stop_pipe, O_CLOEXEC) < 0)
		return -errno;
	server.listen_fd = listen_fd;
	server.reply = reply;
	server.arg = arg;
	err = pthread_create(&server.thread, NULL, server_main, NULL);
	if (err) {
		close(server.stop_pipe[0]);
		close(server.stop_pipe[1]);
		return -err;
	}
	server.running = true;
	return 0;
}

/* Stop answering. Held clients stay connected until daemon_link_release. */
void daemon_link_stop(void)
{
	if (!server.running)
		return;
	if (write(server.stop_pipe[1], "", 1) != 1)
		log_warn("stopping the daemon link failed: %s",
			 strerror(errno));
	pthread_join(server.thread, NULL);
	close(server.stop_pipe[0]);
	close(server.stop_pipe[1]);
	server.running = false;
}

/* Let the held clients (lamina umount) see that the daemon has finished. */
void daemon_link_release(void)
{
	int i;

	daemon_link_stop();
	for (i = 0; server.started && i < LINK_CLIENTS; i++)
		if (server.clients[i].fd >= 0)
			client_close(&server.clients[i]);
}
