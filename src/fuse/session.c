// SPDX-License-Identifier: GPL-2.0-or-later
/* Opening /dev/fuse, mounting and unmounting. */
#include "internal.h"
#include "../common/log.h"
#include "../common/mountflags.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

int fuse_session_new(const struct fuse_ops *ops, void *fs, bool debug,
		     struct fuse_session **out)
{
	struct fuse_session *se = calloc(1, sizeof(*se));

	if (!se)
		return -ENOMEM;
	se->fd = -1;
	se->fusermount_status = -1;
	se->ops = ops;
	se->fs = fs;
	se->debug = debug;
	pthread_mutex_init(&se->ready_lock, NULL);
	pthread_cond_init(&se->ready_cond, NULL);
	pthread_mutex_init(&se->uring_lock, NULL);
	pthread_cond_init(&se->uring_cond, NULL);
	pthread_cond_init(&se->guard_cond, NULL);
	*out = se;
	return 0;
}

int fuse_session_fd(const struct fuse_session *se)
{
	return se->fd;
}

static int mount_options(char *buf, size_t size, int fd, mode_t rootmode,
			 const struct fuse_mount_opts *opts)
{
	int n = snprintf(buf, size,
			 "fd=%d,rootmode=%o,user_id=%u,group_id=%u%s%s", fd,
			 rootmode & S_IFMT, getuid(), getgid(),
			 opts->allow_other ? ",allow_other" : "",
			 opts->default_permissions ? ",default_permissions"
						   : "");
	return n < (int)size ? 0 : -ENAMETOOLONG;
}

/* /dev/fuse must be the FUSE character device, 10:229. */
static int check_fuse_device(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 229))
		return -ENODEV;
	return 0;
}

static int mount_direct(struct fuse_session *se, const char *mnt,
			const struct fuse_mount_opts *opts)
{
	unsigned long flags = opts->mount_flags;
	char type[64], data[256];
	struct stat st;
	int err;

	if (stat(mnt, &st) < 0)
		return -errno;
	se->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
	if (se->fd < 0)
		return -errno;
	err = check_fuse_device(se->fd);
	if (err) {
		close(se->fd);
		se->fd = -1;
		return err;
	}
	err = mount_options(data, sizeof(data), se->fd, st.st_mode, opts);
	if (err)
		return err;
	/* Only root may keep set-user-ID programs and devices usable. */
	if (getuid() != 0)
		flags |= MS_NOSUID | MS_NODEV;
	snprintf(type, sizeof(type), "fuse.%s", opts->subtype);
	if (mount(opts->source, mnt, type, flags, data) < 0) {
		err = -errno;
		close(se->fd);
		se->fd = -1;
		return err;
	}
	return 0;
}

/* Receive the /dev/fuse descriptor that fusermount3 sends back. */
static int receive_fd(int sock)
{
	char byte, ctrl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctrl,
			     .msg_controllen = sizeof(ctrl)};
	struct cmsghdr *cmsg;
	ssize_t n;
	int fd;

	do
		n = recvmsg(sock, &msg, 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n < 0 ? -errno : -EIO;
	cmsg = CMSG_FIRSTHDR(&msg);
	if (!cmsg || cmsg->cmsg_type != SCM_RIGHTS)
		return -EIO;
	memcpy(&fd, CMSG_DATA(cmsg), sizeof(fd));
	return fd;
}

/* Escape commas and backslashes, which fusermount3's option list uses. */
static void escape_option(char *buf, size_t size, const char *value)
{
	size_t n = 0;

	for (; *value && n + 2 < size; value++) {
		if (*value == ',' || *value == '\\')
			buf[n++] = '\\';
		buf[n++] = *value;
	}
	buf[n] = '\0';
}

/*
 * Read a helper's standard error to the end, keeping its first line
 * without a "fusermount3: " prefix.
 */
static void read_helper_error(int fd, char *buf, size_t size)
{
	static const char prefix[] = "fusermount3: ";
	char chunk[512];
	size_t len = 0;
	ssize_t n;

	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		if (len + 1 < size) {
			size_t take = (size_t)n < size - 1 - len
					  ? (size_t)n
					  : size - 1 - len;

			memcpy(buf + len, chunk, take);
			len += take;
		}
	}
	buf[len] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (!strncmp(buf, prefix, sizeof(prefix) - 1))
		memmove(buf, buf + sizeof(prefix) - 1,
			strlen(buf) - (sizeof(prefix) - 1) + 1);
}

