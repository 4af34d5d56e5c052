// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Whiteouts and opaque directories. Each is made in workdir/work and
 * moved into place with one rename, so a crash leaves either the old
 * entry or the whiteout, never neither.
 *
 * A whiteout is a character device 0/0. Where the upper filesystem does
 * not let lamina make one and the mount uses userxattr, it is an xattr
 * whiteout instead: an empty file with overlay.whiteout, in a directory
 * marked overlay.opaque="x" before the file goes in.
 *
 * As in kernel overlayfs, device whiteouts are hard links of one shared
 * inode in workdir/work. A link is much cheaper than a new inode: on a
 * filesystem with many inodes, allocating one per removed file made
 * whiteouts the larger part of the cost of rm -rf.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int xwhiteout_make(struct ovl_fs *fs, const char *tmp)
{
	char attr[64];
	int fd, err;

	fd = openat(fs->work_fd, tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC,
		    0);
	if (fd < 0)
		return -errno;
	close(fd);
	ovl_xattr_name(fs, attr, sizeof(attr), "whiteout");
	err = ovl_do_setxattr(fs->work_fd, tmp, attr, "", 0, 0);
	if (err)
		unlinkat(fs->work_fd, tmp, 0);
	return err;
}

void ovl_whiteout_init(struct ovl_fs *fs)
{
	pthread_rwlock_init(&fs->whiteout_lock, NULL);
	fs->whiteout_fd = -1;
	fs->whiteout_name[0] = '\0';
}

/* Remove the shared whiteout's name, if it still names that inode. */
static void shared_unlink(struct ovl_fs *fs)
{
	struct stat st, cur;

	if (fs->whiteout_fd < 0 || fs->work_fd < 0 ||
	    fstat(fs->whiteout_fd, &st) < 0)
		return;
	if (fstatat(fs->work_fd, fs->whiteout_name, &cur,
		    AT_SYMLINK_NOFOLLOW) == 0 &&
	    cur.st_ino == st.st_ino && cur.st_dev == st.st_dev)
		unlinkat(fs->work_fd, fs->whiteout_name, 0);
}

void ovl_whiteout_destroy(struct ovl_fs *fs)
{
	shared_unlink(fs);
	if (fs->whiteout_fd >= 0)
		close(fs->whiteout_fd);
	fs->whiteout_fd = -1;
	pthread_rwlock_destroy(&fs->whiteout_lock);
}

/*
 * Make a whiteout in the work directory and hold it open. Links are
 * made from the descriptor, never by name, so that nothing put in its
 * place under that name can become a whiteout's content.
 */
static int shared_make(struct ovl_fs *fs, char *name, size_t size)
{
	struct stat st;
	int fd;

	ovl_tmpname(fs, name, size);
	if (mknodat(fs->work_fd, name, S_IFCHR | 0, makedev(0, 0)) < 0)
		return -errno;
	fd = openat(fs->work_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !ovl_is_whiteout(&st)) {
		close(fd);
		return -EAGAIN; /* replaced before it was opened */
	}
	return fd;
}

/*
 * Make a new shared whiteout in place of stale, the descriptor whose
 * link failed (-1 for none). Another thread may have replaced it already.
 */
static int shared_renew(struct ovl_fs *fs, int stale)
{
	char name[64];
	int fd, err = 0;

	pthread_rwlock_wrlock(&fs->whiteout_lock);
	if (fs->whiteout_fd != stale)
		goto out;
	fd = shared_make(fs, name, sizeof(name));
	if (fd < 0) {
		err = fd;
		goto out;
	}
	shared_unlink(fs);
	if (fs->whiteout_fd >= 0)
		close(fs->whiteout_fd);
	fs->whiteout_fd = fd;
	memcpy(fs->whiteout_name, name, sizeof(name));
out:
	pthread_rwlock_unlock(&fs->whiteout_lock);
	return err;
}

/*
 * Link the shared whiteout at dirfd/name. *used is the descriptor that
 * was tried. A link of an inode whose last name is gone fails with
 * ENOENT, like a link into a directory that is gone.
 */
static int shared_link_once(struct ovl_fs *fs, int dirfd, const char *name,
			    int *used, bool *unlinked)
{
	char proc[64];
	struct stat st;
	int err = 0;

	pthread_rwlock_rdlock(&fs->whiteout_lock);
	*used = fs->whiteout_fd;
	*unlinked = *used < 0;
	if (*used >= 0) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", *used);
		if (linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) < 0)
			err = -errno;
		if (err == -ENOENT)
			*unlinked = fstat(*used, &st) < 0 || st.st_nlink == 0;
	}
	pthread_rwlock_unlock(&fs->whiteout_lock);
	return *unlinked ? -ENOENT : err;
}

