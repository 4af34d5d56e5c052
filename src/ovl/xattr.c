// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Extended attributes of merged entries. overlayfs's own xattrs (under
 * trusted.overlay., or user.overlay. with userxattr) are private; a
 * user's attribute of that name is stored escaped, as
 * trusted.overlay.overlay.NAME, and shown unescaped, as Linux 6.7+ does.
 */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define XATTR_NAME_MAX 255

/*
 * Map the name a user gave to the name stored in the layer. As in
 * overlayfs, the private prefix alone is invalid, and a name that is too
 * long once escaped is not supported.
 */
static int xattr_real_name(struct ovl_fs *fs, const char *name, char *buf,
			   size_t size)
{
	size_t len;
	int n;

	if (strncmp(name, fs->xattr_prefix, fs->xattr_prefix_len)) {
		/* Most names take this path, so it avoids snprintf(). */
		len = strlen(name);
		if (len >= size || len > XATTR_NAME_MAX)
			return -ERANGE;
		memcpy(buf, name, len + 1);
		return 0;
	}
	if (!name[fs->xattr_prefix_len])
		return -EINVAL;
	n = snprintf(buf, size, "%soverlay.%s", fs->xattr_prefix,
		     name + fs->xattr_prefix_len);
	return n < (int)size && n <= XATTR_NAME_MAX ? 0 : -EOPNOTSUPP;
}

/*
 * The name to show for a stored one: NULL for a private overlay xattr,
 * the unescaped name for an escaped one.
 */
static const char *xattr_user_name(struct ovl_fs *fs, const char *real,
				   char *buf, size_t size)
{
	const char *rest;

	if (strncmp(real, fs->xattr_prefix, fs->xattr_prefix_len))
		return real;
	rest = real + fs->xattr_prefix_len;
	if (strncmp(rest, "overlay.", 8))
		return NULL;
	snprintf(buf, size, "%s%s", fs->xattr_prefix, rest + 8);
	return buf;
}

/*
 * Check whether the node's real file is known to have no xattrs: a lower
 * file that the prefetch saw without any, as long as it is not copied up.
 */
static bool xattr_none(struct ovl_node *node)
{
	return ovl_node_has(node, OVL_N_NOXATTR) &&
	       ovl_node_real_layer(node) == node->lower;
}

/*
 * Check whether name is known to be absent without a look at the layer:
 * any name on a file with no xattrs, and security.capability on a file
 * created through this mount until some xattr of it is set or removed.
 * The kernel reads security.capability before the first write and each
 * chown.
 */
static bool xattr_absent(struct ovl_node *node, const char *name)
{
	if (!strcmp(name, "security.capability") &&
	    (atomic_load(&node->flags) & OVL_N_NOCAPS))
		return true;
	return xattr_none(node) && ovl_noxattr_name(name);
}

/* Read an xattr of the node's real file by its path. */
static int getxattr_by_path(struct ovl_fs *fs, struct ovl_node *node,
			    const char *real, void *value, size_t size)
{
	struct ovl_path path;
	int n;

	n = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (!n)
		n = ovl_do_getxattr(path.dirfd, path.name, real, value, size);
	ovl_path_close(&path);
	return n;
}

/* List the xattrs of the node's real file by its path into a new *list;
 * returns the list's size. */
static int listxattr_by_path(struct ovl_fs *fs, struct ovl_node *node,
			     char **list)
{
	struct ovl_path path;
	int n;

	n = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (n)
		return n;
	n = ovl_do_listxattr(path.dirfd, path.name, NULL, 0);
	if (n > 0) {
		*list = malloc(n);
		n = *list ? ovl_do_listxattr(path.dirfd, path.name, *list, n)
			  : -ENOMEM;
	}
	ovl_path_close(&path);
	return n;
}

void ovl_op_getxattr(struct fuse_req *req, uint64_t nodeid, const char *name,
		     size_t size)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	char real[XATTR_NAME_MAX + 1], *value = NULL;
	struct ovl_file *file;
	unsigned int seen;
	int n, tries = 0;
	bool settled;

	ovl_index_refresh(fs, node);
	n = xattr_real_name(fs, name, real, sizeof(real));
	if (!n && xattr_absent(node, name))
		n = -ENODATA;
	if (!n && size)
		value = malloc(size);
	if (!n && size && !value)
		n = -ENOMEM;
	/* A file that a user has open, as at each first write. */
	file = n ? NULL : ovl_node_open_file(node);
	if (file) {
		n = fgetxattr(file->fd, real, value, size);
		n = n < 0 ? -errno : n;
		ovl_file_put(fs, file);
	} else if (!n) {
		do {
			settled = ovl_moves_settle(fs, &seen);
			n = getxattr_by_path(fs, node, real, value, size);
		} while (ovl_moves_read_again(fs, settled, seen, &tries));
	}
	if (n < 0)
		ovl_reply_status(req, n);
	else if (size == 0)
		fuse_reply_xattr(req, n);
	else
		fuse_reply_buf(req, value, n);
	free(value);
}

static bool same_user_ns(pid_t pid)
{
	char path[64];
	struct stat mine, theirs;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)pid);
	return stat("/proc/self/ns/user", &mine) == 0 &&
	       stat(path, &theirs) == 0 && mine.st_ino == theirs.st_ino &&
	       mine.st_dev == theirs.st_dev;
}

/*
 * Check whether the caller may list trusted.* names. overlayfs lists them
 * only to a caller with CAP_SYS_ADMIN in the initial user namespace, and
 * lamina's own user namespace takes the place of the initial one here.
 * Without a process to look at, root counts as such a caller.
 * NOTE: these are the calling task's own capabilities. A filesystem
 * stacked on lamina that calls with its mounter's credentials, such as
 * an overlay mounted in a user namespace, is judged by its caller's.
 */
