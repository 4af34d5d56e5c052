// SPDX-License-Identifier: GPL-2.0-or-later
/* Lookup, attributes, symlink targets and statfs of merged entries. */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

void ovl_reply_status(struct fuse_req *req, int err)
{
	fuse_reply_err(req, err < 0 ? -err : EIO);
}

/*
 * Each name of a hard-linked file is its own node and kernel inode, so a
 * change made through one name (mode, size, link count) is not seen
 * through the others until they ask again: their attributes are not
 * cached. That holds for a file open through a removed name too.
 */
static double attr_timeout(struct ovl_fs *fs, const struct stat *st)
{
	if (S_ISDIR(st->st_mode))
		return fs->timeout;
	if (st->st_nlink > 1 || ovl_node_ino_orphaned(fs, st->st_ino))
		return 0;
	return fs->timeout;
}

void ovl_fill_entry(struct ovl_fs *fs, struct fuse_entry *e,
		    struct ovl_node *node, const struct stat *st)
{
	memset(e, 0, sizeof(*e));
	e->nodeid = ovl_node_id(fs, node);
	e->attr = *st;
	e->entry_timeout = fs->timeout;
	e->attr_timeout = attr_timeout(fs, st);
}

void ovl_reply_entry(struct fuse_req *req, struct ovl_node *node,
		     const struct stat *st)
{
	struct fuse_entry e;

	ovl_fill_entry(ovl_req_fs(req), &e, node, st);
	fuse_reply_entry(req, &e);
}

void ovl_op_lookup(struct fuse_req *req, uint64_t parent, const char *name)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node;
	struct fuse_entry e;
	struct stat st;
	int err;

	err = ovl_lookup_node(fs, ovl_req_node(req, parent), name, &node, &st);
	if (err == -ENOENT) {
		/* A negative entry: the layers do not change while mounted. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	/* Before the reply: once the kernel has it, a FORGET may free the
	 * parent. */
	ovl_readahead_note(fs, ovl_req_node(req, parent),
			   fuse_req_ctx(req)->pid);
	ovl_reply_entry(req, node, &st);
}

/* Nodes freed between two calls of malloc_trim(). */
#define OVL_TRIM_EVERY 16384

void ovl_op_forget(void *arg, uint64_t nodeid, uint64_t nlookup)
{
	struct ovl_fs *fs = arg;

	ovl_node_forget(fs, ovl_node_from_id(fs, nodeid), nlookup);
	/*
	 * When the kernel drops many inodes at once, hand the memory back
	 * to the system: malloc keeps freed small blocks otherwise.
	 */
	if (atomic_load(&fs->freed) >= OVL_TRIM_EVERY &&
	    atomic_exchange(&fs->freed, 0) >= OVL_TRIM_EVERY)
		malloc_trim(0);
}

/* Set st's link count to the one users see for node's name, if found. */
static void named_nlink(struct ovl_fs *fs, struct ovl_node *node,
			struct stat *st)
{
	struct stat named;

	if (!ovl_node_stat(fs, node, &named))
		st->st_nlink = named.st_nlink;
}

/*
 * Return the attribute timeout of a reply about node. The kernel caches
 * the birth time apart from the other attributes and requests it again
 * only once these have expired. So after a copy-up, which gives the file
 * a new birth time, the first reply makes them expire at once.
 */
static double node_attr_timeout(struct ovl_fs *fs, struct ovl_node *node,
				const struct stat *st)
{
	if (atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_BTIME_STALE) &
	    OVL_N_BTIME_STALE)
		return 0;
	return attr_timeout(fs, st);
}

/* The descriptor behind the open handle of an attribute request, or -1
 * to reach the file by the node's name. */
static int handle_fd(struct ovl_fs *fs, struct ovl_node *node, uint64_t fh,
		     bool has_fh)
{
	struct ovl_file *file = (struct ovl_file *)(uintptr_t)fh;

	/* The open file of a removed metacopy file is its lower data. */
	if (!has_fh || !fh || node->anon_meta_fd >= 0)
		return -1;
	/* A file opened in the lower layer and copied up since reads the
	 * copy when lamina serves its reads, so stat the copy. A passthrough
	 * file keeps its lower file. */
	return file->backing ? file->fd : ovl_file_read_fd(fs, file);
}

