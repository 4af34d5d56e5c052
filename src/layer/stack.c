// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Lookup across a layer and the layers below it, by overlayfs's rules,
 * without a mount. A whiteout or a non-directory ends the search, and an
 * opaque directory hides what is below it. A redirect sends the search
 * in the lower layers to another path. A metacopy file takes its data
 * from the first full copy below it. Export needs this to write a
 * redirected directory or a metacopy file as plain OCI entries.
 */
#include "oci.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STACK_PATH_MAX 4096

struct lookup {
	const struct layer_stack_roots *roots;
	struct layer_stack root_stack; /* for absolute redirects */
	char name[STACK_PATH_MAX];     /* may contain slashes after one */
	struct layer_stack_entry *out;
	bool is_dir, is_metacopy; /* what the top entry is */
	bool stop;
};

static int stack_push(struct layer_stack *s, int layer, int fd)
{
	struct layer_stack_dir *dirs =
	    realloc(s->dirs, (s->count + 1) * sizeof(*dirs));

	if (!dirs) {
		close(fd);
		return -ENOMEM;
	}
	s->dirs = dirs;
	s->dirs[s->count].layer = layer;
	s->dirs[s->count].fd = fd;
	s->count++;
	return 0;
}

void layer_stack_release(struct layer_stack *s)
{
	int i;

	for (i = 0; i < s->count; i++)
		close(s->dirs[i].fd);
	free(s->dirs);
	s->dirs = NULL;
	s->count = 0;
}

void layer_stack_entry_release(struct layer_stack_entry *e)
{
	if (e->datafd >= 0)
		close(e->datafd);
	e->datafd = -1;
	layer_stack_release(&e->children);
}

int layer_stack_root(const struct layer_stack_roots *roots,
		     struct layer_stack *out)
{
	int i, fd, err;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < roots->count; i++) {
		fd = fcntl(roots->fds[i], F_DUPFD_CLOEXEC, 0);
		if (fd < 0) {
			err = -errno;
			layer_stack_release(out);
			return err;
		}
		err = stack_push(out, i, fd);
		if (err) {
			layer_stack_release(out);
			return err;
		}
	}
	return 0;
}

