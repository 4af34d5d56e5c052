// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Where a moved directory's lower parts are. A redirect on the upper
 * directory applies to every lower layer; a redirect met on a lower
 * directory applies to the layers below that one. So a node keeps a
 * short list of segments, each naming its path from one layer down.
 */
#include "ovl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
