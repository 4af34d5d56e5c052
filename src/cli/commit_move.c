// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The moves of lamina commit. One renameat2(RENAME_EXCHANGE) is the
 * instant at which the upper's contents stop being the upper. Before
 * it, upperdir still contains them and the old layer stack mounts as it
 * did. After it, upperdir is the new empty directory and NEWLAYER
 * contains them. On the upper's mount, NEWLAYER is first created empty and then
 * exchanged with the upper. On another filesystem, the upper is copied
 * into the staging directory and renamed to NEWLAYER first, which
 * changes nothing for the old stack; then a new empty directory beside
 * the upper is exchanged with it, and the old contents are removed.
 */
#include "commit.h"
#include "cli.h"
#include "layer/copy.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether the exchange has happened: upperdir is no longer the inode
 * that the commit started from. */
static int upper_exchanged(struct commit *c, bool *done)
{
	struct stat st;

	if (fstatat(c->upper_parent_fd, c->upper_name, &st,
		    AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	*done = st.st_ino != c->upper_ino;
	return 0;
}

static int dir_is_empty(int dirfd, const char *name)
{
	int fd = openat(dirfd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *d;
	int empty = 1;
	DIR *dir;

	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -ENOMEM;
	}
	while (empty && (d = readdir(dir)))
		empty = !strcmp(d->d_name, ".") || !strcmp(d->d_name, "..");
	closedir(dir);
	return empty;
}

/* Lock dirfd/name as the upper is locked, so that once the exchange
 * makes it the upper, neither a mount nor another commit can use it
 * before this commit ends. */
static int lock_fresh_upper(struct commit *c, int dirfd, const char *name)
{
	int err;

	if (c->fresh_lock_fd >= 0)
		close(c->fresh_lock_fd);
	c->fresh_lock_fd = openat(
	    dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (c->fresh_lock_fd < 0)
		return -errno;
	err = cli_upper_lock_dir(c->fresh_lock_fd);
	return err > 0 ? -EBUSY : err;
}

/*
 * Make dirfd/name the new upper: an empty directory with the owner,
 * mode, times and xattrs of the old upper's root, which the merged root
 * shows. An earlier run may have made it already.
 */
static int make_fresh_upper(struct commit *c, int dirfd, const char *name)
{
	struct layer_copy copy = {.fmt = &c->fmt, .drop_overlay_xattrs = true};
	struct stat st;
	int err;

	if (mkdirat(dirfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	err = lock_fresh_upper(c, dirfd, name);
	if (!err)
		err = dir_is_empty(dirfd, name);
	if (err == 0) {
		fprintf(
		    stderr,
		    "lamina: commit: %s should be the new empty upper, but it is not empty; remove what it contains and rerun\n",
		    name);
		return -ENOTEMPTY;
	}
	if (err < 0)
		return err;
	if (fstatat(c->upper_parent_fd, c->upper_name, &st,
		    AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	err = layer_copy_attrs(&copy, c->upper_parent_fd, c->upper_name, &st,
			       dirfd, name);
	if (!err)
		err = layer_cmd_fsync_dir(dirfd, ".");
	return err;
}

static int exchange(struct commit *c, int dirfd, const char *name)
{
	if (renameat2(dirfd, name, c->upper_parent_fd, c->upper_name,
		      RENAME_EXCHANGE) < 0)
		return -errno;
	if (layer_cmd_fsync_dir(c->upper_parent_fd, ".") < 0 ||
	    layer_cmd_fsync_dir(dirfd, ".") < 0)
		return -EIO;
	return 0;
}

/* Copy the upper into the staging directory, then rename the copy to
 * NEWLAYER. A partial copy from an interrupted run is removed first. */
static int copy_to_new_layer(struct commit *c)
{
	char failed[PATH_MAX];
	struct progress *progress;
	uint64_t total;
	int tfd, src, dst, err;

	tfd = openat(c->nl.parent_fd, c->nl.staging,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (tfd < 0)
		return -errno;
	if (faccessat(tfd, "layer", F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		fprintf(
		    stderr,
		    "lamina: removing the partial copy %s/layer that the interrupted commit left\n",
		    c->nl.staging_path);
	err = ovl_remove_tree(tfd, "layer");
	if (!err && mkdirat(tfd, "layer", 0700) < 0)
		err = -errno;
	dst =
	    err ? -1 : openat(tfd, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	src = openat(c->upper_parent_fd, c->upper_name,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (!err && (dst < 0 || src < 0))
		err = -errno;
	if (!err) {
		progress = progress_start("commit", 0);
		if (progress && !layer_count_entries(src, &c->fmt, &total))
			progress_set_total(progress, total);
		err = layer_copy_tree(src, dst, &c->fmt, progress, failed,
				      sizeof(failed));
		progress_end(progress);
		if (err)
			fprintf(
			    stderr,
			    "lamina: commit: copying %s/%s to %s failed: %s\n",
			    c->upper, failed, c->nl.staging_path,
			    strerror(-err));
	}
	/* The copy must be on disk before its rename makes it NEWLAYER. */
	if (!err && syncfs(dst) < 0)
		err = -errno;
	if (!err && renameat2(tfd, "layer", c->nl.parent_fd, c->nl.name,
			      RENAME_NOREPLACE) < 0)
		err = -errno;
	if (!err)
		err = layer_cmd_fsync_dir(c->nl.parent_fd, ".");
	if (src >= 0)
		close(src);
	if (dst >= 0)
		close(dst);
	close(tfd);
	return err;
}

static int move_by_rename(struct commit *c)
{
	int err = make_fresh_upper(c, c->nl.parent_fd, c->nl.name);

	return err ? err : exchange(c, c->nl.parent_fd, c->nl.name);
}

static int move_by_copy(struct commit *c)
{
	struct stat st;
	int err = 0;

	if (fstatat(c->nl.parent_fd, c->nl.name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		err = errno == ENOENT ? copy_to_new_layer(c) : -errno;
	if (!err)
		err = make_fresh_upper(c, c->upper_parent_fd, c->fresh_name);
	if (!err)
		err = exchange(c, c->upper_parent_fd, c->fresh_name);
	return err;
}

int commit_move(struct commit *c)
{
	bool done = false;
	int err = upper_exchanged(c, &done);

	if (!err && !done)
		err = c->by_rename ? move_by_rename(c) : move_by_copy(c);
	/* After a copy, the old contents wait beside the new upper. */
	if (!err && !c->by_rename)
		err = ovl_remove_tree(c->upper_parent_fd, c->fresh_name);
	return err;
}

/* workdir/work and workdir/index belong to the old upper; a mount
 * makes them again. commit_links.c linked every name of an indexed file
 * into the upper before. */
int commit_clear_workdir(struct commit *c)
{
	int err = ovl_remove_tree(c->work_fd, "work");

	if (!err)
		err = ovl_remove_tree(c->work_fd, "index");
	if (!err)
		err = layer_cmd_fsync_dir(c->work_fd, ".");
	return err;
}
