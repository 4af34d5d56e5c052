// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The locations of a moved directory's lower parts. A redirect on the upper
 * directory applies to every lower layer; a redirect met on a lower
 * directory applies to the layers below that one. So a node keeps a
 * short list of segments, each naming its path from one layer down.
 */
#include "ovl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * Whether an overlay.redirect value names one entry, as overlayfs
 * requires: an absolute path ("/a/b") or a single name, with no empty,
 * "." or ".." component and no component longer than NAME_MAX. Every
 * reader of redirects checks this first, so none leaves the layer.
 */
/*
 * Read the overlay.redirect xattr of name in dirfd into value, ending it
 * with a NUL. Returns its length, or 0 or a negative errno when there is
 * none.
 */
int ovl_redirect_read(struct ovl_fs *fs, int dirfd, const char *name,
		      char *value, size_t size)
{
	char attr[64];
	int n;

	ovl_xattr_name(fs, attr, sizeof(attr), "redirect");
	n = ovl_do_getxattr(dirfd, name, attr, value, size - 1);
	if (n > 0)
		value[n] = '\0';
	return n;
}

bool ovl_redirect_valid(const char *value)
{
	bool absolute = value[0] == '/';
	const char *p = absolute ? value + 1 : value, *end;
	size_t len;

	for (;;) {
		end = strchrnul(p, '/');
		len = (size_t)(end - p);
		if (len == 0 || len > 255 || (len == 1 && p[0] == '.') ||
		    (len == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!*end)
			return true;
		if (!absolute)
			return false;
		p = end + 1;
	}
}

/* The segment that applies to layer, or NULL: the node is at its name. */
const struct ovl_redirect *ovl_redirect_at(const struct ovl_redirect *r,
					   int layer)
{
	const struct ovl_redirect *found = NULL;

	for (; r && r->layer <= layer; r = r->next)
		found = r;
	return found;
}

static struct ovl_redirect *redirect_new(int layer, const char *path,
					 bool relative)
{
	size_t len = strlen(path);
	struct ovl_redirect *r = malloc(sizeof(*r) + len + 1);

	if (!r)
		return NULL;
	r->next = NULL;
	r->layer = (int16_t)layer;
	r->relative = relative;
	memcpy(r->path, path, len + 1);
	return r;
}

/* Append a segment that applies from layer down; layers only grow. */
int ovl_redirect_add(struct ovl_redirect **list, int layer, const char *path,
		     bool relative)
{
	struct ovl_redirect *r = redirect_new(layer, path, relative);

	if (!r)
		return -ENOMEM;
	while (*list)
		list = &(*list)->next;
	*list = r;
	return 0;
}

/*
 * Replace the segment that starts at layer (the top lower one, after a
 * rename) with an absolute path; the segments below it stay.
 */
int ovl_redirect_set_top(struct ovl_redirect **list, int layer,
			 const char *path)
{
	struct ovl_redirect *r = redirect_new(layer, path, false);

	if (!r)
		return -ENOMEM;
	if (*list && (*list)->layer == layer) {
		r->next = (*list)->next;
		free(*list);
	} else {
		r->next = *list;
	}
	*list = r;
	return 0;
}

void ovl_redirect_free(struct ovl_redirect *r)
{
	struct ovl_redirect *next;

	for (; r; r = next) {
		next = r->next;
		free(r);
	}
}
