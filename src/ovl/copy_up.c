// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Copy-up: before a lower entry changes, it is copied to the upper
 * layer. The copy is built under a temporary name in workdir/work and
 * moved into place with one rename, so no crash can leave a partial
 * file in the upper layer.
 */
#include "ovl.h"
#include "../common/log.h"
#include "../fuse/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

struct copy_up_ctx {
	struct ovl_fs *fs;
	struct ovl_node *node;
	struct ovl_path src;  /* the lower entry */
	struct ovl_path data; /* the file with its data; src unless metacopy */
	struct ovl_path dst;  /* the upper parent and the final name */
	struct stat st;	      /* attributes of the lower entry */
	char tmp[64];	      /* staging name in workdir/work */
	unsigned int flags;
	bool meta;    /* copy the metadata alone and mark it metacopy */
	bool indexed; /* a hard-linked lower file, kept in workdir/index */
	bool index_meta; /* linked to an index entry without its data */
	bool index_lost; /* another copy-up made the index entry first */
};

/*
 * Write len bytes at off, going on after a short write. Returns len, or
 * the negative errno of the write that failed (ENOSPC on a full upper).
 */
static ssize_t write_all(int fd, const char *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done, off + done);

		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* no progress and no error */
		done += (size_t)n;
	}
	return (ssize_t)len;
}

static int copy_fallback(int src, int dst, off_t off, off_t end)
{
	static __thread char buf[1 << 16];

	while (off < end) {
		size_t want = sizeof(buf);
		ssize_t n;

		if (end - off < (off_t)want)
			want = (size_t)(end - off);
		n = pread(src, buf, want, off);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		n = write_all(dst, buf, (size_t)n, off);
		if (n < 0)
			return (int)n;
		off += n;
	}
	return 0;
}

/* Copy [off, end) with copy_file_range, or by reading and writing. */
static int copy_range(int src, int dst, off_t off, off_t end)
{
	while (off < end) {
		loff_t in = off, out = off;
		ssize_t n = copy_file_range(src, &in, dst, &out, end - off, 0);

		if (n < 0 && (errno == EXDEV || errno == EINVAL ||
			      errno == EOPNOTSUPP || errno == ENOSYS))
			return copy_fallback(src, dst, off, end);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		off += n;
	}
	return 0;
}

/*
 * Copy a file's data: a reflink where the filesystem has one, else the
 * data extents one by one so that holes stay holes. As on overlayfs, a
 * caller that syncs the copy does so once, after the whole copy. Writing
 * back each step while copying mixed reads and writes on the disk, which
 * made some copy-ups four times slower on a virtual disk.
 */
int ovl_copy_up_data(int src, int dst, off_t size)
{
	off_t data = 0, hole;
	int err;

	if (ioctl(dst, FICLONE, src) == 0)
		return 0;
	while (data < size) {
		data = lseek(src, data, SEEK_DATA);
		if (data < 0)
			break; /* ENXIO: only a hole is left */
		hole = lseek(src, data, SEEK_HOLE);
		if (hole < 0)
			hole = size;
		err = copy_range(src, dst, data, hole);
		if (err)
			return err;
		data = hole;
	}
	if (ftruncate(dst, size) < 0)
		return -errno;
	return 0;
}

/* Private overlay xattrs stay behind; escaped ones are user data. */
static bool xattr_is_private(struct ovl_fs *fs, const char *name)
{
	if (strncmp(name, fs->xattr_prefix, fs->xattr_prefix_len))
		return false;
	return strncmp(name + fs->xattr_prefix_len, "overlay.", 8) != 0;
}

static int copy_xattr(struct ovl_path *src, struct ovl_path *dst,
		      const char *name)
{
	char value[65536];
	int n =
	    ovl_do_getxattr(src->dirfd, src->name, name, value, sizeof(value));

	if (n < 0)
		return n == -ENODATA ? 0 : n;
	n = ovl_do_setxattr(dst->dirfd, dst->name, name, value, n, 0);
	if (n == -EOPNOTSUPP || (n == -EPERM && strncmp(name, "trusted.", 8))) {
		log_warn_rl("copy-up of %s: xattr %s not copied: %s", src->name,
			    name, strerror(-n));
		return 0;
	}
	return n;
}

