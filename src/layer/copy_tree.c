// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Copying a whole layer, entry by entry and exactly: whiteouts, opaque
 * markers, redirects and origins come along as they are, so the copy
 * means to overlayfs what the original means.
 */
#include "copy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tree_copy {
	struct layer_copy copy;
	struct progress *progress;
	int *dirs; /* open output directories; dirs[d] is at depth d */
	size_t ndirs;
	char *failed_path;
	size_t failed_size;
};

/* Make room for an output directory at depth. */
static int reserve_depth(struct tree_copy *t, int depth)
{
	size_t want = (size_t)depth + 1, i;
	int *grown;

	if (want <= t->ndirs)
		return 0;
	grown = realloc(t->dirs, want * 2 * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	for (i = t->ndirs; i < want * 2; i++)
		grown[i] = -1;
	t->dirs = grown;
	t->ndirs = want * 2;
	return 0;
}

static int enter_dir(struct tree_copy *t, const struct layer_entry *e)
{
	int parent, fd, err = reserve_depth(t, e->depth);

	if (err)
		return err;
	if (e->depth == 0) {
		fd = dup(t->copy.out_root);
	} else {
		parent = t->dirs[e->depth - 1];
		if (mkdirat(parent, e->name, 0700) < 0)
			return -errno;
		fd = openat(parent, e->name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	t->dirs[e->depth] = fd;
	return 0;
}

static int leave_dir(struct tree_copy *t, const struct layer_entry *e)
{
	int fd = t->dirs[e->depth], err;

	if (e->depth == 0)
		err =
		    layer_copy_attrs(&t->copy, e->dirfd, ".", &e->st, fd, ".");
	else
		err = layer_copy_attrs(&t->copy, e->dirfd, e->name, &e->st,
				       t->dirs[e->depth - 1], e->name);
	close(fd);
	t->dirs[e->depth] = -1;
	return err;
}

static int copy_visit(void *arg, const struct layer_entry *e,
		      enum layer_visit visit)
{
	struct tree_copy *t = arg;
	int err;

	switch (visit) {
	case LAYER_VISIT_DIR:
		err = enter_dir(t, e);
		break;
	case LAYER_VISIT_DIR_END:
		err = leave_dir(t, e);
		break;
	default:
		err = layer_copy_entry(&t->copy, 0, e->dirfd, e->name, &e->st,
				       t->dirs[e->depth - 1], e->name, e->path);
		break;
	}
	if (err)
		snprintf(t->failed_path, t->failed_size, "%s",
			 *e->path ? e->path : ".");
	else if (visit != LAYER_VISIT_DIR_END)
		progress_add(t->progress, 1);
	return err;
}

int layer_copy_tree(int srcfd, int dstfd, const struct layer_format *fmt,
		    struct progress *progress, char *failed_path, size_t size)
{
	struct tree_copy t = {
	    .copy = {.fmt = fmt, .out_root = dstfd},
	    .progress = progress,
	    .failed_path = failed_path,
	    .failed_size = size,
	};
	size_t i;
	int err;

	snprintf(failed_path, size, ".");
	err = layer_walk(srcfd, fmt, copy_visit, &t);
	/* After a failure, directories on the way down are still open. */
	for (i = 0; err && i < t.ndirs; i++)
		if (t.dirs[i] >= 0)
			close(t.dirs[i]);
	free(t.dirs);
	layer_copy_release(&t.copy);
	return err;
}

static int count_visit(void *arg, const struct layer_entry *e,
		       enum layer_visit visit)
{
	(void)e;
	if (visit != LAYER_VISIT_DIR_END)
		(*(uint64_t *)arg)++;
	return 0;
}

int layer_count_entries(int rootfd, const struct layer_format *fmt,
			uint64_t *count)
{
	*count = 0;
	return layer_walk(rootfd, fmt, count_visit, count);
}
