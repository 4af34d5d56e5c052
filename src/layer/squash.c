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

static int set_marker(struct squash *sq, int dirfd, const char *name,
		      const char *suffix, const char *value)
{
	char attr[64];

	snprintf(attr, sizeof(attr), "%s%s", sq->o->fmt->xattr_prefix, suffix);
	return ovl_do_setxattr(dirfd, name, attr, value, strlen(value), 0);
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

static int squash_dir_write(struct squash *sq, struct squash_dir *md, int outfd,
			    size_t pathlen);

static int write_subdir(struct squash *sq, struct squash_dir *parent,
			struct squash_lookup *lk, int outfd, const char *name,
			size_t pathlen)
{
	const char *marker, *value = NULL;
	int fd, err;

	lk->dir.below = child_below(sq, parent, lk, name, &marker, &value);
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
	else if (lk->found)
		err = layer_copy_entry(&sq->copy, lk->top_layer, lk->top_dirfd,
				       name, &lk->st, outfd, name, sq->path);
	squash_dir_release(&lk->dir);
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