static int open_dir(int dirfd, const char *name)
{
	int fd = openat(dirfd, name,
			O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

/*
 * Open the parent of path inside dirfd, one component at a time so no
 * symlink is followed; *last points into path at the final name.
 * Returns the parent's descriptor (dirfd itself for a plain name).
 */
static int open_parent(int dirfd, char *path, const char **last)
{
	char *slash = strrchr(path, '/');
	int fd;

	*last = path;
	if (!slash)
		return dirfd;
	*slash = '\0';
	*last = slash + 1;
	fd = dirfd;
	for (char *comp = strtok(path, "/"); comp; comp = strtok(NULL, "/")) {
		int next = open_dir(fd, comp);

		if (fd != dirfd)
			close(fd);
		if (next < 0)
			return next;
		fd = next;
	}
	return fd;
}

/* A redirect found at layer: where the layers below look next. */
static int follow_redirect(struct lookup *l, const char *redirect,
			   const struct layer_stack **base, int *i, int layer)
{
	size_t len = strlen(redirect);

	if (redirect[0] != '/') {
		/* A plain name, relative to the parent's lower directories. */
		if (strchr(redirect, '/') || len >= sizeof(l->name))
			return -EINVAL;
		memcpy(l->name, redirect, len + 1);
		return 0;
	}
	while (*redirect == '/')
		redirect++;
	if (strlen(redirect) >= sizeof(l->name))
		return -ENAMETOOLONG;
	strcpy(l->name, redirect);
	if (!l->root_stack.count) {
		int err = layer_stack_root(l->roots, &l->root_stack);

		if (err)
			return err;
	}
	*base = &l->root_stack;
	*i = layer; /* the loop's increment moves to the next layer */
	return 0;
}

/* Take the entry e of one layer into the result; sets l->stop. */
static int take_entry(struct lookup *l, int parentfd, const char *name,
		      struct layer_entry *e, int layer)
{
	bool dir = S_ISDIR(e->st.st_mode);
	int fd;

	if (e->whiteout || (l->out->found && dir != l->is_dir)) {
		l->stop = true;
		return 0;
	}
	if (!l->out->found) {
		l->out->found = true;
		l->out->st = e->st;
		l->is_dir = dir;
		l->is_metacopy = e->metacopy;
		l->stop = !dir && !e->metacopy;
	} else if (!dir && !e->metacopy) {
		/* The full copy that contains a metacopy file's data. */
		fd = openat(parentfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		l->out->datafd = fd;
		l->stop = true;
		return 0;
	}
	if (!dir)
		return 0;
	fd = open_dir(parentfd, name);
	if (fd < 0)
		return fd;
	l->stop = e->opaque;
	return stack_push(&l->out->children, layer, fd);
}

/* Look up l->name in one layer's directory dirfd. */
static int lookup_in(struct lookup *l, int dirfd, int layer,
		     const struct layer_stack **base, int *i)
{
	char path[STACK_PATH_MAX];
	struct layer_entry e = {0};
	const char *last;
	int parentfd, err;

	strcpy(path, l->name);
	parentfd = open_parent(dirfd, path, &last);
	if (parentfd == -ENOENT || parentfd == -ENOTDIR || parentfd == -ELOOP)
		return 0;
	if (parentfd < 0)
		return parentfd;
	err = 0;
	if (fstatat(parentfd, last, &e.st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			err = -errno;
		goto out_close;
	}
	err = layer_classify(parentfd, last, l->roots->fmt, &e);
	if (!err)
		err = take_entry(l, parentfd, last, &e, layer);
	/* Only the top entry's parent is kept: it is a borrowed stack fd. */
	if (!err && l->out->dirfd < 0 && l->out->found)
		l->out->dirfd = dirfd;
	if (!err && !l->stop && e.redirect)
		err = follow_redirect(l, e.redirect, base, i, layer);
	layer_entry_release(&e);
out_close:
	if (parentfd != dirfd)
		close(parentfd);
	return err;
}

int layer_stack_lookup(const struct layer_stack_roots *roots,
		       const struct layer_stack *parent, const char *name,
		       struct layer_stack_entry *out)
{
	struct lookup l = {.roots = roots, .out = out};
	const struct layer_stack *base = parent;
	int i, last_layer = -1, err = 0;

	memset(out, 0, sizeof(*out));
	out->dirfd = -1;
	out->datafd = -1;
	if (strlen(name) >= sizeof(l.name))
		return -ENAMETOOLONG;
	strcpy(l.name, name);
	for (i = 0; !err && !l.stop && i < base->count; i++) {
		const struct layer_stack_dir *d = &base->dirs[i];

		/* After an absolute redirect only deeper layers count. */
		if (d->layer <= last_layer)
			continue;
		last_layer = d->layer;
		err = lookup_in(&l, d->fd, d->layer, &base, &i);
	}
	layer_stack_release(&l.root_stack);
	if (!err && out->found && l.is_metacopy && out->datafd < 0)
		err = -ENODATA; /* no layer below contains the data */
	if (err)
		layer_stack_entry_release(out);
	return err;
}

int layer_stack_open_dir(const struct layer_stack_roots *roots,
			 const char *path, struct layer_stack *out)
{
	struct layer_stack_entry next;
	char copy[STACK_PATH_MAX], *comp, *save;
	int err;

	if (strlen(path) >= sizeof(copy))
		return -ENAMETOOLONG;
	strcpy(copy, path);
	err = layer_stack_root(roots, out);
	for (comp = strtok_r(copy, "/", &save); !err && comp;
	     comp = strtok_r(NULL, "/", &save)) {
		err = layer_stack_lookup(roots, out, comp, &next);
		layer_stack_release(out);
		if (err)
			return err;
		if (next.datafd >= 0)
			close(next.datafd);
		*out = next.children; /* empty unless a directory */
	}
	return err;
}
