// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directory readahead through the mount. A program that stats names in a
 * directory without listing it, as git status does for every file it
 * tracks, makes the kernel ask for each name with its own LOOKUP round
 * trip. One listing with attributes (READDIRPLUS) gives the kernel a few
 * hundred entries at once. So once callers have looked up two names in a
 * directory, or one name where its parent was listed ahead, a reader
 * lists it through the mount. The names that the caller stats next are
 * then in the kernel's cache.
 *
 * The readers are threads of a child process (readahead_child.c), never
 * of the daemon. A request that the daemon has taken is waited for
 * uninterruptibly, so a reader inside the daemon would keep a dying
 * daemon from ever finishing its exit, and the mount with it. The child
 * has no /dev/fuse descriptor: when the daemon dies, the kernel ends
 * the connection, which fails the child's requests, and the child is
 * killed with its parent.
 *
 * The child works in a private copy of the mount, made with open_tree()
 * and OPEN_TREE_CLONE right after mounting: a second mount of the same
 * superblock, which no unmount of the mount point finds busy. The copy
 * keeps the superblock alive, though, so a watch on the mount table stops
 * the child once no mount of the superblock is left, and the
 * kernel ends the connection when it has gone. Making the copy needs
 * CAP_SYS_ADMIN over the mount namespace; without it there is no
 * readahead.
 */
#include "ovl.h"
#include "../common/log.h"
#include "fuse/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RA_HELLO_MS 2000 /* for the child to report its threads */
/* Below this limit of open files, the listings of the readers could take
 * the descriptors that callers' requests need. */
#define RA_MIN_NOFILE 1024
#define RA_EXIT_MS 2000 /* for the child to exit at the end */
/* How long the hand-off pauses after each path sent: the readers' requests
 * keep coming from other callers for about that long. */
#define RA_HANDOFF_PAUSE_NS 20000000u

struct ovl_readahead {
	char *mountpoint;
	dev_t dev;	    /* of this mount's superblock */
	int sock;	    /* paths to the child; shut down once unmounted */
	pid_t pid;	    /* the child */
	atomic_bool reaped; /* then pid may belong to another process */
	atomic_bool on;	    /* started, still mounted, and the child alive */
	uint32_t tids[OVL_READAHEAD_THREADS]; /* the child's readers */
	unsigned int ntids;
	struct ovl_mount_watch watch;
	bool watching;
};

/* The private copy of the mount, checked to be a mount of dev. */
static int open_copy(const char *mountpoint, dev_t dev)
{
	dev_t copy_dev;
	int fd, err;

	fd = (int)syscall(SYS_open_tree, AT_FDCWD, mountpoint,
			  OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = fuse_mount_dev(fd, "", &copy_dev);
	if (!err && (!dev || dev != copy_dev))
		err = -ESTALE;
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

/* In the child after fork(): put the two descriptors where the child
 * expects them, close every other one above stderr, and start it. */
static void exec_child(int copy, int sock, pid_t parent)
{
	char *argv[] = {OVL_READAHEAD_CHILD, NULL};
	sigset_t all;
	int c, s;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(1);
	c = fcntl(copy, F_DUPFD, 10);
	s = fcntl(sock, F_DUPFD, 10);
	if (c < 0 || s < 0 || dup2(c, OVL_READAHEAD_COPY_FD) < 0 ||
	    dup2(s, OVL_READAHEAD_SOCK_FD) < 0)
		_exit(1);
	close_range(OVL_READAHEAD_SOCK_FD + 1, ~0U, 0);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGPIPE, SIG_DFL);
	execv("/proc/self/exe", argv);
	_exit(1);
}

/* Wait for the child's first message, the thread ids of its readers. */
static int read_hello(struct ovl_readahead *ra)
{
	struct pollfd p = {.fd = ra->sock, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, RA_HELLO_MS) != 1)
		return -ETIMEDOUT;
	n = recv(ra->sock, ra->tids, sizeof(ra->tids), MSG_DONTWAIT);
	if (n <= 0 || n % sizeof(uint32_t))
		return n < 0 ? -errno : -EPROTO;
	ra->ntids = n / sizeof(uint32_t);
	return 0;
}

