// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lookup of one name through the layers of a merged directory, by the
 * rules of overlayfs (Documentation/filesystems/overlayfs.rst; the tests
 * compare the result with Linux 6.18). The first layer that has the
 * name decides what it is. A directory goes on merging the same name in
 * the layers below until one of them is opaque, or has a whiteout or a
 * non-directory there. overlay.redirect changes the name searched in
 * the layers below, and an absolute redirect searches its path from the
 * root of every later layer. Below a metacopy file, the same search
 * looks for the regular file that contains its data.
 */
#include "squash_lookup.h"
#include "ovl/ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void squash_dir_release(struct squash_dir *d)
{
	int i;

	for (i = 0; i < d->nsrc; i++)
		close(d->srcs[i].fd);
	free(d->srcs);
	free(d->below_path);
	memset(d, 0, sizeof(*d));
}

void squash_lookup_release(struct squash_lookup *lk)
{
	squash_dir_release(&lk->dir);
	if (lk->data_dirfd >= 0)
		close(lk->data_dirfd);
	lk->data_dirfd = -1;
}

int squash_dir_append(struct squash_dir *d, int layer, int dirfd,
		      const char *name)
{
	struct squash_src *grown;
	int fd;

	if (d->nsrc == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 4;
		grown = realloc(d->srcs, (size_t)d->cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		d->srcs = grown;
	}
	fd = openat(dirfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d->srcs[d->nsrc].layer = layer;
	d->srcs[d->nsrc].fd = fd;
	d->nsrc++;
	return 0;
}

/* 0 for a redirect that overlayfs follows, or -EINVAL with a message. */
static int check_redirect(const struct squash_layers *sl, const char *redirect,
			  const char *where)
{
	if (ovl_redirect_valid(redirect))
		return 0;
	snprintf(
	    sl->error, sl->error_size,
	    "%s: invalid overlay.redirect \"%s\" on its path; overlayfs fails to look it up as well",
	    where, redirect);
	return -EINVAL;
}

static int apply_redirect(const struct squash_layers *sl,
			  struct squash_lookup *lk, const char *redirect,
			  const char *where)
{
	char *slash;

	if (check_redirect(sl, redirect, where))
		return -EINVAL;
	if (redirect[0] == '/') {
		lk->absolute = true;
		lk->absolute_redirects++;
		snprintf(lk->path, sizeof(lk->path), "%s", redirect);
	} else if (lk->absolute) {
		/* A relative redirect met on an absolute path renames its
		 * last component. */
		slash = strrchr(lk->path, '/');
		snprintf(slash + 1,
			 sizeof(lk->path) - (size_t)(slash + 1 - lk->path),
			 "%s", redirect);
	} else {
		snprintf(lk->path, sizeof(lk->path), "%s", redirect);
	}
	return 0;
}

/* The first entry found under the name is the one the merged tree shows. */
static void record_top(struct squash_lookup *lk, int layer, int dirfd,
		       const struct layer_entry *e)
{
	lk->found = true;
	lk->top_layer = layer;
	lk->top_dirfd = dirfd;
	lk->st = e->st;
}

/* Record a file on top. For a metacopy file, the search goes on below for
 * its data. */
static int record_file(const struct squash_layers *sl, struct squash_lookup *lk,
		       int layer, int dirfd, const struct layer_entry *e,
		       const char *where)
{
	record_top(lk, layer, dirfd, e);
	if (!e->metacopy)
		return 0;
	lk->metacopy = true;
	lk->stop = false;
	return e->redirect ? apply_redirect(sl, lk, e->redirect, where) : 0;
}

/*
 * Below a metacopy file, as in overlayfs: a further metacopy file passes
 * the search on, and the first plain regular file contains the data. A
 * whiteout ends the search without data, which the caller reports.
 */
static int data_step(const struct squash_layers *sl, struct squash_lookup *lk,
		     int dirfd, const struct layer_entry *e, const char *where)
{
	if (e->whiteout) {
		lk->stop = true;
		return 0;
	}
	if (!S_ISREG(e->st.st_mode)) {
		snprintf(
		    sl->error, sl->error_size,
		    "%s is a metacopy file, but %s%s below it, where its data should be, is not a regular file; overlayfs fails to read it as well, so fix or remove the file",
		    where, lk->absolute ? "" : "the entry ", lk->path);
		return -EIO;
	}
	if (e->metacopy)
		return e->redirect ? apply_redirect(sl, lk, e->redirect, where)
				   : 0;
	lk->data_dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (lk->data_dirfd < 0)
		return -errno;
	snprintf(lk->data_name, sizeof(lk->data_name), "%s", e->name);
	lk->stop = true;
	return 0;
}

/*
 * One layer's entry under name in dirfd, which is the layer's directory
 * at the merged directory, or at the parent of an absolute path.
 */
static int lookup_step(const struct squash_layers *sl, struct squash_lookup *lk,
		       int layer, int dirfd, const char *name,
		       const char *where)
{
	struct layer_entry e = {.name = name, .dirfd = dirfd};
	int err;

	if (fstatat(dirfd, name, &e.st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	err = layer_classify(dirfd, name, sl->fmt, &e);
	if (!err && lk->metacopy) {
		err = data_step(sl, lk, dirfd, &e, where);
	} else if (!err && (e.whiteout || !S_ISDIR(e.st.st_mode))) {
		/* A non-directory under a directory ends the directory. */
		lk->stop = true;
		if (!lk->found && e.whiteout)
			lk->whiteout = true;
		else if (!lk->found)
			err = record_file(sl, lk, layer, dirfd, &e, where);
	} else if (!err) {
		if (!lk->found)
			record_top(lk, layer, dirfd, &e);
		err = squash_dir_append(&lk->dir, layer, dirfd, name);
		if (!err && e.opaque)
			lk->stop = true;
		else if (!err && e.redirect)
			err = apply_redirect(sl, lk, e.redirect, where);
	}
	layer_entry_release(&e);
	return err;
}

/*
 * Rewrite moved, the path for the layers below, at a directory on the way
 * that carries a redirect, as overlayfs does. An absolute redirect
 * replaces the path up to and including the directory. A relative one
 * replaces the directory's name, the comp_len bytes before rest in moved.
 */
static int move_rest(const struct squash_layers *sl, struct squash_lookup *lk,
		     char *moved, size_t comp_len, const char *rest,
		     const char *redirect, bool *opaque_above,
		     const char *where)
{
	size_t start = strlen(moved) - strlen(rest) - comp_len;
	char buf[PATH_MAX];
	int n;

	if (check_redirect(sl, redirect, where))
		return -EINVAL;
	if (redirect[0] == '/') {
		/* It goes on past an opaque directory above it. */
		lk->absolute_redirects++;
		*opaque_above = false;
		n = snprintf(buf, sizeof(buf), "%s%s", redirect, rest);
	} else {
		n = snprintf(buf, sizeof(buf), "%.*s%s%s", (int)start, moved,
			     redirect, rest);
	}
	if (n >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(moved, buf, (size_t)n + 1);
	return 0;
}

/*
 * One directory on the way to the parent of the absolute lk->path: a
 * whiteout or a non-directory ends the lookup, an opaque directory ends
 * it after this layer, and a moved one moves the path below.
 */
static int walk_component(const struct squash_layers *sl,
			  struct squash_lookup *lk, int fd, const char *comp,
			  char *moved, const char *rest, bool *opaque_above,
			  const char *where)
{
	struct layer_entry e = {.name = comp};
	int err;

	if (fstatat(fd, comp, &e.st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 1 : -errno;
	err = layer_classify(fd, comp, sl->fmt, &e);
	if (!err && (e.whiteout || !S_ISDIR(e.st.st_mode)))
		lk->stop = true;
	else if (!err && e.opaque)
		*opaque_above = true;
	else if (!err && e.redirect)
		err = move_rest(sl, lk, moved, strlen(comp), rest, e.redirect,
				opaque_above, where);
	layer_entry_release(&e);
	return err;
}

/*
 * Walk to the parent of the absolute lk->path in one layer: *parent is
 * its descriptor (to close unless it is rootfd), or -1 when the layer
 * lacks a component. The path that the layers below search replaces
 * lk->path when the walk ends, and *last is its last component.
 */
static int walk_to_parent(const struct squash_layers *sl,
			  struct squash_lookup *lk, int rootfd, int *parent,
			  const char **last, bool *opaque_above,
			  const char *where)
{
	char comp[NAME_MAX + 1], moved[PATH_MAX];
	const char *s = lk->path + 1, *next;
	int fd = rootfd, child, err = 0;

	*parent = -1;
	memcpy(moved, lk->path, sizeof(moved));
	for (; (next = strchr(s, '/')); s = next + 1) {
		snprintf(comp, sizeof(comp), "%.*s", (int)(next - s), s);
		err = walk_component(sl, lk, fd, comp, moved, next,
				     opaque_above, where);
		if (err || lk->stop)
			break;
		child = openat(fd, comp,
			       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		err = child < 0 ? -errno : 0;
		if (fd != rootfd)
			close(fd);
		fd = child;
		if (err)
			return err;
	}
	memcpy(lk->path, moved, sizeof(lk->path));
	*last = strrchr(lk->path, '/') + 1;
	if (!next) {
		*parent = fd;
		return 0;
	}
	if (fd != rootfd)
		close(fd);
	return err > 0 ? 0 : err;
}

/* After an absolute redirect in layer `from`, search the path from the
 * root of every layer below it. */
static int lookup_absolute(const struct squash_layers *sl,
			   struct squash_lookup *lk, int from,
			   const char *where)
{
	const char *last;
	unsigned int redirects;
	bool opaque_above;
	int layer, fd, err = 0;

	for (layer = from + 1; !err && !lk->stop && layer < sl->n; layer++) {
		opaque_above = false;
		err = walk_to_parent(sl, lk, sl->root_fds[layer], &fd, &last,
				     &opaque_above, where);
		if (!err && fd >= 0) {
			redirects = lk->absolute_redirects;
			err = lookup_step(sl, lk, layer, fd, last, where);
			/* A new absolute redirect goes on past an opaque
			 * directory above the entry, as in overlayfs. */
			if (lk->absolute_redirects != redirects)
				opaque_above = false;
			if (fd != sl->root_fds[layer])
				close(fd);
		}
		if (opaque_above)
			lk->stop = true;
	}
	return err;
}

int squash_lookup(const struct squash_layers *sl, const struct squash_dir *md,
		  const char *name, const char *where, struct squash_lookup *lk)
{
	int i, err = 0;

	memset(lk, 0, sizeof(*lk));
	lk->data_dirfd = -1;
	snprintf(lk->path, sizeof(lk->path), "%s", name);
	for (i = 0; !err && !lk->stop && i < md->nsrc; i++) {
		err = lookup_step(sl, lk, md->srcs[i].layer, md->srcs[i].fd,
				  lk->path, where);
		if (!err && lk->absolute) {
			err = lookup_absolute(sl, lk, md->srcs[i].layer, where);
			break;
		}
	}
	if (err)
		squash_lookup_release(lk);
	return err;
}