/* Start fusermount3 with the socket end and a pipe as standard error. */
static pid_t start_fusermount(const char *optstr, const char *mnt, int sock,
			      int err_fd)
{
	char commfd[16];
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	fcntl(sock, F_SETFD, 0);
	dup2(err_fd, STDERR_FILENO);
	snprintf(commfd, sizeof(commfd), "%d", sock);
	setenv("_FUSE_COMMFD", commfd, 1);
	execlp("fusermount3", "fusermount3", "-o", optstr, "--", mnt,
	       (char *)NULL);
	_exit(127);
}

static int mount_fusermount(struct fuse_session *se, const char *mnt,
			    const struct fuse_mount_opts *opts)
{
	char optstr[1024], source[512];
	int sv[2], errpipe[2], status, fd;
	pid_t pid;

	escape_option(source, sizeof(source), opts->source);
	snprintf(optstr, sizeof(optstr), "fsname=%s,subtype=%s%s%s", source,
		 opts->subtype, opts->allow_other ? ",allow_other" : "",
		 opts->default_permissions ? ",default_permissions" : "");
	mount_flags_append(optstr, sizeof(optstr), opts->mount_flags);
	if (pipe2(errpipe, O_CLOEXEC) < 0)
		return -errno;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		fd = -errno;
		goto out_pipe;
	}
	pid = start_fusermount(optstr, mnt, sv[0], errpipe[1]);
	close(sv[0]);
	close(errpipe[1]);
	errpipe[1] = -1;
	fd = pid < 0 ? -errno : receive_fd(sv[1]);
	close(sv[1]);
	if (pid > 0) {
		read_helper_error(errpipe[0], se->fusermount_error,
				  sizeof(se->fusermount_error));
		waitpid(pid, &status, 0);
		se->fusermount_status = WIFEXITED(status)
					    ? WEXITSTATUS(status)
					    : 128 + WTERMSIG(status);
	}
	if (fd >= 0) {
		if (se->fusermount_error[0])
			log_warn("fusermount3: %s", se->fusermount_error);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		se->fd = fd;
		fd = 0;
	}
out_pipe:
	close(errpipe[0]);
	if (errpipe[1] >= 0)
		close(errpipe[1]);
	return fd;
}

/* Linux 6.8: an ID that no later mount gets again. */
#ifndef STATX_MNT_ID_UNIQUE
#define STATX_MNT_ID_UNIQUE 0x4000U
#endif

/*
 * Get the device number and mount ID of the mount at dirfd/path. A
 * device number of an unmounted FUSE or tmpfs filesystem goes to the
 * next such mount, so only both together identify a mount. The ID is the
 * unique one where the kernel has it, else 0; id may be NULL.
 */
static int mount_ident(int dirfd, const char *path, dev_t *dev, uint64_t *id)
{
	struct statx stx;

	if (statx(dirfd, path,
		  AT_EMPTY_PATH | AT_STATX_DONT_SYNC | AT_NO_AUTOMOUNT,
		  STATX_TYPE | STATX_MNT_ID_UNIQUE, &stx) < 0)
		return -errno;
	*dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
	if (id)
		*id = stx.stx_mask & STATX_MNT_ID_UNIQUE ? stx.stx_mnt_id : 0;
	return 0;
}

int fuse_mount_dev(int dirfd, const char *path, dev_t *dev)
{
	return mount_ident(dirfd, path, dev, NULL);
}

