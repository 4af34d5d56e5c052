// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Whether a live mount uses an upper directory: a lamina daemon holds a
 * flock on it, and a kernel overlay mount names it in mountinfo. The
 * layer commands refuse to change an upper that a mount is using.
 * lamina commit holds the same flock while it runs, and marks the upper
 * with an OFD read lock as well, which no mount takes, so that a second
 * commit can tell it from a mount.
 */
#include "cli.h"
#include "stack.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Undo the kernel's octal escapes (\040 and the like) in place. */
void cli_unescape_octal(char *s)
{
	char *out = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*out++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
					(s[3] - '0'));
			s += 3;
		} else {
			*out++ = *s;
		}
	}
	*out = '\0';
}

/*
 * Whether a directory that an overlay mount was given, dir, is the
 * directory st. mountinfo shows the value as given, so a relative one is
 * taken relative to the mount point's parent, where mount(8) usually ran.
 * NOTE: a relative path given from anywhere else is not found.
 */
static bool same_dir(const char *mountpoint, const char *dir,
		     const struct stat *st)
{
	char path[PATH_MAX];
	const char *slash = strrchr(mountpoint, '/');
	struct stat dst;

	if (!dir)
		return false;
	if (dir[0] == '/')
		snprintf(path, sizeof(path), "%s", dir);
	else
		snprintf(path, sizeof(path), "%.*s/%s",
			 (int)(slash ? slash - mountpoint : 0), mountpoint,
			 dir);
	return stat(path, &dst) == 0 && dst.st_dev == st->st_dev &&
	       dst.st_ino == st->st_ino;
}

/* A kernel overlay mount whose upperdir is st: its mount point. */
static bool kernel_overlay_uses(const struct stat *st, char *mnt, size_t size)
{
	struct cli_mount *mounts;
	struct cli_stack stack;
	char err[1200];
	size_t count, i;
	bool found = false;

	if (cli_mounts_read(&mounts, &count))
		return false;
	for (i = 0; !found && i < count; i++) {
		if (strcmp(mounts[i].fstype, "overlay") ||
		    cli_stack_from_mount(&mounts[i], &stack, err, sizeof(err)))
			continue;
		found = same_dir(mounts[i].mountpoint, stack.upper, st);
		if (found)
			snprintf(mnt, size, "%s", mounts[i].mountpoint);
		cli_stack_free(&stack);
	}
	cli_mounts_free(mounts, count);
	return found;
}

/*
 * Open upperdir, resolved into real (PATH_MAX bytes), as *fd. Returns 0,
 * CLI_UPPER_MOUNTED with a sentence in why when a kernel overlay mount
 * uses it, or a negative errno.
 */
static int open_upper(const char *upperdir, char *real, int *fd, char *why,
		      size_t size)
{
	char mnt[PATH_MAX];
	struct stat st;

	if (!realpath(upperdir, real) || stat(real, &st) < 0)
		return -errno;
	if (kernel_overlay_uses(&st, mnt, sizeof(mnt))) {
		snprintf(why, size, "the overlay mount on %s uses %s", mnt,
			 real);
		return CLI_UPPER_MOUNTED;
	}
	*fd = open(real, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *fd < 0 ? -errno : 0;
}

int cli_upper_in_use(const char *upperdir, char *why, size_t size)
{
	char real[PATH_MAX];
	int fd, busy;

	busy = open_upper(upperdir, real, &fd, why, size);
	if (busy)
		return busy;
	/* A daemon whose mount umount(8) has just removed keeps the lock
	 * for some milliseconds while it exits. */
	if (ovl_flock_wait(fd, 1000) == -EWOULDBLOCK)
		busy = ovl_commit_marked(fd) ? CLI_UPPER_COMMITTING
					     : CLI_UPPER_MOUNTED;
	close(fd); /* also drops the lock if it was taken */
	if (busy == CLI_UPPER_COMMITTING)
		snprintf(why, size, "a lamina commit of %s is running", real);
	else if (busy)
		snprintf(why, size, "a lamina mount uses %s", real);
	return busy;
}

/* Mark fd, an upper that this process has flock-ed, as being committed.
 * NOTE: where the filesystem has no OFD locks, there is no mark, and a
 * second commit takes the running one for a mount. */
static void mark_commit(int fd)
{
	struct flock mark = {.l_type = F_RDLCK, .l_whence = SEEK_SET};

	fcntl(fd, F_OFD_SETLK, &mark);
}

/*
 * Take the flock on fd without waiting, then mark it. When the flock is
 * held by a process without the mark, wait up to a second, as
 * cli_upper_in_use() does for a daemon that is exiting.
 */
int cli_upper_lock_dir(int fd)
{
	int err = 0;

	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return -errno;
		if (ovl_commit_marked(fd))
			return CLI_UPPER_COMMITTING;
		err = ovl_flock_wait(fd, 1000);
	}
	/* A commit that took the flock marks it at once. */
	if (err == -EWOULDBLOCK)
		return ovl_commit_marked(fd) ? CLI_UPPER_COMMITTING
					     : CLI_UPPER_MOUNTED;
	if (err)
		return err;
	mark_commit(fd);
	return 0;
}

int cli_upper_lock(const char *upperdir, int *lock_fd, char *why, size_t size)
{
	char real[PATH_MAX];
	int fd, rc;

	rc = open_upper(upperdir, real, &fd, why, size);
	if (rc)
		return rc;
	rc = cli_upper_lock_dir(fd);
	if (rc == CLI_UPPER_MOUNTED)
		snprintf(why, size, "a lamina mount uses %s", real);
	if (rc) {
		close(fd);
		return rc;
	}
	*lock_fd = fd;
	return 0;
}

/* Store in *slot a copy of mountpoint when *slot is still NULL. */
static void note_mount(char **slot, const char *mountpoint)
{
	if (!*slot)
		*slot = strdup(mountpoint);
}

void cli_note_kernel_overlays(struct ovl_fs *fs)
{
	const struct ovl_config *cfg = &fs->config;
	struct stat upper, work;
	struct cli_mount *mounts;
	struct cli_stack stack;
	bool has_upper, has_work;
	char err[1200];
	size_t count, i;

	if (!cfg->upperdir || !cfg->workdir)
		return;
	/* Setup reports a missing directory. */
	has_upper = stat(cfg->upperdir, &upper) == 0;
	has_work = stat(cfg->workdir, &work) == 0;
	if ((!has_upper && !has_work) || cli_mounts_read(&mounts, &count))
		return;
	for (i = 0; i < count; i++) {
		const char *mountpoint = mounts[i].mountpoint;

		if (strcmp(mounts[i].fstype, "overlay") ||
		    cli_stack_from_mount(&mounts[i], &stack, err, sizeof(err)))
			continue;
		if (has_upper && same_dir(mountpoint, stack.upper, &upper))
			note_mount(&fs->upper_kernel_mount, mountpoint);
		if (has_work && same_dir(mountpoint, stack.work, &work))
			note_mount(&fs->work_kernel_mount, mountpoint);
		cli_stack_free(&stack);
	}
	cli_mounts_free(mounts, count);
}

/* The id of the mount that dirfd/name is on ("" for dirfd itself). */
int cli_mount_id(int dirfd, const char *name, uint64_t *id)
{
	struct statx stx;

	if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH,
		  STATX_MNT_ID, &stx) < 0)
		return -errno;
	*id = stx.stx_mnt_id;
	return 0;
}