/* Reap the child if it has exited. */
static void reap_exited(struct ovl_readahead *ra)
{
	if (!atomic_load(&ra->reaped) &&
	    waitpid(ra->pid, NULL, WNOHANG) == ra->pid)
		atomic_store(&ra->reaped, true);
}

/* Kill the child, unless it was reaped already. */
static void kill_child(struct ovl_readahead *ra)
{
	if (!atomic_load(&ra->reaped))
		kill(ra->pid, SIGKILL);
}

/* Reap the child, waiting at most RA_EXIT_MS. */
static void reap_child(struct ovl_readahead *ra)
{
	struct timespec pause = {0, 10 * 1000 * 1000};
	int i;

	for (i = 0; i < RA_EXIT_MS / 10; i++) {
		reap_exited(ra);
		if (atomic_load(&ra->reaped))
			return;
		nanosleep(&pause, NULL);
	}
	log_warn("the directory reader process %d did not exit", (int)ra->pid);
}

/* The daemon got SIGCHLD: reap the child if that was it. */
void ovl_readahead_reap(struct ovl_fs *fs)
{
	if (fs->readahead)
		reap_exited(fs->readahead);
}

/* Start the child. Called before the daemon has other threads. */
static int spawn_child(struct ovl_readahead *ra, int copy)
{
	pid_t parent = getpid();
	int sv[2], err;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ra->pid = fork();
	if (ra->pid == 0)
		exec_child(copy, sv[1], parent);
	err = ra->pid < 0 ? -errno : 0;
	close(sv[1]);
	ra->sock = sv[0];
	if (!err)
		err = read_hello(ra);
	if (err && ra->pid > 0) {
		kill_child(ra);
		reap_child(ra);
	}
	if (err)
		close(ra->sock);
	return err;
}

/*
 * Make the private copy right after mounting, while the mount point
 * surely leads to this mount, and start the child that lists through it.
 * The readahead goes on at INIT.
 */
void ovl_readahead_probe(struct ovl_fs *fs)
{
	struct ovl_readahead *ra;
	struct rlimit rl;
	int copy, err;

	if (!fs->config.prefetch)
		return;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < RA_MIN_NOFILE) {
		log_info(
		    "no directory readahead: the open file limit %llu is below %d",
		    (unsigned long long)rl.rlim_cur, RA_MIN_NOFILE);
		return;
	}
	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return;
	ra->dev = fuse_session_mount_dev(fs->se);
	copy = open_copy(fs->config.mountpoint, ra->dev);
	if (copy < 0) {
		log_debug(
		    "no directory readahead: copying the mount %s failed: %s",
		    fs->config.mountpoint, strerror(-copy));
		free(ra);
		return;
	}
	err = spawn_child(ra, copy);
	close(copy);
	ra->mountpoint = err ? NULL : strdup(fs->config.mountpoint);
	if (!ra->mountpoint) {
		if (!err) {
			close(ra->sock);
			reap_child(ra);
		}
		log_warn(
		    "no directory readahead: starting its process failed: %s",
		    strerror(err ? -err : ENOMEM));
		free(ra);
		return;
	}
	fs->readahead = ra;
}

static bool is_reader(struct ovl_readahead *ra, uint32_t pid)
{
	unsigned int i;

	for (i = 0; i < ra->ntids; i++)
		if (ra->tids[i] == pid)
			return true;
	return false;
}

/* Whether the request came from a thread of the reader process. */
bool ovl_readahead_is_reader(struct ovl_fs *fs, uint32_t pid)
{
	return fs->readahead && is_reader(fs->readahead, pid);
}