static bool caller_sees_trusted(const struct fuse_ctx *ctx)
{
	unsigned long long caps = 0;
	char path[64], line[256];
	bool found = false;
	FILE *f = NULL;

	if (ctx->pid > 0) {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
		f = fopen(path, "re");
	}
	if (!f)
		return ctx->uid == 0;
	while (!found && fgets(line, sizeof(line), f))
		found = sscanf(line, "CapEff: %llx", &caps) == 1;
	fclose(f);
	if (!found)
		return ctx->uid == 0;
	return ((caps >> CAP_SYS_ADMIN) & 1) && same_user_ns(ctx->pid);
}

/*
 * Rewrite a listing in place: drop private names, and trusted ones for a
 * caller who may not see them; unescape escaped ones.
 */
static size_t xattr_filter_list(struct ovl_fs *fs, const struct fuse_ctx *ctx,
				char *list, size_t len)
{
	char *out = list, *name = list, buf[XATTR_NAME_MAX + 1];
	char *end = list + len;
	int trusted = -1; /* not checked yet */

	while (name < end) {
		size_t n = strlen(name) + 1;
		const char *shown = xattr_user_name(fs, name, buf, sizeof(buf));

		if (shown && !strncmp(shown, "trusted.", 8)) {
			if (trusted < 0)
				trusted = caller_sees_trusted(ctx);
			if (!trusted)
				shown = NULL;
		}
		if (shown) {
			size_t m = strlen(shown) + 1;

			memmove(out, shown, m);
			out += m;
		}
		name += n;
	}
	return out - list;
}

void ovl_op_listxattr(struct fuse_req *req, uint64_t nodeid, size_t size)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	char *list = NULL;
	unsigned int seen;
	int n, raw, tries = 0;
	bool settled;

	ovl_index_refresh(fs, node);
	if (xattr_none(node)) {
		if (size == 0)
			fuse_reply_xattr(req, 0);
		else
			fuse_reply_buf(req, NULL, 0);
		return;
	}
	do {
		free(list);
		list = NULL;
		settled = ovl_moves_settle(fs, &seen);
		n = listxattr_by_path(fs, node, &list);
	} while (ovl_moves_read_again(fs, settled, seen, &tries));
	/* As in overlayfs, the size reported and the room needed are those
	 * of the layer's list before hidden names are dropped. */
	raw = n;
	if (n > 0 && size >= (size_t)n)
		n = xattr_filter_list(fs, fuse_req_ctx(req), list, n);
	if (n < 0)
		ovl_reply_status(req, n);
	else if (size == 0)
		fuse_reply_xattr(req, raw);
	else if ((size_t)raw > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, n);
	free(list);
}

/* 0 if the file that the node shows has the xattr, else -errno. */
static int xattr_present(struct ovl_fs *fs, struct ovl_node *node,
			 const char *name, const char *real)
{
	struct ovl_path path;
	int n;

	if (xattr_absent(node, name))
		return -ENODATA;
	n = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (n)
		return n;
	n = ovl_do_getxattr(path.dirfd, path.name, real, NULL, 0);
	ovl_path_close(&path);
	return n < 0 ? n : 0;
}

/*
 * Copy node up for an xattr change, unless it is a lower name of a file
 * in the index. That entry takes the change in place, as in overlayfs,
 * where all names share one inode. Names of one hard-linked lower file
 * take turns, so that of several changed at once only the first is
 * copied up.
 */
static int xattr_copy_up(struct ovl_fs *fs, struct ovl_node *node)
{
	bool linked = fs->index_fd >= 0 && ovl_node_has(node, OVL_N_LINKED) &&
		      !ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX);
	int err = 0;

	if (linked)
		pthread_mutex_lock(&fs->xattr_up_lock);
	ovl_index_refresh(fs, node);
	if (!ovl_node_has(node, OVL_N_INDEX))
		err = ovl_copy_up(fs, node, OVL_COPY_UP_META);
	if (linked)
		pthread_mutex_unlock(&fs->xattr_up_lock);
	return err;
}

static int xattr_change(struct fuse_req *req, uint64_t nodeid,
			const char *name, const void *value, size_t size,
			int flags, bool remove)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	char real[XATTR_NAME_MAX + 1];
	struct ovl_path path;
	int err, self_fd;

	err = xattr_real_name(fs, name, real, sizeof(real));
	ovl_index_refresh(fs, node);
	/* As in overlayfs, removing an xattr that a lower file lacks fails
	 * without a copy-up. */
	if (!err && remove && !ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX))
		err = xattr_present(fs, node, name, real);
	/* Before the change, so that no reader gets the old result. */
	atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_NOCAPS);
	if (!err)
		err = xattr_copy_up(fs, node);
	if (!err)
		err = ovl_node_open_self(fs, node, &path, &self_fd);
	if (err)
		return err;
	if (remove)
		err = ovl_do_removexattr(path.dirfd, path.name, real);
	else
		err = ovl_do_setxattr(path.dirfd, path.name, real, value, size,
				      flags);
	ovl_path_close(&path);
	if (self_fd >= 0)
		close(self_fd);
	return err;
}

void ovl_op_setxattr(struct fuse_req *req, uint64_t nodeid, const char *name,
		     const void *value, size_t size, int flags)
{
	fuse_reply_err(req,
		       -xattr_change(req, nodeid, name, value, size, flags,
				     false));
}

void ovl_op_removexattr(struct fuse_req *req, uint64_t nodeid,
			const char *name)
{
	fuse_reply_err(req, -xattr_change(req, nodeid, name, NULL, 0, 0, true));
}
