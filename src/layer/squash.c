// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Merging several layers into one. Each directory of the merged tree is
 * written once, with the entries that the layers show in it. The layers
 * that will lie below the result still need overlayfs markers from it:
 * a whiteout for a name that the squashed layers delete, an opaque
 * directory where their directory hides everything below, and a
 * redirect where their directory continues below under another path.
 */
#include "squash_lookup.h"
#include "ovl/ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

struct squash {
	struct squash_layers sl;
	struct layer_squash_opts *o;
	struct layer_copy copy;
	char path[PATH_MAX];	 /* the merged path being written */
	unsigned long whiteouts; /* whiteouts written so far */
};

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_names(int fd, char ***names, size_t *n, size_t *cap)
{
	int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	struct dirent *d;
	char **grown;
	int err = 0;

	if (!dir) {
		err = -errno;
		if (dup_fd >= 0)
			close(dup_fd);
		return err;
	}
	while (!err && (errno = 0, d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (*n == *cap) {
			*cap = *cap ? *cap * 2 : 64;
			grown = realloc(*names, *cap * sizeof(*grown));
			if (!grown) {
				err = -ENOMEM;
				break;
			}
			*names = grown;
		}
		(*names)[*n] = strdup(d->d_name);
		if (!(*names)[*n])
			err = -ENOMEM;
		else
			(*n)++;
	}
	if (!err && errno)
		err = -errno;
	closedir(dir);
	return err;
}

static void free_names(char **names, size_t n)
{
	while (n)
		free(names[--n]);
	free(names);
}

/* Every name in any of the directory's layers, sorted, each once. */
static int merged_names(const struct squash_dir *md, char ***out, size_t *count)
{
	char **names = NULL;
	size_t n = 0, cap = 0, i, kept = 0;
	int s, err = 0;

	for (s = 0; !err && s < md->nsrc; s++)
		err = add_names(md->srcs[s].fd, &names, &n, &cap);
	if (err) {
		free_names(names, n);
		return err;
	}
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		if (kept && !strcmp(names[kept - 1], names[i]))
			free(names[i]);
		else
			names[kept++] = names[i];
	}
	*out = names;
	*count = kept;
	return 0;
}

/* A long marker value that the filesystem has no room for. */
#define MARKER_LONG 1024

static int set_marker(struct squash *sq, int dirfd, const char *name,
		      const char *suffix, const char *value)
{
	size_t len = strlen(value);
	char attr[64];
	int err;

	snprintf(attr, sizeof(attr), "%s%s", sq->o->fmt->xattr_prefix, suffix);
	err = ovl_do_setxattr(dirfd, name, attr, value, len, 0);
	if ((err == -ENOSPC || err == -E2BIG) && len >= MARKER_LONG &&
	    !*sq->o->error)
		snprintf(
		    sq->o->error, sizeof(sq->o->error),
		    "%s: writing %s of %zu bytes failed: %s; ext4 without the ea_inode feature keeps at most about 4 KB of xattrs per file, so make the new layer on XFS or on ext4 with ea_inode, or free space if its filesystem is full",
		    *sq->path ? sq->path : "the layers' root", attr, len,
		    strerror(-err));
	return err;
}

/*
 * A whiteout: the character device 0/0, or where device nodes cannot be
 * made, an empty file with overlay.whiteout in a directory marked
 * overlay.opaque=x (*xwhiteouts).
 */