/*
 * Link the shared whiteout at dirfd/name. A full link count (EMLINK)
 * or a whiteout removed behind lamina's back gets a new one. On
 * -EOPNOTSUPP the caller makes a whiteout of its own.
 */
static int shared_link(struct ovl_fs *fs, int dirfd, const char *name)
{
	int tries, used, err = -EOPNOTSUPP;
	bool unlinked;

	if (fs->xwhiteouts || atomic_load(&fs->whiteout_unshared))
		return -EOPNOTSUPP;
	for (tries = 0; tries < 3; tries++) {
		err = shared_link_once(fs, dirfd, name, &used, &unlinked);
		if (err != -EMLINK && !unlinked)
			break;
		err = shared_renew(fs, used);
		if (err && err != -EAGAIN)
			break;
	}
	if (err == -EPERM || err == -EOPNOTSUPP || err == -EMLINK ||
	    err == -EAGAIN) {
		atomic_store(&fs->whiteout_unshared, true);
		log_warn("upperdir %s: cannot share one whiteout inode (%s); making one per whiteout",
			 fs->upper->path, strerror(-err));
		return -EOPNOTSUPP;
	}
	return err;
}

static int whiteout_make(struct ovl_fs *fs, char *tmp, size_t size)
{
	ovl_tmpname(fs, tmp, size);
	if (fs->xwhiteouts)
		return xwhiteout_make(fs, tmp);
	if (mknodat(fs->work_fd, tmp, S_IFCHR | 0, makedev(0, 0)) < 0)
		return -errno;
	return 0;
}

/*
 * Before an xattr whiteout goes into the directory dirfd, mark it so
 * that the whiteout counts as one. An opaque directory keeps its "y":
 * nothing below it shows, so it needs no whiteouts.
 */
int ovl_whiteout_mark_dir(struct ovl_fs *fs, int dirfd)
{
	char attr[64];

	if (!fs->xwhiteouts || ovl_check_opaque(fs, dirfd, ".") ||
	    ovl_check_xwhiteout_dir(fs, dirfd, "."))
		return 0;
	ovl_xattr_name(fs, attr, sizeof(attr), "opaque");
	return ovl_do_setxattr(dirfd, ".", attr, "x", 1, 0);
}

/* A whiteout in the upper layer, in either form. */
bool ovl_upper_is_whiteout(struct ovl_fs *fs, int dirfd, const char *name,
			   const struct stat *st)
{
	if (ovl_is_whiteout(st))
		return true;
	if (!fs->config.userxattr || !S_ISREG(st->st_mode) || st->st_size)
		return false;
	return ovl_check_xwhiteout_dir(fs, dirfd, ".") &&
	       ovl_check_xwhiteout(fs, dirfd, name, st);
}

/* Put a whiteout at name, where the upper directory has no entry. */
int ovl_whiteout_create(struct ovl_fs *fs, int dirfd, const char *name)
{
	char tmp[64];
	int err = shared_link(fs, dirfd, name);

	if (err != -EOPNOTSUPP)
		return err;
	err = whiteout_make(fs, tmp, sizeof(tmp));
	if (err)
		return err;
	err = ovl_whiteout_mark_dir(fs, dirfd);
	if (!err)
		err = ovl_do_rename(fs->work_fd, tmp, dirfd, name,
				    RENAME_NOREPLACE);
	if (err)
		unlinkat(fs->work_fd, tmp, 0);
	return err;
}

/*
 * Replace the upper entry at name with a whiteout: exchange the two,
 * then remove the old entry, which now sits in the work directory.
 */
int ovl_whiteout_replace(struct ovl_fs *fs, int dirfd, const char *name)
{
	char tmp[64];
	int err;

	ovl_tmpname(fs, tmp, sizeof(tmp));
	err = shared_link(fs, fs->work_fd, tmp);
	if (err == -EOPNOTSUPP)
		err = whiteout_make(fs, tmp, sizeof(tmp));
	if (err)
		return err;
	err = ovl_whiteout_mark_dir(fs, dirfd);
	if (!err)
		err = ovl_do_rename(fs->work_fd, tmp, dirfd, name,
				    RENAME_EXCHANGE);
	if (err) {
		unlinkat(fs->work_fd, tmp, 0);
		return err;
	}
	err = ovl_remove_tree(fs->work_fd, tmp);
	if (err)
		log_warn_rl("removing %s from the work directory failed: %s",
			    tmp, strerror(-err));
	return 0;
}

int ovl_set_opaque(struct ovl_fs *fs, int dirfd, const char *name)
{
	char attr[64];

	ovl_xattr_name(fs, attr, sizeof(attr), "opaque");
	return ovl_do_setxattr(dirfd, name, attr, "y", 1, 0);
}