static int getattr_stat(struct ovl_fs *fs, struct ovl_node *node, int fd,
			struct stat *st)
{
	int err;

	if (fd < 0)
		return ovl_node_stat(fs, node, st);
	err = fstat(fd, st) < 0 ? -errno : 0;
	st->st_ino = node->ino;
	/* With the index, users see a link count that can differ from the
	 * open file's own, also once its name is gone. */
	if (!err && fs->index_fd >= 0 &&
	    (st->st_nlink > 1 || node->anon_fd >= 0 ||
	     ovl_node_has(node, OVL_N_INDEX | OVL_N_LINKED)))
		named_nlink(fs, node, st);
	return err;
}

void ovl_op_getattr(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
		    bool has_fh)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	struct stat st;
	int err;

	err = getattr_stat(fs, node, handle_fd(fs, node, fh, has_fh), &st);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	fuse_reply_attr(req, &st, node_attr_timeout(fs, node, &st));
}

/* Get the birth time of the file with the node's metadata, by path. */
static int btime_by_path(struct ovl_fs *fs, struct ovl_node *node,
			 struct statx *stx)
{
	struct ovl_path path;
	int err;

	err = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (err)
		return err;
	err = statx(path.dirfd, path.name,
		    path.dirfd == AT_FDCWD ? 0 : AT_SYMLINK_NOFOLLOW,
		    STATX_BTIME, stx) < 0
		  ? -errno
		  : 0;
	ovl_path_close(&path);
	return err;
}

/* Whether the file shown for node has a birth time; store it in *btime. */
static bool node_btime(struct ovl_fs *fs, struct ovl_node *node, int fd,
		       struct timespec *btime)
{
	struct statx stx = {0};
	unsigned int seen;
	int err, tries = 0;
	bool settled;

	if (fd >= 0) {
		err = statx(fd, "", AT_EMPTY_PATH, STATX_BTIME, &stx) < 0
			  ? -errno
			  : 0;
	} else {
		do {
			settled = ovl_moves_settle(fs, &seen);
			err = btime_by_path(fs, node, &stx);
		} while (ovl_moves_read_again(fs, settled, seen, &tries));
	}
	if (err || !(stx.stx_mask & STATX_BTIME))
		return false;
	btime->tv_sec = stx.stx_btime.tv_sec;
	btime->tv_nsec = stx.stx_btime.tv_nsec;
	return true;
}

/*
 * Reply to STATX, which the kernel sends when a caller requests the birth
 * time from statx(2). That is the birth time of the file with the
 * metadata, the upper file once there is one, as overlayfs reports it.
 */
void ovl_op_statx(struct fuse_req *req, uint64_t nodeid, uint64_t fh,
		  bool has_fh)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	int fd = handle_fd(fs, node, fh, has_fh);
	struct timespec btime;
	struct stat st;
	int err;

	err = getattr_stat(fs, node, fd, &st);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_BTIME_STALE);
	fuse_reply_statx(req, &st,
			 node_btime(fs, node, fd, &btime) ? &btime : NULL,
			 attr_timeout(fs, &st));
}

static int setattr_size(struct ovl_path *path, const struct fuse_setattr *a)
{
	int fd, err = 0;

	if (a->valid & FUSE_SET_ATTR_FH) {
		struct ovl_file *file = (struct ovl_file *)(uintptr_t)a->fh;

		return ftruncate(file->fd, a->st.st_size) < 0 ? -errno : 0;
	}
	fd = openat(path->dirfd, path->name,
		    O_WRONLY | O_CLOEXEC | O_NONBLOCK |
			    (path->dirfd == AT_FDCWD ? 0 : O_NOFOLLOW));
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, a->st.st_size) < 0)
		err = -errno;
	close(fd);
	return err;
}

