// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A depth-first walk over one layer directory that reports what each
 * entry means to overlayfs. Entries come in name order so that two walks
 * over equal trees give equal output.
 */
#include "layer.h"
#include "ovl/ovl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Room for an overlay.redirect value, which is a path. */
#define LAYER_REDIRECT_MAX 4096

int layer_getxattr(int dirfd, const char *name, const struct layer_format *fmt,
		   const char *suffix, char *buf, size_t size)
{
	char attr[128], path[64];
	ssize_t n;
	int fd;

	snprintf(attr, sizeof(attr), "%s%s", fmt->xattr_prefix, suffix);
	/* lgetxattr on /proc/self/fd/N/name: no symlink is followed at name
	 * and the directory is the one already open. */
	fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = getxattr(path, attr, buf, size);
	if (n < 0 && errno == ENODATA)
		n = -ENODATA;
	else if (n < 0)
		n = -errno;
	close(fd);
	return (int)n;
}

static bool xattr_is(int dirfd, const char *name,
		     const struct layer_format *fmt, const char *suffix,
		     const char *value)
{
	char buf[8];
	int n = layer_getxattr(dirfd, name, fmt, suffix, buf, sizeof(buf));

	if (n < 0)
		return false;
	return value == NULL ||
	       ((size_t)n == strlen(value) && !memcmp(buf, value, (size_t)n));
}

int layer_classify(int dirfd, const char *name, const struct layer_format *fmt,
		   struct layer_entry *e)
{
	char buf[LAYER_REDIRECT_MAX];
	int n;

	e->whiteout = S_ISCHR(e->st.st_mode) && e->st.st_rdev == 0;
	e->opaque = false;
	e->metacopy = false;
	e->redirect = NULL;
	if (S_ISREG(e->st.st_mode) && e->st.st_size == 0 &&
	    xattr_is(dirfd, ".", fmt, "opaque", "x"))
		e->whiteout = xattr_is(dirfd, name, fmt, "whiteout", NULL);
	if (S_ISREG(e->st.st_mode))
		e->metacopy = xattr_is(dirfd, name, fmt, "metacopy", NULL);
	if (!S_ISDIR(e->st.st_mode) && !S_ISREG(e->st.st_mode))
		return 0;
	if (S_ISDIR(e->st.st_mode))
		e->opaque = xattr_is(dirfd, name, fmt, "opaque", "y");
	n = layer_getxattr(dirfd, name, fmt, "redirect", buf, sizeof(buf) - 1);
	/* An empty value is invalid too, as overlayfs has it. */
	if (n >= 0) {
		buf[n] = '\0';
		if (!ovl_redirect_valid(buf)) {
			fprintf(
			    stderr,
			    "lamina: %s has the invalid overlay.redirect \"%s\", which overlayfs rejects as well; remove the xattr or fix the layer\n",
			    *name == '.' ? "the layer root" : name, buf);
			return -EUCLEAN;
		}
		e->redirect = strdup(buf);
		if (!e->redirect)
			return -ENOMEM;
	}
	return 0;
}

void layer_entry_release(struct layer_entry *e)
{
	free(e->redirect);
	e->redirect = NULL;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names in dirfd, sorted; *count is set. Caller frees each and all. */
static int read_names(int dirfd, char ***names, size_t *count)
{
	DIR *dir = ovl_opendir_at(dirfd);
	size_t n = 0, cap = 0;
	char **list = NULL, **grown;
	struct dirent *d;

	if (!dir)
		return -errno;
	while ((errno = 0, d = readdir(dir))) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 32;
			grown = realloc(list, cap * sizeof(*list));
			if (!grown)
				break;
			list = grown;
		}
		list[n] = strdup(d->d_name);
		if (!list[n])
			break;
		n++;
	}
	if (errno) {
		int err = -errno;

		while (n)
			free(list[--n]);
		free(list);
		closedir(dir);
		return err;
	}
	closedir(dir);
	if (n) /* an empty directory leaves list NULL, which qsort rejects */
		qsort(list, n, sizeof(*list), name_cmp);
	*names = list;
	*count = n;
	return 0;
}

/* Where the last walk of this thread failed, for the caller's message. */
static __thread char walk_failed[512];

