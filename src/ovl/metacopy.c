// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Metacopy files: with metacopy=on, a change of metadata alone (chmod,
 * chown, times, xattrs, a new link or name) copies up the metadata of a
 * lower file and marks the upper copy with overlay.metacopy; the data
 * stays in the lower layer until the first open for writing. The upper
 * file has the full size with no blocks, so only the mark shows that
 * its data is elsewhere.
 *
 * The data comes up in place: the mark goes only after the data is on
 * disk, so a crash in between leaves a metacopy file whose data is
 * still read from below.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

/* Whether dirfd/name carries the metacopy xattr: its data lies below. */
bool ovl_has_metacopy(struct ovl_fs *fs, int dirfd, const char *name)
{
	char attr[64];

	ovl_xattr_name(fs, attr, sizeof(attr), "metacopy");
	return ovl_do_getxattr(dirfd, name, attr, NULL, 0) >= 0;
}

/*
 * 1 if dirfd/name is a metacopy file to follow, 0 if not, and
 * -EPERM for one that this mount may not follow, as overlayfs refuses
 * too. One in the last layer has no data below it, so its lookup fails
 * with EIO, as in overlayfs.
 */
int ovl_metacopy_check(struct ovl_fs *fs, int dirfd, const char *name,
		       const struct stat *st)
{
	if (!S_ISREG(st->st_mode) || !ovl_has_metacopy(fs, dirfd, name))
		return 0;
	if (!fs->config.metacopy && fs->first_data == fs->nlayers) {
		log_warn_rl(
		    "refusing to follow the metacopy file %s; mount with metacopy=on",
		    name);
		return -EPERM;
	}
	return 1;
}

/* The layer whose file contains the node's data. */
int ovl_node_data_layer(const struct ovl_node *node)
{
	return node->data_layer >= 0 ? node->data_layer
				     : ovl_node_real_layer(node);
}

/*
 * Return whether node's data still lies below. Another name of the upper
 * file is another node, which may have brought the data up since.
 */
bool ovl_metacopy_pending(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_path path;
	bool marked = true;

	if (node->data_layer < 0)
		return false;
	if (!ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX) ||
	    ovl_node_open_parent(fs, node, 0, &path))
		return true;
	marked = ovl_has_metacopy(fs, path.dirfd, path.name);
	ovl_path_close(&path);
	if (!marked)
		node->data_layer = -1;
	return marked;
}

/*
 * Give node its data unless it is up already. The names of one upper file
 * are separate nodes, so one lock over every such copy-up keeps two names
 * from copying the data at once, or after the other's write.
 */
int ovl_metacopy_bring_up(struct ovl_fs *fs, struct ovl_node *node,
			  unsigned int flags)
{
	int err = 0;

	pthread_mutex_lock(&fs->data_up_lock);
	if (ovl_metacopy_pending(fs, node))
		err = ovl_metacopy_finish(fs, node, flags);
	pthread_mutex_unlock(&fs->data_up_lock);
	return err;
}

/* A metacopy file has no blocks of its own; du counts the data's. */
void ovl_metacopy_fix_blocks(struct ovl_fs *fs, struct ovl_node *node,
			     struct stat *st)
{
	struct ovl_path path;
	struct stat data;

	if (!ovl_metacopy_pending(fs, node) ||
	    ovl_node_open_parent(fs, node, node->data_layer, &path))
		return;
	if (!ovl_do_fstatat(path.dirfd, path.name, &data))
		st->st_blocks = data.st_blocks;
	ovl_path_close(&path);
}

static int open_in(struct ovl_fs *fs, struct ovl_node *node, int layer,
		   int flags)
{
	struct ovl_path path;
	int fd, err;

	err = ovl_node_open_parent(fs, node, layer, &path);
	if (err)
		return err;
	fd = openat(path.dirfd, path.name, flags | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == EPERM && (flags & O_NOATIME))
		fd = openat(path.dirfd, path.name,
			    (flags & ~O_NOATIME) | O_NOFOLLOW | O_CLOEXEC);
	err = fd < 0 ? -errno : fd;
	ovl_path_close(&path);
	return err;
}

/*
 * Writing the data drops security.capability, and moves the times: both
 * are put back as they were.
 */
static int copy_data(struct ovl_fs *fs, struct ovl_node *node, int dst)
{
	char cap[1024];
	struct stat st;
	int src, err, ncap;

	if (fstat(dst, &st) < 0)
		return -errno;
	ncap = fgetxattr(dst, "security.capability", cap, sizeof(cap));
	src = open_in(fs, node, node->data_layer, O_RDONLY | O_NOATIME);
	if (src < 0)
		return src;
	err = ovl_copy_up_data(src, dst, st.st_size);
	close(src);
	if (!err && ncap > 0 &&
	    fsetxattr(dst, "security.capability", cap, ncap, 0) < 0)
		err = -errno;
	if (!err &&
	    futimens(dst, (struct timespec[2]){st.st_atim, st.st_mtim}) < 0)
		err = -errno;
	if (!err && !fs->config.volatile_mount && fsync(dst) < 0)
		err = -errno;
	return err;
}

/*
 * Give an upper metacopy file its data, or with OVL_COPY_UP_NO_DATA
 * (the caller truncates it to nothing) just the size 0. The caller
 * holds node->lock.
 */
int ovl_metacopy_finish(struct ovl_fs *fs, struct ovl_node *node,
			unsigned int flags)
{
	char attr[64];
	struct ovl_path path;
	int dst, err;

	dst = open_in(fs, node, 0, O_WRONLY);
	if (dst < 0)
		return dst;
	if (flags & OVL_COPY_UP_NO_DATA)
		err = ftruncate(dst, 0) < 0 ? -errno : 0;
	else
		err = copy_data(fs, node, dst);
	close(dst);
	if (!err)
		err = ovl_node_open_parent(fs, node, 0, &path);
	if (err) {
		char name[NAME_MAX + 1];

		log_warn_rl(
		    "copying up the data of %s failed: %s",
		    ovl_node_name_try_copy(fs, node, name, sizeof(name)),
		    strerror(-err));
		return err;
	}
	ovl_xattr_name(fs, attr, sizeof(attr), "metacopy");
	err = ovl_do_removexattr(path.dirfd, path.name, attr);
	ovl_path_close(&path);
	if (err && err != -ENODATA)
		return err;
	node->data_layer = -1;
	return 0;
}