/* Pass dir's path to the child. A full socket drops it. */
static void send_path(struct ovl_fs *fs, struct ovl_node *dir)
{
	struct ovl_readahead *ra = fs->readahead;
	char path[OVL_PATH_MAX];

	if (ovl_node_path(fs, dir, path, sizeof(path)))
		return;
	/* An empty message would read as the end of the stream. */
	if (!path[0])
		strcpy(path, ".");
	if (send(ra->sock, path, strlen(path), MSG_DONTWAIT | MSG_NOSIGNAL) >=
	    0) {
		fuse_session_pause_handoff(fs->se, RA_HANDOFF_PAUSE_NS);
		return;
	}
	if (errno == EAGAIN)
		return;
	if (atomic_exchange(&ra->on, false)) {
		log_warn(
		    "the directory reader process stopped: %s; no more readahead",
		    strerror(errno));
		reap_exited(ra);
	}
}

/* Whether dir was listed ahead as a subdirectory of a queued directory,
 * or is one of those directories' subdirectories. The rename lock keeps
 * the parents in place. */
static bool below_queued(struct ovl_fs *fs, const struct ovl_node *dir)
{
	const struct ovl_node *parent;
	bool below = false;

	pthread_rwlock_rdlock(&fs->rename_lock);
	parent = dir->parent;
	if (parent && ovl_node_has(parent, OVL_N_RA_QUEUED))
		below = true;
	else if (parent && parent->parent)
		below = ovl_node_has(parent->parent, OVL_N_RA_QUEUED);
	pthread_rwlock_unlock(&fs->rename_lock);
	return below;
}

/*
 * A caller other than a reader looked up a name in dir. The second such
 * lookup queues dir, or the first where the walk of a directory listed
 * ahead most likely goes on. A node is queued once in its life.
 */
void ovl_readahead_note(struct ovl_fs *fs, struct ovl_node *dir, uint32_t pid)
{
	struct ovl_readahead *ra = fs->readahead;
	unsigned int flags;

	if (!ra || !atomic_load(&ra->on) || is_reader(ra, pid))
		return;
	flags = atomic_load(&dir->flags);
	if (flags & OVL_N_RA_QUEUED)
		return;
	if (!(flags & OVL_N_RA_SEEN) && !below_queued(fs, dir)) {
		atomic_fetch_or(&dir->flags, OVL_N_RA_SEEN);
		return;
	}
	if (atomic_fetch_or(&dir->flags, OVL_N_RA_QUEUED) & OVL_N_RA_QUEUED)
		return;
	send_path(fs, dir);
}

/*
 * The last mount of the superblock is gone (mount_watch.c): stop the
 * child, stopped by a signal or not. The copy closes as it exits, and the
 * superblock can end then. A request of the child that the daemon is
 * serving still gets its reply first.
 */
static void mount_gone(void *arg)
{
	struct ovl_readahead *ra = arg;

	atomic_store(&ra->on, false);
	shutdown(ra->sock, SHUT_RDWR);
	kill_child(ra);
	log_debug("directory readahead stops: %s is unmounted", ra->mountpoint);
}

void ovl_readahead_start(struct ovl_fs *fs)
{
	struct ovl_readahead *ra = fs->readahead;
	int err;

	if (!ra || ra->watching)
		return;
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
	atomic_store(&ra->on, true);
}

/*
 * Stop the child and free everything. Call it after the connection has
 * ended, so that no reader still waits inside a request.
 */
void ovl_readahead_stop(struct ovl_fs *fs)
{
	struct ovl_readahead *ra = fs->readahead;

	if (!ra)
		return;
	atomic_store(&ra->on, false);
	if (ra->watching)
		ovl_mount_watch_stop(&ra->watch);
	fs->readahead = NULL;
	close(ra->sock);
	kill_child(ra);
	reap_child(ra);
	free(ra->mountpoint);
	free(ra);
}
