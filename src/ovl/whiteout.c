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
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
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
	int err = whiteout_make(fs, tmp, sizeof(tmp));

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
	int err = whiteout_make(fs, tmp, sizeof(tmp));

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