static struct timespec setattr_time(const struct fuse_setattr *a,
				    uint32_t set, uint32_t now,
				    const struct timespec *value)
{
	struct timespec t = {.tv_nsec = UTIME_OMIT};

	if (a->valid & now)
		t.tv_nsec = UTIME_NOW;
	else if (a->valid & set)
		t = *value;
	return t;
}

/*
 * The target of a setattr: the upper file that a user has open (file,
 * whose descriptor is fd), or else the name in path.
 */
struct setattr_target {
	struct ovl_file *file;
	int fd;
	struct ovl_path path;
};

static int target_chown(struct setattr_target *t, uid_t uid, gid_t gid)
{
	/* An O_TMPFILE is reached through its /proc link, which must be
	 * followed. */
	int nofollow = t->path.dirfd == AT_FDCWD ? 0 : AT_SYMLINK_NOFOLLOW;
	int err = t->fd >= 0 ? fchown(t->fd, uid, gid)
			     : fchownat(t->path.dirfd, t->path.name, uid, gid,
					nofollow);

	return err < 0 ? -errno : 0;
}

static int target_chmod(struct setattr_target *t, mode_t mode)
{
	int err = t->fd >= 0 ? fchmod(t->fd, mode)
			     : fchmodat(t->path.dirfd, t->path.name, mode, 0);

	return err < 0 ? -errno : 0;
}

static int target_utimens(struct setattr_target *t, struct timespec times[2])
{
	int nofollow = t->path.dirfd == AT_FDCWD ? 0 : AT_SYMLINK_NOFOLLOW;
	int err = t->fd >= 0 ? futimens(t->fd, times)
			     : utimensat(t->path.dirfd, t->path.name, times,
					 nofollow);

	return err < 0 ? -errno : 0;
}

static int setattr_apply(struct setattr_target *t, const struct fuse_setattr *a)
{
	uint32_t v = a->valid;
	int err = 0;

	if (v & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (v & FUSE_SET_ATTR_UID) ? a->st.st_uid : (uid_t)-1;
		gid_t gid = (v & FUSE_SET_ATTR_GID) ? a->st.st_gid : (gid_t)-1;

		err = target_chown(t, uid, gid);
	}
	/* After chown, which may have cleared set-user-ID bits. */
	if (!err && (v & FUSE_SET_ATTR_MODE))
		err = target_chmod(t, a->st.st_mode & 07777);
	if (!err && (v & FUSE_SET_ATTR_SIZE))
		err = setattr_size(&t->path, a);
	if (!err && (v & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			  FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW))) {
		struct timespec times[2] = {
		    setattr_time(a, FUSE_SET_ATTR_ATIME,
				 FUSE_SET_ATTR_ATIME_NOW, &a->st.st_atim),
		    setattr_time(a, FUSE_SET_ATTR_MTIME,
				 FUSE_SET_ATTR_MTIME_NOW, &a->st.st_mtim),
		};

		err = target_utimens(t, times);
	}
	return err;
}

/*
 * Whether lamina must clear set-ID bits: asked for with a truncate, or by
 * a request that changes nothing, which is what the kernel sends when a
 * write by a process without CAP_FSETID must clear them. Passthrough
 * writes never reach lamina, so that request is the only notice of them.
 * A change of owner or group needs nothing here: the upper filesystem's
 * chown clears the bits by the same rules.
 */
static bool setattr_kills(const struct fuse_setattr *a)
{
	uint32_t fields = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
			  FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
			  FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
			  FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
			  FUSE_SET_ATTR_CTIME;

	if (a->valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))
		return false;
	return (a->valid & FUSE_SET_ATTR_KILL_SUIDGID) || !(a->valid & fields);
}

/*
 * Change, then stat, the target. A file that a user has open is changed
 * through its descriptor, which needs no path walk. A truncate without a
 * file handle goes by name, because the descriptor may be read-only.
 */
