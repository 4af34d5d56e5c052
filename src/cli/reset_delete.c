// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Deleting a tree for lamina reset, with layer_walk: entries are removed
 * with unlinkat() relative to their open parent, so a symlink is removed
 * and never followed, and the walk stops at a mount point inside the
 * tree instead of deleting another filesystem's files.
 */
#include "cli.h"
#include "reset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

struct remover {
	struct reset_count *count;
	struct progress *progress;
	uint64_t mnt_id; /* the tree's mount */
};

static int remove_visit(void *arg, const struct layer_entry *e,
			enum layer_visit visit)
{
	struct remover *r = arg;
	uint64_t id;
	int err;

	if (e->depth == 0)
		return 0;
	if (visit == LAYER_VISIT_DIR) {
		err = cli_mount_id(e->dirfd, e->name, &id);
		if (!err && id != r->mnt_id)
			err = -EXDEV;
	} else {
		err = unlinkat(e->dirfd, e->name,
			       visit == LAYER_VISIT_DIR_END ? AT_REMOVEDIR : 0);
		err = err < 0 ? -errno : 0;
	}
	if (err) {
		snprintf(r->count->failed, sizeof(r->count->failed), "%s",
			 e->path);
		return err;
	}
	if (visit != LAYER_VISIT_DIR) {
		r->count->removed++;
		progress_add(r->progress, 1);
	}
	return 0;
}

/* Delete everything inside the directory open as fd. Returns 0 or a
 * negative errno: -EXDEV for a mount point inside, with its path in
 * count->failed. */
int reset_delete_contents(int fd, struct reset_count *count,
			  struct progress *progress)
{
	/* The walk reports overlay meanings, which deletion ignores. */
	static const struct layer_format fmt = {"trusted.overlay."};
	struct remover r = {.count = count, .progress = progress};
	int err = cli_mount_id(fd, "", &r.mnt_id);

	count->failed[0] = '\0';
	return err ? err : layer_walk(fd, &fmt, remove_visit, &r);
}

/* Delete dirfd/name and, for a directory, all it contains. count->removed
 * grows by the entries inside, not by name itself. */
int reset_delete(int dirfd, const char *name, struct reset_count *count,
		 struct progress *progress)
{
	int fd = openat(dirfd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int err;

	if (fd < 0 && errno != ENOTDIR && errno != ELOOP)
		return -errno;
	if (fd >= 0) {
		err = reset_delete_contents(fd, count, progress);
		close(fd);
		if (err)
			return err;
	}
	if (unlinkat(dirfd, name, fd >= 0 ? AT_REMOVEDIR : 0) < 0)
		return -errno;
	return 0;
}
