// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The steps of lamina reset on the filesystem. The old upper is swapped
 * with a new empty directory by one renameat2(RENAME_EXCHANGE), so that
 * at every instant either the old upper or the new one is in place. The
 * old tree then sits under a hidden sibling name until it is deleted.
 * Nothing here follows a symlink: every call is relative to an open
 * directory and uses O_NOFOLLOW or AT_SYMLINK_NOFOLLOW.
 */
#include "reset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define XATTR_LIST_MAX 65536
#define XATTR_VALUE_MAX 65536

/* Name the hidden sibling that contains the old upper until deleted. */
void reset_aside_name(const char *name, char *buf, size_t size)
{
	snprintf(buf, size, ".lamina-reset.%.*s", 240, name);
}

static bool is_overlay_xattr(const char *name)
{
	return !strncmp(name, "trusted.overlay.", 16) ||
	       !strncmp(name, "user.overlay.", 13);
}

/* Copy the xattrs of from to to, but not overlay ones (origin, opaque,
 * impure, uuid), which describe the old contents. */
static int copy_xattrs(int from, int to)
{
	char *list = malloc(XATTR_LIST_MAX), *value = malloc(XATTR_VALUE_MAX);
	ssize_t n, len;
	const char *p;
	int err = 0;

	if (!list || !value) {
		err = -ENOMEM;
		goto out;
	}
	n = flistxattr(from, list, XATTR_LIST_MAX);
	if (n < 0)
		n = 0; /* no xattr support: nothing to copy */
	for (p = list; !err && p < list + n; p += strlen(p) + 1) {
		if (is_overlay_xattr(p))
			continue;
		len = fgetxattr(from, p, value, XATTR_VALUE_MAX);
		if (len < 0 || fsetxattr(to, p, value, (size_t)len, 0) < 0)
			err = -errno;
	}
out:
	free(list);
	free(value);
	return err;
}

/* Make an empty directory aside with the owner, mode and xattrs of the
 * directory open as upperfd. */
static int make_empty_copy(int parentfd, const char *aside, int upperfd)
{
	struct stat st;
	int fd, err = 0;

	if (fstat(upperfd, &st) < 0)
		return -errno;
	if (mkdirat(parentfd, aside, 0700) < 0)
		return -errno;
	fd = openat(parentfd, aside,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	/* Owner before mode: chown may clear the set-group-ID bit. */
	if (fchown(fd, st.st_uid, st.st_gid) < 0 ||
	    fchmod(fd, st.st_mode & 07777) < 0)
		err = -errno;
	if (!err)
		err = copy_xattrs(upperfd, fd);
	close(fd);
	return err;
}

/*
 * Put a new empty upper in place of parentfd/name and leave the old one
 * at parentfd/aside, which must not exist.
 */
int reset_swap(int parentfd, const char *name, const char *aside)
{
	int upperfd = openat(parentfd, name,
			     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int err;

	if (upperfd < 0)
		return -errno;
	err = make_empty_copy(parentfd, aside, upperfd);
	close(upperfd);
	if (!err &&
	    renameat2(parentfd, aside, parentfd, name, RENAME_EXCHANGE) < 0)
		err = -errno;
	if (!err && fsync(parentfd) < 0)
		err = -errno;
	return err;
}

/*
 * Clear the state a mount left in workdir: the contents of work, and
 * index with its contents. workfd is the workdir, open.
 */
int reset_workdir(int workfd, struct reset_count *count)
{
	int fd = openat(workfd, "work",
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int err = 0;

	if (fd >= 0) {
		err = reset_delete_contents(fd, count, NULL);
		close(fd);
	} else if (errno != ENOENT) {
		return -errno;
	}
	if (!err)
		err = reset_delete(workfd, "index", count, NULL);
	return err == -ENOENT ? 0 : err;
}