static int make_whiteout(struct squash *sq, int outfd, const char *name,
			 bool *xwhiteouts)
{
	int fd;

	sq->whiteouts++;
	if (mknodat(outfd, name, S_IFCHR, makedev(0, 0)) == 0)
		return 0;
	if (errno != EPERM)
		return -errno;
	fd = openat(outfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	close(fd);
	*xwhiteouts = true;
	return set_marker(sq, outfd, name, "whiteout", "");
}

/* How a merged directory continues below the squashed layers, and the
 * marker that makes the new layer continue the same way. */
/*
 * overlayfs lists the whiteouts of a directory that comes from a single
 * lower layer, unless the directory carries overlay.origin (seen on
 * Linux 6.18; test_squash.py checks it). The new layer's directory may
 * be alone where the squashed one was merged, so it keeps the origin of
 * the topmost directory it merges that has one.
 */
static int keep_origin(struct squash *sq, const struct squash_dir *md,
		       int outfd)
{
	char attr[64], value[256];
	int i, n = -ENODATA;

	snprintf(attr, sizeof(attr), "%sorigin", sq->o->fmt->xattr_prefix);
	for (i = 0; n == -ENODATA && i < md->nsrc; i++)
		n = ovl_do_getxattr(md->srcs[i].fd, ".", attr, value,
				    sizeof(value));
	if (n == -ENODATA || n == -EOPNOTSUPP)
		return 0; /* NOTE: none to keep; overlayfs may then list the
			   * whiteouts when nothing below has the directory */
	if (n < 0)
		return n;
	return ovl_do_setxattr(outfd, ".", attr, value, (size_t)n, 0);
}

static enum squash_below child_below(struct squash *sq,
				     const struct squash_dir *parent,
				     const struct squash_lookup *lk,
				     const char *name, const char **marker,
				     const char **value)
{
	*marker = NULL;
	if (sq->o->bottom)
		return SQUASH_BELOW_NONE;
	if (lk->stop) {
		if (parent->below != SQUASH_BELOW_NONE) {
			*marker = "opaque";
			*value = "y";
		}
		return SQUASH_BELOW_NONE;
	}
	if (lk->absolute) {
		*marker = "redirect";
		*value = lk->path;
		return SQUASH_BELOW_PATH;
	}
	if (parent->below == SQUASH_BELOW_NONE)
		return SQUASH_BELOW_NONE;
	if (strcmp(lk->path, name)) {
		*marker = "redirect";
		*value = lk->path;
	}
	return SQUASH_BELOW_NAME;
}

/* Write the path of name in the directory below_path into out. */
static int below_join(const char *below_path, const char *name, char *out,
		      size_t size)
{
	size_t n = (size_t)snprintf(out, size, "%s%s%s", below_path,
				    *below_path ? "/" : "", name);

	return n < size ? 0 : -ENAMETOOLONG;
}

/* Set the child directory's path below, where child_below continues it. */
static int child_below_path(const struct squash_dir *parent,
			    const struct squash_lookup *lk,
			    struct squash_dir *child)
{
	char path[PATH_MAX];
	int err;

	if (child->below == SQUASH_BELOW_NONE)
		return 0;
	if (child->below == SQUASH_BELOW_PATH) {
		child->below_path = strdup(lk->path + 1);
	} else {
		err = below_join(parent->below_path, lk->path, path,
				 sizeof(path));
		if (err)
			return err;
		child->below_path = strdup(path);
	}
	return child->below_path ? 0 : -ENOMEM;
}

static int squash_dir_write(struct squash *sq, struct squash_dir *md, int outfd,
			    size_t pathlen);

static int write_subdir(struct squash *sq, struct squash_dir *parent,
			struct squash_lookup *lk, int outfd, const char *name,
			size_t pathlen)
{
	const char *marker, *value = NULL;
	int fd, err;

	lk->dir.below = child_below(sq, parent, lk, name, &marker, &value);
	err = child_below_path(parent, lk, &lk->dir);
	if (err)
		return err;
	if (mkdirat(outfd, name, 0700) < 0)
		return -errno;
	fd = openat(outfd, name,
		    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = squash_dir_write(sq, &lk->dir, fd, pathlen);
	close(fd);
	if (err)
		return err;
	/* The entries came first; copying the times comes after them. */
	err = layer_copy_attrs(&sq->copy, lk->top_dirfd, name, &lk->st, outfd,
			       name);
	if (!err && marker)
		err = set_marker(sq, outfd, name, marker, value);
	return err;
}

/*
 * Write where the data of a metacopy file lies in the layers below the
 * squashed ones into redirect, as an absolute path. It stays "" when the
 * data is at the file's own path there.
 */
static int metacopy_redirect(struct squash *sq, const struct squash_dir *md,
			     const struct squash_lookup *lk, char *redirect,
			     size_t size)
{
	int err;

	if (sq->o->bottom) {
		snprintf(
		    sq->o->error, sizeof(sq->o->error),
		    "%s is a metacopy file whose data is in none of the layers, and with --bottom nothing lies below them; add the layer that holds the data to lowerdir, or leave out --bottom",
		    sq->path);
		return -ENOENT;
	}
	if (lk->stop || (!lk->absolute && md->below == SQUASH_BELOW_NONE)) {
		snprintf(
		    sq->o->error, sizeof(sq->o->error),
		    "%s is a metacopy file whose data a whiteout or an opaque directory in the layers hides; overlayfs fails to read it as well, so remove the file or restore its data",
		    sq->path);
		return -EIO;
	}
	if (lk->absolute) {
		if (strlen(lk->path) >= size)
			return -ENAMETOOLONG;
		strcpy(redirect, lk->path);
	} else {
		redirect[0] = '/';
		err = below_join(md->below_path, lk->path, redirect + 1,
				 size - 1);
		if (err)
			return err;
	}
	if (!strcmp(redirect + 1, sq->path))
		redirect[0] = '\0';
	return 0;
}

/* Write a plain file when the squashed layers contain a metacopy file's
 * data, and a metacopy file when the data lies below them. */
static int write_metacopy(struct squash *sq, const struct squash_dir *md,
			  const struct squash_lookup *lk, int outfd,
			  const char *name)
{
	char redirect[PATH_MAX];
	struct layer_metacopy m = {
	    .layer = lk->top_layer,
	    .dirfd = lk->top_dirfd,
	    .name = name,
	    .st = &lk->st,
	    .data_dirfd = lk->data_dirfd,
	    .data_name = lk->data_name,
	};
	int err;

	if (lk->data_dirfd < 0) {
		err = metacopy_redirect(sq, md, lk, redirect, sizeof(redirect));
		if (err)
			return err;
		m.redirect = *redirect ? redirect : NULL;
	}
	return layer_copy_metacopy(&sq->copy, &m, outfd, name, sq->path);
}

static int write_name(struct squash *sq, struct squash_dir *md, int outfd,
		      const char *name, size_t pathlen, bool *xwhiteouts)
{
	struct squash_lookup *lk = malloc(sizeof(*lk));
	int err;

	if (!lk)
		return -ENOMEM;
	err = squash_lookup(&sq->sl, md, name, sq->path, lk);
	if (err) {
		free(lk);
		return err;
	}
	if (!lk->found && lk->whiteout && md->below != SQUASH_BELOW_NONE)
		err = make_whiteout(sq, outfd, name, xwhiteouts);
	else if (lk->found && S_ISDIR(lk->st.st_mode))
		err = write_subdir(sq, md, lk, outfd, name, pathlen);
	else if (lk->found && lk->metacopy)
		err = write_metacopy(sq, md, lk, outfd, name);
	else if (lk->found)
		err = layer_copy_entry(&sq->copy, lk->top_layer, lk->top_dirfd,
				       name, &lk->st, outfd, name, sq->path);
	squash_lookup_release(lk);
	free(lk);
	progress_add(sq->o->progress, 1);
	return err;
}

/* Write the merged directory md into outfd; sq->path[0..pathlen) is its
 * path. */
static int squash_dir_write(struct squash *sq, struct squash_dir *md, int outfd,
			    size_t pathlen)
{
	char **names = NULL;
	size_t count = 0, i, len;
	unsigned long whiteouts = sq->whiteouts;
	bool xwhiteouts = false;
	int err = merged_names(md, &names, &count);

	for (i = 0; !err && i < count; i++) {
		len = strlen(names[i]);
		if (pathlen + 1 + len >= sizeof(sq->path)) {
			err = -ENAMETOOLONG;
			break;
		}
		if (pathlen)
			sq->path[pathlen] = '/';
		memcpy(sq->path + pathlen + !!pathlen, names[i], len + 1);
		err = write_name(sq, md, outfd, names[i],
				 pathlen + !!pathlen + len, &xwhiteouts);
		if (!err)
			sq->path[pathlen] = '\0';
	}
	free_names(names, count);
	if (!err && xwhiteouts)
		err = set_marker(sq, outfd, ".", "opaque", "x");
	if (!err && sq->whiteouts != whiteouts)
		err = keep_origin(sq, md, outfd);
	return err;
}

static void set_error(struct squash *sq, int err)
{
	if (*sq->o->error)
		return; /* the lookup stored a more specific message */
	snprintf(sq->o->error, sizeof(sq->o->error), "%s: %s",
		 *sq->path ? sq->path : "the layers' root", strerror(-err));
}

int layer_squash(const int *layer_fds, int n, int outfd,
		 struct layer_squash_opts *o)
{
	struct squash *sq = calloc(1, sizeof(*sq));
	struct squash_dir root = {0};
	struct stat st;
	int i, err = 0;

	if (!sq)
		return -ENOMEM;
	*o->error = '\0';
	sq->o = o;
	sq->sl = (struct squash_layers){layer_fds, n, o->fmt, o->error,
					sizeof(o->error)};
	sq->copy = (struct layer_copy){
	    .fmt = o->fmt, .drop_overlay_xattrs = true, .out_root = outfd};
	root.below = o->bottom ? SQUASH_BELOW_NONE : SQUASH_BELOW_NAME;
	if (!o->bottom) {
		root.below_path = strdup("");
		if (!root.below_path)
			err = -ENOMEM;
	}
	for (i = 0; !err && i < n; i++)
		err = squash_dir_append(&root, i, layer_fds[i], ".");
	if (!err)
		err = squash_dir_write(sq, &root, outfd, 0);
	/* The merged root shows the top layer's root. */
	if (!err && fstat(layer_fds[0], &st) < 0)
		err = -errno;
	if (!err)
		err = layer_copy_attrs(&sq->copy, layer_fds[0], ".", &st, outfd,
				       ".");
	if (err)
		set_error(sq, err);
	squash_dir_release(&root);
	layer_copy_release(&sq->copy);
	free(sq);
	return err;
}