int fuse_session_mount(struct fuse_session *se, const char *mountpoint,
		       const struct fuse_mount_opts *opts)
{
	int err;

	/*
	 * EACCES: /dev/fuse is not open to this user (mode 0600), which the
	 * set-user-ID fusermount3 does not mind.
	 */
	err = mount_direct(se, mountpoint, opts);
	if ((err == -EPERM || err == -EACCES) && getuid() != 0)
		err = mount_fusermount(se, mountpoint, opts);
	if (err)
		return err;
	se->mountpoint = strdup(mountpoint);
	if (!se->mountpoint) {
		fuse_session_unmount(se);
		return -ENOMEM;
	}
	/* Right after mounting the mount point surely leads to this mount. */
	if (mount_ident(AT_FDCWD, mountpoint, &se->mount_dev, &se->mount_id)) {
		se->mount_dev = 0;
		se->mount_id = 0;
	}
	return 0;
}

static void unmount_fusermount(const char *mnt)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", "--", mnt,
		       (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, &status, 0);
}

/* Whether a mountinfo line is of a FUSE filesystem with device dev. */
static bool fuse_line_of(const char *line, dev_t dev)
{
	unsigned int major, minor;
	const char *type = strstr(line, " - ");

	return sscanf(line, "%*d %*d %u:%u", &major, &minor) == 2 &&
	       makedev(major, minor) == dev && type &&
	       !strncmp(type + 3, "fuse", 4);
}

/*
 * Whether a FUSE mount with device number dev is in this mount
 * namespace. The type check excludes a later mount of another type,
 * such as tmpfs, that got the same number.
 */
int fuse_dev_mounted(dev_t dev)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t size = 0;
	int found = 0;

	if (!f)
		return -errno;
	while (!found && getline(&line, &size, f) > 0)
		found = fuse_line_of(line, dev);
	free(line);
	fclose(f);
	return found;
}

int fuse_session_fusermount_status(const struct fuse_session *se)
{
	return se->fusermount_status;
}

const char *fuse_session_fusermount_error(const struct fuse_session *se)
{
	return se->fusermount_error;
}

dev_t fuse_session_mount_dev(const struct fuse_session *se)
{
	return se->mount_dev;
}

/*
 * Unmount, lazily if the mount is busy: a stopping daemon cannot wait
 * for open files to close, and a lazy unmount lets them finish.
 * umount2() goes by path. When another filesystem now covers the mount
 * point, or took its place after an unmount, an unmount would remove
 * that filesystem, so nothing is unmounted.
 */
void fuse_session_unmount(struct fuse_session *se)
{
	uint64_t id;
	dev_t dev;

	if (!se->mountpoint)
		return;
	if (se->mount_dev &&
	    mount_ident(AT_FDCWD, se->mountpoint, &dev, &id) == 0 &&
	    (dev != se->mount_dev || id != se->mount_id)) {
		/* Not when unmounted already, as by umount(8). An unreadable
		 * table counts as still mounted. */
		if (fuse_dev_mounted(se->mount_dev) != 0)
			log_warn(
			    "another filesystem is mounted over %s, so lamina leaves it and its own mount below it mounted: run umount twice",
			    se->mountpoint);
		free(se->mountpoint);
		se->mountpoint = NULL;
		return;
	}
	if (umount2(se->mountpoint, 0) < 0 &&
	    umount2(se->mountpoint, MNT_DETACH) < 0) {
		if (errno == EPERM)
			unmount_fusermount(se->mountpoint);
		else if (errno != EINVAL && errno != ENOENT)
			log_warn("unmount %s failed: %s", se->mountpoint,
				 strerror(errno));
	}
	free(se->mountpoint);
	se->mountpoint = NULL;
}

void fuse_session_destroy(struct fuse_session *se)
{
	if (!se)
		return;
	fuse_session_unmount(se);
	if (se->fd >= 0)
		close(se->fd);
	pthread_mutex_destroy(&se->ready_lock);
	pthread_cond_destroy(&se->ready_cond);
	free(se);
}

void fuse_session_mark_ready(struct fuse_session *se)
{
	pthread_mutex_lock(&se->ready_lock);
	se->ready_done = true;
	pthread_cond_broadcast(&se->ready_cond);
	pthread_mutex_unlock(&se->ready_lock);
}

bool fuse_session_wait_ready(struct fuse_session *se)
{
	pthread_mutex_lock(&se->ready_lock);
	while (!se->ready_done)
		pthread_cond_wait(&se->ready_cond, &se->ready_lock);
	pthread_mutex_unlock(&se->ready_lock);
	return atomic_load(&se->got_init);
}
