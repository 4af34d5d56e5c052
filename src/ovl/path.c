// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Node locations in each layer. A node is reached by name from the layer
 * root each time, through a directory descriptor opened for the one
 * request, because lamina keeps no descriptor per node.
 */
#include "ovl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Layer index of the file that contains the node's data and attributes. */
int ovl_node_real_layer(const struct ovl_node *node)
{
	if (ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX))
		return 0;
	return node->lower;
}

/*
 * Copy the parent's path and the node's name in one consistent step.
 * NOTE: a path inside a layer is limited to OVL_PATH_MAX - 1 bytes, so
 * deeper entries give ENAMETOOLONG, which overlayfs does not.
 */
static int node_parent_path(struct ovl_fs *fs, struct ovl_node *node, int layer,
			    char *buf, size_t size, char *name)
{
	size_t max = sizeof(((struct ovl_path *)0)->name);
	char *slash;
	int err;

	/* In the lowers, a moved directory lives at its redirect. */
	err = ovl_node_lower_path(fs, node, layer, buf, size);
	if (err)
		return err;
	slash = strrchr(buf, '/');
	if (strlen(slash ? slash + 1 : buf) >= max)
		return -ENAMETOOLONG;
	strcpy(name, slash ? slash + 1 : buf);
	if (slash)
		*slash = '\0';
	else
		buf[0] = '\0';
	return 0;
}

/*
 * Open the directory that contains node in the given layer, and fill
 * path with it and the node's name. A file without a name (O_TMPFILE, or
 * unlinked while open) is reached through the /proc link of its
 * descriptor instead: dirfd is then AT_FDCWD, which the ovl_do_*()
 * wrappers follow. The caller closes path with ovl_path_close().
 */
int ovl_node_open_parent(struct ovl_fs *fs, struct ovl_node *node, int layer,
			 struct ovl_path *path)
{
	path->dirfd = -1;
	path->pin = NULL;
	if (node->anon_fd >= 0) {
		path->dirfd = AT_FDCWD;
		snprintf(path->name, sizeof(path->name), "/proc/self/fd/%d",
			 layer == 0 && node->anon_meta_fd >= 0
			     ? node->anon_meta_fd
			     : node->anon_fd);
		return 0;
	}
	if (layer == 0 && ovl_node_has(node, OVL_N_INDEX) &&
	    !ovl_node_has(node, OVL_N_UPPER))
		return ovl_index_open(fs, node, path);
	return ovl_node_open_place(fs, node, layer, path);
}

/*
 * Like ovl_node_open_parent, but always the node's place by name: for a
 * node still in the index, where its upper name will go.
 */
int ovl_node_open_place(struct ovl_fs *fs, struct ovl_node *node, int layer,
			struct ovl_path *path)
{
	char rel[OVL_PATH_MAX];
	int err;

	path->dirfd = -1;
	path->pin = NULL;
	if (layer < 0 || layer >= fs->nlayers)
		return -EINVAL;
	/* A removed node's old path may name another file by now. */
	if (ovl_node_has(node, OVL_N_DELETED))
		return -ENOENT;
	if (ovl_dirfd_open_place(fs, node, layer, path, &err))
		return err;
	if (!node->parent) {
		/* The root is "." in the layer's root directory. */
		rel[0] = '\0';
		strcpy(path->name, ".");
	} else {
		err = node_parent_path(fs, node, layer, rel, sizeof(rel),
				       path->name);
		if (err)
			return err;
	}
	err = ovl_open_layer_dir(fs->layers[layer].fd, rel, O_PATH);
	/* A parent that is no directory now: the name moved away. */
	if (err == -ENOTDIR)
		err = -ENOENT;
	if (err < 0)
		return err;
	path->dirfd = err;
	return 0;
}

/*
 * Fill path with the node's upper file for a change of its own attributes
 * or xattrs. A directory is reached through the /proc link of its own
 * descriptor, which follows it across renames: the kernel does not lock
 * a directory that a rename moves, so a chmod of it may come meanwhile.
 * *fd is that descriptor if the caller must close it, else -1.
 */
int ovl_node_open_self(struct ovl_fs *fs, struct ovl_node *node,
		       struct ovl_path *path, int *fd)
{
	bool owned;
	int dirfd;

	*fd = -1;
	if (node->type != S_IFDIR || !node->parent)
		return ovl_node_open_parent(fs, node, 0, path);
	dirfd = ovl_node_dir_fd(fs, node, 0, &owned);
	if (dirfd < 0)
		return dirfd;
	path->dirfd = AT_FDCWD;
	path->pin = NULL;
	snprintf(path->name, sizeof(path->name), "/proc/self/fd/%d", dirfd);
	if (owned)
		*fd = dirfd;
	return 0;
}

/* Open the directory node itself in the given layer. */
int ovl_node_open_dir(struct ovl_fs *fs, struct ovl_node *node, int layer,
		      int flags)
{
	char rel[OVL_PATH_MAX];
	int err;

	if (layer < 0 || layer >= fs->nlayers)
		return -EINVAL;
	if (ovl_node_has(node, OVL_N_DELETED))
		return -ENOENT;
	/* A name that is no directory now: the directory moved away. */
	if (ovl_dirfd_open(fs, node, layer, flags, &err))
		return err == -ENOTDIR ? -ENOENT : err;
	err = ovl_dircache_get(node, layer, flags);
	if (err >= 0)
		return err;
	err = ovl_node_lower_path(fs, node, layer, rel, sizeof(rel));
	if (err)
		return err;
	err = ovl_open_layer_dir(fs->layers[layer].fd, rel, flags);
	if (err >= 0)
		ovl_dircache_put(node, layer, flags, err);
	return err == -ENOTDIR ? -ENOENT : err;
}

/*
 * A descriptor of the directory node in layer, with O_PATH, for calls
 * relative to it: the kept one, which stays open while the caller has a
 * reference on node, or else a new one. Then *owned is set and the
 * caller closes it.
 */
int ovl_node_dir_fd(struct ovl_fs *fs, struct ovl_node *node, int layer,
		    bool *owned)
{
	int fd;

	*owned = false;
	if (layer < 0 || layer >= fs->nlayers)
		return -EINVAL;
	if (ovl_node_has(node, OVL_N_DELETED))
		return -ENOENT;
	if (ovl_dirfd_get(fs, node, layer, &fd, owned))
		return fd == -ENOTDIR ? -ENOENT : fd;
	*owned = true;
	return ovl_node_open_dir(fs, node, layer, O_PATH);
}

void ovl_path_close(struct ovl_path *path)
{
	if (path->pin)
		ovl_node_put(path->fs, path->pin);
	else if (path->dirfd >= 0)
		close(path->dirfd);
	path->pin = NULL;
	path->dirfd = -1;
}