int ovl_copy_xattrs(struct ovl_fs *fs, struct ovl_path *src,
		    struct ovl_path *dst)
{
	char *list, *name;
	int size, err = 0;

	size = ovl_do_listxattr(src->dirfd, src->name, NULL, 0);
	if (size <= 0)
		return size == -EOPNOTSUPP ? 0 : size;
	list = malloc(size);
	if (!list)
		return -ENOMEM;
	size = ovl_do_listxattr(src->dirfd, src->name, list, size);
	if (size < 0)
		err = size;
	for (name = list; !err && name < list + size;
	     name += strlen(name) + 1) {
		if (!xattr_is_private(fs, name))
			err = copy_xattr(src, dst, name);
	}
	free(list);
	return err;
}

static int copy_up_reg(struct copy_up_ctx *c)
{
	int src, dst, err = 0;

	dst = openat(c->fs->work_fd, c->tmp,
		     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (dst < 0)
		return -errno;
	if (c->meta) {
		/* The full size, as a hole: the data stays below. */
		if (ftruncate(dst, c->st.st_size) < 0)
			err = -errno;
	} else if (!(c->flags & OVL_COPY_UP_NO_DATA)) {
		src = openat(c->data.dirfd, c->data.name,
			     O_RDONLY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC);
		if (src < 0 && errno == EPERM)
			src = openat(c->data.dirfd, c->data.name,
				     O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (src < 0)
			err = -errno;
		else {
			err = ovl_copy_up_data(src, dst, c->st.st_size);
			close(src);
		}
	}
	/* The copy must be on disk before the rename publishes it. */
	if (!err && !c->fs->config.volatile_mount && fsync(dst) < 0)
		err = -errno;
	close(dst);
	return err;
}

static int copy_up_symlink(struct copy_up_ctx *c)
{
	char target[OVL_PATH_MAX];
	ssize_t n =
	    readlinkat(c->src.dirfd, c->src.name, target, sizeof(target) - 1);

	if (n < 0)
		return -errno;
	target[n] = '\0';
	if (symlinkat(target, c->fs->work_fd, c->tmp) < 0)
		return -errno;
	return 0;
}

static int copy_up_create(struct copy_up_ctx *c)
{
	switch (c->st.st_mode & S_IFMT) {
	case S_IFREG:
		return copy_up_reg(c);
	case S_IFDIR:
		return mkdirat(c->fs->work_fd, c->tmp, 0700) < 0 ? -errno : 0;
	case S_IFLNK:
		return copy_up_symlink(c);
	default:
		if (mknodat(c->fs->work_fd, c->tmp, c->st.st_mode & S_IFMT,
			    c->st.st_rdev) < 0)
			return -errno;
		return 0;
	}
}

/*
 * Encode dirfd/name as overlayfs's file handle (struct ovl_fb) into fb,
 * which has room for OVL_FH_MAX bytes. Returns its length, or 0 when the file
 * has no handle or its filesystem no UUID.
 */
int ovl_encode_fh(struct ovl_fs *fs, int dirfd, const char *name, uint8_t *fb,
		  bool upper)
{
	struct {
		struct file_handle fh;
		unsigned char bytes[MAX_HANDLE_SZ];
	} h;
	const struct ovl_layer *layer = NULL;
	struct stat st;
	int mount_id, i;

	if (fstat(dirfd, &st) < 0)
		return 0;
	for (i = 0; i < fs->nlayers; i++)
		if (fs->layers[i].dev == st.st_dev && fs->layers[i].has_uuid)
			layer = &fs->layers[i];
	h.fh.handle_bytes = MAX_HANDLE_SZ;
	/* An empty name stands for dirfd itself, which may be a file. */
	if (!layer || name_to_handle_at(dirfd, name, &h.fh, &mount_id,
					name[0] ? 0 : AT_EMPTY_PATH) < 0)
		return 0;
	if (5 + 16 + h.fh.handle_bytes > OVL_FH_MAX)
		return 0;
	fb[0] = 0;    /* version */
	fb[1] = 0xfb; /* magic */
	fb[2] = 5 + 16 + h.fh.handle_bytes;
	fb[3] = upper ? 4 : 0; /* flags: little-endian fid; 4: in the upper */
	fb[4] = h.fh.handle_type;
	memcpy(fb + 5, layer->uuid, 16);
	memcpy(fb + 21, h.fh.f_handle, h.fh.handle_bytes);
	return fb[2];
}

/*
 * Record the lower file's handle in overlay.origin, as overlayfs does,
 * so st_ino stays the lower one across copy-up and remounts.
 */
int ovl_set_origin(struct ovl_fs *fs, struct ovl_path *lower,
		   struct ovl_path *upper)
{
	uint8_t fb[OVL_FH_MAX];
	char attr[64];
	int len = ovl_encode_fh(fs, lower->dirfd, lower->name, fb, false);

	if (!len)
		return 0; /* no handle, no origin: st_ino is the upper's */
	ovl_xattr_name(fs, attr, sizeof(attr), "origin");
	return ovl_do_setxattr(upper->dirfd, upper->name, attr, fb, len, 0);
}

static int copy_up_attrs(struct copy_up_ctx *c)
{
	struct ovl_path tmp = {.dirfd = c->fs->work_fd};
	struct timespec times[2] = {c->st.st_atim, c->st.st_mtim};
	int err;

	strcpy(tmp.name, c->tmp);
	if (fchownat(tmp.dirfd, tmp.name, c->st.st_uid, c->st.st_gid,
		     AT_SYMLINK_NOFOLLOW) < 0 &&
	    geteuid() == 0)
		return -errno;
	/* chown cleared set-user-ID bits, so the mode comes after it. */
	if (!S_ISLNK(c->st.st_mode) &&
	    fchmodat(tmp.dirfd, tmp.name, c->st.st_mode & 07777, 0) < 0)
		return -errno;
	/* Data first: writing data would drop security.capability. */
	err = ovl_copy_xattrs(c->fs, &c->src, &tmp);
	if (err)
		return err;
	if (c->meta) {
		char attr[64];

		ovl_xattr_name(c->fs, attr, sizeof(attr), "metacopy");
		err = ovl_do_setxattr(tmp.dirfd, tmp.name, attr, "", 0, 0);
		if (err)
			return err;
	}
	/*
	 * Copy-up splits a hard-linked lower file from its other names, so
	 * the copy is a file of its own, with its own st_ino: no origin, as
	 * overlayfs does without index.
	 */
	if (S_ISDIR(c->st.st_mode) || c->st.st_nlink == 1 || c->indexed) {
		err = ovl_set_origin(c->fs, &c->src, &tmp);
		if (err)
			return err;
	}
	if (utimensat(tmp.dirfd, tmp.name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	return 0;
}

/* Copying into the parent must not change its times in the merged view. */
static void restore_parent_times(struct copy_up_ctx *c, const struct stat *ps)
{
	struct timespec times[2] = {ps->st_atim, ps->st_mtim};
	char path[64];

	/* dst.dirfd is an O_PATH descriptor, which futimens() rejects. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", c->dst.dirfd);
	if (utimensat(AT_FDCWD, path, times, 0) < 0)
		log_warn_rl(
		    "restoring the times of the parent of %s failed: %s",
		    c->dst.name, strerror(errno));
}

/*
 * Another name of this lower file was copied up already: link its index
 * entry here. The upper file gains a link that users already counted, so
 * overlay.nlink counts from the lower file while the link is made, and a
 * crash at any point leaves the count right.
 */
static int link_up(struct copy_up_ctx *c, struct ovl_path *index)
{
	int err;

	c->index_meta = ovl_has_metacopy(c->fs, index->dirfd, index->name);
	pthread_mutex_lock(&c->fs->index_nlink_lock);
	err = ovl_index_nlink_lower(c->fs, index->dirfd, index->name,
				    c->st.st_nlink);
	if (!err &&
	    linkat(index->dirfd, index->name, c->dst.dirfd, c->dst.name, 0) < 0)
		err = -errno;
	if (!err)
		err = ovl_index_nlink_upper(c->fs, index->dirfd, index->name);
	pthread_mutex_unlock(&c->fs->index_nlink_lock);
	return err;
}

/*
 * Put the first copied-up name of a hard-linked lower file into the index
 * too. Users count the lower file's links, and overlay.nlink records that
 * ("L+0") until the copy has its upper name. A crash after the link
 * leaves the entry alone in the index once the work directory is
 * cleaned, with that count, as overlayfs shows it.
 */
static int index_new(struct copy_up_ctx *c, const char *name)
{
	int err = ovl_index_claim_upper(c->fs);

	if (!err)
		err =
		    ovl_index_set_nlink(c->fs, c->fs->work_fd, c->tmp, 'L', 0);
	if (!err &&
	    linkat(c->fs->work_fd, c->tmp, c->fs->index_fd, name, 0) < 0)
		err = -errno;
	return err;
}

/*
 * Once the copy has its upper name, overlay.nlink counts from its upper
 * links, as a removal of an upper name expects. The name is in place, so
 * a failure only leaves the count relative to the lower file.
 */
static void index_new_done(struct copy_up_ctx *c, const char *name)
{
	int err;

	pthread_mutex_lock(&c->fs->index_nlink_lock);
	err = ovl_index_nlink_upper(c->fs, c->fs->index_fd, name);
	pthread_mutex_unlock(&c->fs->index_nlink_lock);
	if (err)
		log_warn_rl(
		    "setting the link count of index entry %s failed: %s", name,
		    strerror(-err));
}

/* Build the copy in the work directory and move it into place. */
static int copy_up_new(struct copy_up_ctx *c, const char *index_name)
{
	bool indexed = false;
	int err;

	ovl_tmpname(c->fs, c->tmp, sizeof(c->tmp));
	err = copy_up_create(c);
	if (!err)
		err = copy_up_attrs(c);
	if (!err && index_name) {
		err = index_new(c, index_name);
		indexed = !err;
		c->index_lost = err == -EEXIST;
	}
	if (!err)
		err = ovl_do_rename(c->fs->work_fd, c->tmp, c->dst.dirfd,
				    c->dst.name, RENAME_NOREPLACE);
	if (!err && indexed)
		index_new_done(c, index_name);
	if (err) {
		/* Remove the index entry only if this copy-up made it. */
		if (indexed)
			unlinkat(c->fs->index_fd, index_name, 0);
		ovl_remove_tree(c->fs->work_fd, c->tmp);
	}
	return err;
}

/*
 * Make the kernel drop the listing it keeps of node's parent, whose entry
 * for node still has the inode number from before the copy-up.
 */
static void drop_parent_listing(struct ovl_fs *fs, struct ovl_node *node)
{
	uint64_t parent;

	pthread_rwlock_rdlock(&fs->rename_lock);
	parent = node->parent ? ovl_node_id(fs, node->parent) : 0;
	pthread_rwlock_unlock(&fs->rename_lock);
	if (parent && fs->se)
		fuse_notify_inval_inode(fs->se, parent, 0, 0);
}

/*
 * A directory of one lower layer shows that directory's link count. Once
 * copied up it is merged and shows 1, as in overlayfs, but the kernel
 * keeps the old attributes until lamina invalidates them.
 */
static void drop_dir_attrs(struct ovl_fs *fs, struct ovl_node *node)
{
	if (node->type == S_IFDIR && node->lower_last == node->lower && fs->se)
		fuse_notify_inval_inode(fs->se, ovl_node_id(fs, node), -1, 0);
}

static int copy_up_one(struct copy_up_ctx *c)
{
	struct ovl_path index = {.dirfd = -1};
	struct stat pst, ist;
	int err;

	err = ovl_do_fstatat(c->src.dirfd, c->src.name, &c->st);
	if (err)
		return err;
	if (fstat(c->dst.dirfd, &pst) < 0)
		return -errno;
	if (ovl_index_wanted(c->fs, &c->st)) {
		err = ovl_index_find(c->fs, &c->src, &index, &ist);
		c->indexed = err == 0 || err == -ENOENT;
	}
	/* As overlayfs does, before the entry with its origin appears. */
	err = ovl_set_impure(c->fs, c->dst.dirfd);
	if (!err && c->indexed && index.dirfd >= 0)
		err = link_up(c, &index);
	else if (!err)
		err = copy_up_new(c, c->indexed ? index.name : NULL);
	/* Another name's copy-up made the index entry first: link it. */
	if (c->index_lost) {
		ovl_path_close(&index);
		err = ovl_index_find(c->fs, &c->src, &index, &ist);
		if (!err)
			err = link_up(c, &index);
	}
	ovl_path_close(&index);
	if (err)
		return err;
	restore_parent_times(c, &pst);
	drop_dir_attrs(c->fs, c->node);
	/* Without the index, the copy is a file of its own. */
	if (!S_ISDIR(c->st.st_mode) && c->st.st_nlink > 1 && !c->indexed &&
	    !ovl_do_fstatat(c->dst.dirfd, c->dst.name, &pst)) {
		c->node->ino = pst.st_ino;
		atomic_fetch_add(&c->fs->renumbered, 1);
		drop_parent_listing(c->fs, c->node);
	}
	return 0;
}

static int copy_up_locked(struct ovl_fs *fs, struct ovl_node *node,
			  unsigned int flags)
{
	struct copy_up_ctx c = {.fs = fs, .node = node, .flags = flags};
	int data_layer = ovl_node_data_layer(node), err;

	if (node->lower < 0)
		return -EIO; /* neither upper nor lower: a broken node */
	c.meta = fs->config.metacopy && (flags & OVL_COPY_UP_META) &&
		 node->type == S_IFREG && !(flags & OVL_COPY_UP_NO_DATA);
	c.data.dirfd = -1;
	err = ovl_node_open_parent(fs, node, node->lower, &c.src);
	if (!err && data_layer != node->lower)
		err = ovl_node_open_parent(fs, node, data_layer, &c.data);
	else if (!err)
		c.data = c.src;
	if (!err)
		err = ovl_node_open_place(fs, node, 0, &c.dst);
	if (!err) {
		err = copy_up_one(&c);
		ovl_path_close(&c.dst);
	}
	if (c.data.dirfd != c.src.dirfd)
		ovl_path_close(&c.data);
	ovl_path_close(&c.src);
	if (err) {
		char name[NAME_MAX + 1];

		log_warn_rl(
		    "copy-up of %s failed: %s",
		    ovl_node_name_try_copy(fs, node, name, sizeof(name)),
		    strerror(-err));
		return err;
	}
	node->data_layer = c.meta || c.index_meta ? data_layer : -1;
	atomic_fetch_or(&node->flags, OVL_N_UPPER);
	return 0;
}

/*
 * Copy up the entry that res found at (parent, name), through its node
 * if it has one. The node takes over res->chain.
 */
int ovl_copy_up_name(struct ovl_fs *fs, struct ovl_node *parent,
		     const char *name, struct ovl_lookup *res,
		     unsigned int flags)
{
	struct ovl_node *node = ovl_node_peek(fs, parent, name);
	int err;

	if (!node) {
		node = ovl_node_new(fs, parent, name);
		if (!node)
			return -ENOMEM;
		ovl_node_fill(node, res);
	}
	err = ovl_copy_up(fs, node, flags);
	ovl_node_put(fs, node);
	return err;
}

/*
 * Make sure node has an upper entry, copying up its parents first,
 * the topmost first.
 */
int ovl_copy_up(struct ovl_fs *fs, struct ovl_node *node, unsigned int flags)
{
	bool copied;
	int err = 0;

	if (!fs->upper)
		return -EROFS;
	if (ovl_node_has(node, OVL_N_UPPER)) {
		/* A metacopy file gets its data when more than metadata
		 * changes. */
		if (node->data_layer < 0 || (flags & OVL_COPY_UP_META))
			return 0;
		pthread_mutex_lock(&node->lock);
		err = ovl_metacopy_bring_up(fs, node, flags);
		pthread_mutex_unlock(&node->lock);
		return err;
	}
	if (node->parent) {
		err = ovl_copy_up(fs, node->parent, 0);
		if (err)
			return err;
	}
	pthread_mutex_lock(&node->lock);
	copied = !ovl_node_has(node, OVL_N_UPPER);
	if (copied)
		err = copy_up_locked(fs, node, flags);
	/* A metacopy index entry that the copy-up linked gets its data. */
	if (!err && node->data_layer >= 0 && !(flags & OVL_COPY_UP_META))
		err = ovl_metacopy_bring_up(fs, node, flags);
	pthread_mutex_unlock(&node->lock);
	/*
	 * The copy has a ctime and a birth time of its own, and without
	 * root the user as its owner, where the kernel may cache the lower
	 * file's. Only the attributes are dropped, which takes no lock that
	 * the pending request may hold.
	 */
	if (!err && copied && fs->se) {
		atomic_fetch_or(&node->flags, OVL_N_BTIME_STALE);
		fuse_notify_inval_inode(fs->se, ovl_node_id(fs, node), -1, 0);
	}
	return err;
}
