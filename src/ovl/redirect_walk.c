// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The walk along an absolute redirect in one lower layer. overlayfs
 * looks up such a path a component at a time. A directory on the way
 * that was itself moved (it carries a redirect) moves the rest of the
 * path for the layers below, so "/p2/q" through a "p2" redirected to
 * "p" is "/p/q" further down. An opaque directory on the way ends the
 * search after this layer, unless a directory below it on the way
 * carries an absolute redirect.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * The new path when the directory at path[0, end) carries the redirect
 * value: the redirect in its place, then the rest of path.
 */
static int moved_path(const char *path, size_t start, size_t end,
		      const char *value, char *out, size_t size)
{
	int n;

	if (value[0] == '/')
		n = snprintf(out, size, "%s%s", value + 1, path + end);
	else
		n = snprintf(out, size, "%.*s%s%s", (int)start, path, value,
			     path + end);
	return n < (int)size ? 0 : -ENAMETOOLONG;
}

/* A redirect on the component path[start, end) in dirfd, if any. */
static int check_component(struct ovl_fs *fs, struct ovl_lookup *res, int layer,
			   int dirfd, const char *path, size_t start,
			   size_t end)
{
	char comp[256], value[OVL_PATH_MAX], moved[OVL_PATH_MAX];
	int n, err;

	snprintf(comp, sizeof(comp), "%.*s", (int)(end - start), path + start);
	if (ovl_check_opaque(fs, dirfd, comp)) {
		/* Its redirect, if any, is not followed. */
		res->stop_below = true;
		return 0;
	}
	if (layer + 1 >= fs->nlayers ||
	    fs->config.redirect == OVL_REDIRECT_NOFOLLOW)
		return 0;
	n = ovl_redirect_read(fs, dirfd, comp, value, sizeof(value));
	if (n < 0)
		return 0;
	if (n == 0)
		value[0] = '\0'; /* invalid, as overlayfs has it */
	if (!ovl_redirect_valid(value)) {
		log_warn_rl("invalid redirect '%s' on %s", value, comp);
		return -EINVAL;
	}
	/* An absolute redirect goes on past an opaque directory above. */
	if (value[0] == '/')
		res->stop_below = false;
	err = moved_path(path, start, end, value, moved, sizeof(moved));
	if (!err)
		err = ovl_redirect_add(&res->chain, layer + 1, moved, false);
	return err;
}

/*
 * Open the parent of the absolute lower path in layer and point *base at
 * the last component. Returns the descriptor, or -ENOENT when a
 * component is missing or not a directory there.
 */
int ovl_redirect_walk(struct ovl_fs *fs, struct ovl_lookup *res, int layer,
		      const char *path, const char **base)
{
	size_t start = 0, end;
	struct stat st;
	int fd, next, err;

	fd = ovl_open_layer_dir(fs->layers[layer].fd, "", O_PATH);
	for (; fd >= 0; start = end + 1) {
		end = strchrnul(path + start, '/') - path;
		if (!path[end]) {
			*base = path + start;
			return fd;
		}
		err = check_component(fs, res, layer, fd, path, start, end);
		if (!err) {
			char comp[256];

			snprintf(comp, sizeof(comp), "%.*s", (int)(end - start),
				 path + start);
			next = openat(fd, comp,
				      O_PATH | O_DIRECTORY | O_NOFOLLOW |
					  O_CLOEXEC);
			err = next < 0 ? -errno : 0;
			if (!err &&
			    (fstat(next, &st) < 0 || !S_ISDIR(st.st_mode))) {
				close(next);
				err = -ENOTDIR;
			}
		}
		close(fd);
		/* As in overlayfs: a whiteout or a file on the way hides
		 * the path in the layers below too. */
		if (err == -ENOTDIR)
			res->stop_below = true;
		if (err)
			return err == -ENOTDIR ? -ENOENT : err;
		fd = next;
	}
	return fd;
}