static int setattr_target_do(struct ovl_fs *fs, struct fuse_req *req,
			     struct ovl_node *node,
			     const struct fuse_setattr *attr, struct stat *st)
{
	struct setattr_target t = {.fd = -1, .path = {.dirfd = -1}};
	int err = 0, self_fd = -1;

	if (!(attr->valid & FUSE_SET_ATTR_SIZE))
		t.file = ovl_node_open_file(node);
	if (t.file)
		t.fd = t.file->fd;
	else
		err = ovl_node_open_self(fs, node, &t.path, &self_fd);
	if (!err)
		err = setattr_apply(&t, attr);
	if (!err && setattr_kills(attr)) {
		err = ovl_kill_suidgid(t.fd, t.path.dirfd, t.path.name,
				       fuse_req_ctx(req));
		err = err > 0 ? 0 : err;
	}
	if (!err && t.fd >= 0)
		err = fstat(t.fd, st) < 0 ? -errno : 0;
	else if (!err)
		err = ovl_do_fstatat(t.path.dirfd, t.path.name, st);
	/* Add the links that only the index records. */
	if (!err && t.fd >= 0 && fs->index_fd >= 0 && st->st_nlink > 1 &&
	    ovl_node_open_parent(fs, node, 0, &t.path))
		t.path.dirfd = -1; /* gone meanwhile: show the plain count */
	if (!err && t.path.dirfd != -1)
		ovl_index_fix_nlink(fs, &t.path, st, false);
	if (t.file)
		ovl_file_put(fs, t.file);
	ovl_path_close(&t.path);
	if (self_fd >= 0)
		close(self_fd);
	return err;
}

void ovl_op_setattr(struct fuse_req *req, uint64_t nodeid,
		    const struct fuse_setattr *attr)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	unsigned int flags = 0;
	struct stat st;
	int err;

	if (!(attr->valid & FUSE_SET_ATTR_SIZE))
		flags = OVL_COPY_UP_META;
	else if (attr->st.st_size == 0)
		flags = OVL_COPY_UP_NO_DATA;
	err = ovl_copy_up(fs, node, flags);
	if (!err)
		err = setattr_target_do(fs, req, node, attr, &st);
	if (!err) {
		ovl_node_fix_stat(node, &st);
		ovl_metacopy_fix_blocks(fs, node, &st);
	}
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	fuse_reply_attr(req, &st, node_attr_timeout(fs, node, &st));
}

/* Read the node's link target by its path; returns its length. */
static int readlink_by_path(struct ovl_fs *fs, struct ovl_node *node,
			    char *target, size_t size)
{
	struct ovl_path path;
	ssize_t n;
	int err;

	err = ovl_node_open_parent(fs, node, ovl_node_real_layer(node), &path);
	if (err)
		return err;
	n = readlinkat(path.dirfd, path.name, target, size - 1);
	err = n < 0 ? -errno : (int)n;
	ovl_path_close(&path);
	return err;
}

void ovl_op_readlink(struct fuse_req *req, uint64_t nodeid)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid);
	char target[OVL_PATH_MAX];
	unsigned int seen;
	int n, tries = 0;
	bool settled;

	do {
		settled = ovl_moves_settle(fs, &seen);
		n = readlink_by_path(fs, node, target, sizeof(target));
	} while (ovl_moves_read_again(fs, settled, seen, &tries));
	if (n < 0) {
		ovl_reply_status(req, n);
		return;
	}
	target[n] = '\0';
	fuse_reply_readlink(req, target);
}

void ovl_op_access(struct fuse_req *req, uint64_t nodeid, int mask)
{
	/* default_permissions: the kernel has checked the mode already. */
	(void)nodeid;
	(void)mask;
	fuse_reply_err(req, ENOSYS);
}

void ovl_op_statfs(struct fuse_req *req, uint64_t nodeid)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct statvfs st;
	int fd = fs->layers[0].fd;

	(void)nodeid;
	if (fstatvfs(fd, &st) < 0) {
		ovl_reply_status(req, -errno);
		return;
	}
	fuse_reply_statfs(req, &st);
}