const char *layer_walk_failure(void)
{
	return walk_failed;
}

/* Note the entry at which the walk fails with err, unless one is noted. */
static int walk_fail(const char *path, int err)
{
	if (err < 0 && !walk_failed[0])
		snprintf(walk_failed, sizeof(walk_failed), "%s", path);
	return err;
}

/* The walk's state. The path grows with the depth: a layer may be deeper
 * than PATH_MAX, since entries are reached from their open parent. */
struct walk {
	const struct layer_format *fmt;
	layer_walk_fn fn;
	void *arg;
	char *path;
	size_t cap;
};

/* Make room for a path of need bytes, the terminating zero included. */
static int path_reserve(struct walk *w, size_t need)
{
	size_t cap = w->cap ? w->cap : 256;
	char *grown;

	if (need <= w->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	grown = realloc(w->path, cap);
	if (!grown)
		return -ENOMEM;
	w->path = grown;
	w->cap = cap;
	return 0;
}

static int walk_dir(struct walk *w, int dirfd, size_t pathlen, int depth);

static int walk_entry(struct walk *w, int dirfd, const char *name,
		      size_t pathlen, int depth)
{
	struct layer_entry e = {.name = name, .dirfd = dirfd, .depth = depth};
	size_t len = strlen(name);
	int err, fd;

	err = path_reserve(w, pathlen + 1 + len + 1);
	if (err)
		return err;
	e.path = w->path;
	if (pathlen)
		w->path[pathlen++] = '/';
	memcpy(w->path + pathlen, name, len + 1);
	if (fstatat(dirfd, name, &e.st, AT_SYMLINK_NOFOLLOW) < 0)
		return walk_fail(w->path, -errno);
	err = layer_classify(dirfd, name, w->fmt, &e);
	if (err)
		return walk_fail(w->path, err);
	if (!S_ISDIR(e.st.st_mode)) {
		err = walk_fail(w->path, w->fn(w->arg, &e, LAYER_VISIT_ENTRY));
		layer_entry_release(&e);
		return err;
	}
	err = walk_fail(w->path, w->fn(w->arg, &e, LAYER_VISIT_DIR));
	if (err == 0) {
		fd = openat(dirfd, name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		err = fd < 0 ? walk_fail(w->path, -errno)
			     : walk_dir(w, fd, pathlen + len, depth);
		if (fd >= 0)
			close(fd);
		w->path[pathlen + len] = '\0';
	}
	/* A deeper entry may have moved the path to a bigger buffer. */
	e.path = w->path;
	if (err >= 0)
		err =
		    walk_fail(w->path, w->fn(w->arg, &e, LAYER_VISIT_DIR_END));
	layer_entry_release(&e);
	return err;
}

static int walk_dir(struct walk *w, int dirfd, size_t pathlen, int depth)
{
	char **names = NULL;
	size_t count = 0, i;
	int err = walk_fail(w->path, read_names(dirfd, &names, &count));

	for (i = 0; !err && i < count; i++) {
		err = walk_entry(w, dirfd, names[i], pathlen, depth + 1);
		w->path[pathlen] = '\0';
	}
	for (i = 0; i < count; i++)
		free(names[i]);
	if (count)
		free(names);
	return err < 0 ? err : 0;
}

int layer_walk(int rootfd, const struct layer_format *fmt, layer_walk_fn fn,
	       void *arg)
{
	struct walk w = {.fmt = fmt, .fn = fn, .arg = arg};
	struct layer_entry root = {.path = "", .name = "", .dirfd = rootfd};
	int err;

	walk_failed[0] = '\0';
	if (fstat(rootfd, &root.st) < 0)
		return -errno;
	err = path_reserve(&w, 1);
	if (err)
		return err;
	w.path[0] = '\0';
	err = layer_classify(rootfd, ".", fmt, &root);
	if (!err)
		err = fn(arg, &root, LAYER_VISIT_DIR);
	if (err == 0)
		err = walk_dir(&w, rootfd, 0, 0);
	if (err >= 0)
		err = fn(arg, &root, LAYER_VISIT_DIR_END);
	layer_entry_release(&root);
	free(w.path);
	return err < 0 ? err : 0;
}
