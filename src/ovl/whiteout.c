// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Whiteouts and opaque directories. Each is made in workdir/work and
 * moved into place with one rename, so a crash leaves either the old
 * entry or the whiteout, never neither.
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

static int whiteout_make(struct ovl_fs *fs, char *tmp, size_t size)
{
	ovl_tmpname(fs, tmp, size);
	if (mknodat(fs->work_fd, tmp, S_IFCHR | 0, makedev(0, 0)) < 0)
		return -errno;
	return 0;
}

/* Put a whiteout at name, where the upper directory has no entry. */
int ovl_whiteout_create(struct ovl_fs *fs, int dirfd, const char *name)
{
	char tmp[64];
	int err = whiteout_make(fs, tmp, sizeof(tmp));

	if (err)
		return err;
	err = ovl_do_rename(fs->work_fd, tmp, dirfd, name, RENAME_NOREPLACE);
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
	err = ovl_do_rename(fs->work_fd, tmp, dirfd, name, RENAME_EXCHANGE);
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
