// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What the lower layers of a stack show at a path, for lamina diff: the
 * topmost lower entry, as overlayfs's lookup finds it. A whiteout in a
 * higher lower layer hides the entries below it, an opaque directory
 * hides the lower contents under it, and a non-directory hides every
 * path beneath its name. A redirect on a lower directory records where
 * that directory is in the layers below it, as src/ovl/lookup.c follows
 * it: an absolute one is a path from the layer root, a relative one is a
 * new name in the same parent.
 */
#include "diff.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum probe { PROBE_ABSENT, PROBE_FOUND, PROBE_HIDDEN };

/* One path component: the entry name in dirfd. */
static enum probe probe_component(int dirfd, const char *name, bool last,
				  const struct layer_format *fmt,
				  struct layer_entry *e, int *err)
{
	if (fstatat(dirfd, name, &e->st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			*err = -errno;
		return PROBE_ABSENT;
	}
	*err = layer_classify(dirfd, name, fmt, e);
	if (*err || e->whiteout)
		return PROBE_HIDDEN;
	if (!last && !S_ISDIR(e->st.st_mode))
		return PROBE_HIDDEN;
	return PROBE_FOUND;
}

/* The path that the layers below one layer are searched for. */
struct below_path {
	char path[PATH_MAX];
	size_t len;
	int err; /* -ENAMETOOLONG when it does not fit */
};

static void below_append(struct below_path *b, const char *name, size_t len)
{
	if (b->len + !!b->len + len >= sizeof(b->path)) {
		b->err = -ENAMETOOLONG;
		return;
	}
	if (b->len)
		b->path[b->len++] = '/';
	memcpy(b->path + b->len, name, len);
	b->len += len;
	b->path[b->len] = '\0';
}

/* Apply the redirect of the directory that b->path now ends in. */
static void below_redirect(struct below_path *b, const char *redirect)
{
	char *slash;

	if (redirect[0] == '/') {
		b->len = 0;
		b->path[0] = '\0';
		redirect++;
	} else {
		slash = strrchr(b->path, '/');
		b->len = slash ? (size_t)(slash - b->path) : 0;
		b->path[b->len] = '\0';
	}
	if (*redirect)
		below_append(b, redirect, strlen(redirect));
}

/*
 * Look path up in one layer, component by component, with no symlink
 * followed. *below_hidden is set when an opaque directory on the way
 * hides the layers below this one, and below gets the path to look up
 * in those layers once the redirects met on the way are applied.
 */
static enum probe probe_layer(int rootfd, const struct layer_format *fmt,
			      const char *path, struct lower_hit *hit,
			      bool *below_hidden, struct below_path *below)
{
	struct layer_entry e = {0};
	const char *p = path, *slash;
	char name[256];
	enum probe r = PROBE_ABSENT;
	int dirfd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int next, err = 0;

	below->len = 0;
	below->path[0] = '\0';
	for (; dirfd >= 0; p = slash + 1) {
		slash = strchr(p, '/');
		if ((slash ? (size_t)(slash - p) : strlen(p)) >= sizeof(name)) {
			r = PROBE_ABSENT; /* no entry has such a name */
			break;
		}
		snprintf(name, sizeof(name), "%.*s",
			 slash ? (int)(slash - p) : (int)strlen(p), p);
		r = probe_component(dirfd, name, !slash, fmt, &e, &err);
		if (r == PROBE_FOUND && slash) {
			below_append(below, name, strlen(name));
			if (e.redirect)
				below_redirect(below, e.redirect);
		}
		layer_entry_release(&e);
		if (r != PROBE_FOUND || !slash)
			break;
		*below_hidden |= e.opaque;
		next = openat(dirfd, name,
			      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dirfd);
		dirfd = next;
	}
	/* The components not walked in this layer keep their names below. */
	if (dirfd >= 0 && *p)
		below_append(below, p, strlen(p));
	if (!err)
		err = below->err;
	if (dirfd < 0 || err) {
		hit->err = dirfd < 0 ? -errno : err;
		r = PROBE_HIDDEN;
	}
	if (r == PROBE_FOUND) {
		hit->dirfd = dirfd;
		hit->st = e.st;
		snprintf(hit->name, sizeof(hit->name), "%s", name);
	} else if (dirfd >= 0) {
		close(dirfd);
	}
	return r;
}

/*
 * Find path (relative, "" is the root) in the lowers, top first. Returns
 * true with hit filled (hit->dirfd open on its parent, for the caller to
 * close), or false; hit->err is set when a layer could not be read.
 */
bool diff_lower_find(const int *lowerfds, int nlower,
		     const struct layer_format *fmt, const char *path,
		     struct lower_hit *hit)
{
	struct below_path *below = malloc(sizeof(*below));
	char *cur = strdup(path);
	bool below_hidden = false, found = false;
	enum probe r = PROBE_ABSENT;
	int i;

	hit->dirfd = -1;
	hit->err = cur && below ? 0 : -ENOMEM;
	for (i = 0; !hit->err && *cur && i < nlower; i++) {
		below->err = 0;
		r = probe_layer(lowerfds[i], fmt, cur, hit, &below_hidden,
				below);
		found = r == PROBE_FOUND;
		if (found || r == PROBE_HIDDEN || below_hidden)
			break;
		/* A redirect met in layer i leads the layers below elsewhere.
		 */
		free(cur);
		cur = strdup(below->path);
		if (!cur)
			hit->err = -ENOMEM;
	}
	free(cur);
	free(below);
	return found;
}
