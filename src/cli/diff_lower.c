// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * What the lower layers of a stack show at a path, for lamina diff: the
 * topmost lower entry, as overlayfs's lookup finds it. A whiteout in a
 * higher lower layer hides the entries below it, an opaque directory
 * hides the lower contents under it, and a non-directory hides every
 * path beneath its name.
 *
 * TODO: redirects inside lower layers are not followed here, although
 * the mount follows them, so a lower directory reached only through such
 * a redirect shows its upper entries as added.
 */
#include "diff.h"

#include <errno.h>
#include <fcntl.h>
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

/*
 * Look path up in one layer, component by component, with no symlink
 * followed. *below_hidden is set when an opaque directory on the way
 * hides the layers below this one.
 */
static enum probe probe_layer(int rootfd, const struct layer_format *fmt,
			      const char *path, struct lower_hit *hit,
			      bool *below_hidden)
{
	struct layer_entry e = {0};
	const char *p = path, *slash;
	char name[256];
	enum probe r = PROBE_ABSENT;
	int dirfd = openat(rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int next, err = 0;

	for (; dirfd >= 0; p = slash + 1) {
		slash = strchr(p, '/');
		if ((slash ? (size_t)(slash - p) : strlen(p)) >= sizeof(name)) {
			r = PROBE_ABSENT; /* no entry has such a name */
			break;
		}
		snprintf(name, sizeof(name), "%.*s",
			 slash ? (int)(slash - p) : (int)strlen(p), p);
		r = probe_component(dirfd, name, !slash, fmt, &e, &err);
		layer_entry_release(&e);
		if (r != PROBE_FOUND || !slash)
			break;
		*below_hidden |= e.opaque;
		next = openat(dirfd, name,
			      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(dirfd);
		dirfd = next;
	}
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
	bool below_hidden = false;
	enum probe r;
	int i;

	hit->dirfd = -1;
	hit->err = 0;
	if (!*path)
		return false;
	for (i = 0; i < nlower; i++) {
		r = probe_layer(lowerfds[i], fmt, path, hit, &below_hidden);
		if (r == PROBE_FOUND)
			return true;
		if (r == PROBE_HIDDEN || below_hidden)
			return false;
	}
	return false;
}
