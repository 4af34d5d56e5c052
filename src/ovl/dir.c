// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Directory operations: new names (create, mknod, mkdir, symlink, link)
 * and removed names (unlink, rmdir). A new entry over a whiteout is
 * built in workdir/work and renamed over the whiteout in one step.
 */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Apply the caller's umask to what this thread creates. */
int ovl_set_umask(struct ovl_fs *fs, const struct fuse_ctx *ctx)
{
	/* Each worker thread has a umask of its own (unshare(CLONE_FS)). */
	static __thread int current = -1;
	int want = fs->dont_mask ? (int)(ctx->umask & 0777) : 0;

	if (want != current) {
		umask((mode_t)want);
		current = want;
	}
	return 0;
}

/*
 * Give a new entry the caller's uid, and its gid or, in a set-group-ID
 * directory, the directory's. chown clears set-user-ID bits, so they
 * are put back afterwards. When nothing changes, *out gets the entry's
 * attributes on success. Otherwise its st_nlink is 0.
 */
int ovl_set_owner(struct ovl_fs *fs, int dirfd, const char *name,
		  const struct fuse_ctx *ctx, int parent_fd, struct stat *out)
{
	struct stat pst, st;
	gid_t gid = ctx->gid;

	(void)fs;
	out->st_nlink = 0;
	if (fstat(parent_fd, &pst) == 0 && (pst.st_mode & S_ISGID))
		gid = pst.st_gid;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (st.st_uid == ctx->uid && st.st_gid == gid) {
		*out = st;
		return 0;
	}
	if (fchownat(dirfd, name, ctx->uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return geteuid() == 0 ? -errno : 0;
	if (!S_ISLNK(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)) &&
	    fchmodat(dirfd, name, st.st_mode & 07777, 0) < 0)
		return -errno;
	return 0;
}

static int create_real(struct ovl_create *c, int dirfd, const char *name)
{
	mode_t perm = c->mode & 07777;

	switch (c->mode & S_IFMT) {
	case S_IFREG:
		c->fd = openat(dirfd, name,
			       (c->open_flags & ~(O_TRUNC | O_NOCTTY)) |
				   O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			       perm);
		return c->fd < 0 ? -errno : 0;
	case S_IFDIR:
		return mkdirat(dirfd, name, perm) < 0 ? -errno : 0;
	case S_IFLNK:
		return symlinkat(c->target, dirfd, name) < 0 ? -errno : 0;
	default:
		return mknodat(dirfd, name, c->mode, c->rdev) < 0 ? -errno : 0;
	}
}

static int create_link(struct ovl_create *c, int dirfd, const char *name)
{
	int flags = 0;

	if (c->link_src->dirfd == AT_FDCWD)
		flags = AT_SYMLINK_FOLLOW; /* an O_TMPFILE's /proc link */
	if (linkat(c->link_src->dirfd, c->link_src->name, dirfd, name, flags) <
	    0)
		return -errno;
	return 0;
}

/*
 * Create the object at (dirfd, name) and set its owner. st gets its
 * attributes, or st_nlink 0 when the caller must stat it.
 */
static int create_at(struct fuse_req *req, struct ovl_create *c, int dirfd,
		     const char *name, int parent_fd, struct stat *st)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	int err;

	st->st_nlink = 0;
	if (c->link_src)
		return create_link(c, dirfd, name);
	ovl_set_umask(fs, fuse_req_ctx(req));
	err = create_real(c, dirfd, name);
	if (err)
		return err;
	err = ovl_set_owner(fs, dirfd, name, fuse_req_ctx(req), parent_fd,
			    st);
	if (err && c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	return err;
}

/*
 * Build the object in the work directory, then move it over the
 * whiteout. A directory is marked opaque first so the lower entries
 * that the whiteout hid stay hidden.
 */
static int create_over_whiteout(struct fuse_req *req, struct ovl_create *c,
				int dirfd, const char *name, bool *opaque)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	bool is_dir = S_ISDIR(c->mode) && !c->link_src;
	struct stat st; /* not kept: the rename changes st_ctime */
	char tmp[64];
	int err;

	ovl_tmpname(fs, tmp, sizeof(tmp));
	err = create_at(req, c, fs->work_fd, tmp, dirfd, &st);
	if (!err && is_dir)
		err = ovl_set_opaque(fs, fs->work_fd, tmp);
	if (!err)
		err = ovl_do_rename(fs->work_fd, tmp, dirfd, name,
				    is_dir ? RENAME_EXCHANGE : 0);
	if (err) {
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		ovl_remove_tree(fs->work_fd, tmp);
		return err;
	}
	if (is_dir)
		unlinkat(fs->work_fd, tmp, 0); /* the whiteout, now in work */
	*opaque = is_dir;
	return 0;
}

/*
 * A new directory in a merged directory is marked opaque, as overlayfs
 * does with redirect_dir=on or the index (Linux 6.18), so that a lower
 * directory of that name, which a redirect may bring, stays hidden. A
 * directory that cannot be marked is removed again.
 */
static int opaque_in_merged(struct ovl_fs *fs, struct ovl_node *parent,
			    const struct ovl_create *c, int dirfd,
			    const char *name, bool *opaque)
{
	int err;

	if (!S_ISDIR(c->mode) || c->link_src || parent->lower < 0)
		return 0;
	if (fs->config.redirect != OVL_REDIRECT_ON && fs->index_fd < 0)
		return 0;
	err = ovl_set_opaque(fs, dirfd, name);
	if (err) {
		unlinkat(dirfd, name, AT_REMOVEDIR);
		return err;
	}
	*opaque = true;
	return 0;
}

static int new_upper_node(struct ovl_fs *fs, struct ovl_node *parent,
			  const char *name, const struct stat *st, bool opaque,
			  struct ovl_node **out)
{
	struct ovl_node *node = ovl_node_new(fs, parent, name);
	unsigned int flags = OVL_N_UPPER | (opaque ? OVL_N_OPAQUE : 0);

	if (!node)
		return -ENOMEM;
	node->type = st->st_mode & S_IFMT;
	node->ino = st->st_ino;
	atomic_fetch_or(&node->flags, flags);
	*out = ovl_node_insert(fs, node);
	return 0;
}

/*
 * Create a new name below parent in the upper layer: copy up the
 * parent, then create in place or over a whiteout. Returns the new
 * node with one lookup reference and its attributes.
 */
int ovl_create_object(struct fuse_req *req, struct ovl_node *parent,
		      const char *name, struct ovl_create *c,
		      struct ovl_node **out, struct stat *st)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	bool opaque = false;
	struct stat cur;
	int dirfd, err;
	bool owned;

	c->fd = -1;
	if (strlen(name) > 255)
		return -ENAMETOOLONG;
	err = ovl_copy_up(fs, parent, 0);
	if (err)
		return err;
	dirfd = ovl_node_dir_fd(fs, parent, 0, &owned);
	if (dirfd < 0)
		return dirfd;
	/* Most names are new: try first, and look for a whiteout after. */
	err = create_at(req, c, dirfd, name, dirfd, st);
	if (err == -EEXIST) {
		st->st_nlink = 0;
		err = ovl_do_fstatat(dirfd, name, &cur);
		if (err == 0 && ovl_upper_is_whiteout(fs, dirfd, name, &cur))
			err = create_over_whiteout(req, c, dirfd, name,
						   &opaque);
		else if (err == 0 || err == -ENOENT)
			err = -EEXIST;
	} else if (!err) {
		err = opaque_in_merged(fs, parent, c, dirfd, name, &opaque);
		if (opaque)
			st->st_nlink = 0; /* the xattr moved st_ctime */
	}
	if (!err && st->st_nlink == 0)
		err = ovl_do_fstatat(dirfd, name, st);
	if (owned)
		close(dirfd);
	if (!err && c->ino)
		st->st_ino = c->ino;
	if (!err && c->lookup)
		err = ovl_lookup_node(fs, parent, name, out, st);
	else if (!err)
		err = new_upper_node(fs, parent, name, st, opaque, out);
	if (err && c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	return err;
}

static void create_and_reply(struct fuse_req *req, uint64_t parent,
			     const char *name, struct ovl_create *c)
{
	struct ovl_node *node;
	struct stat st;
	int err;

	err = ovl_create_object(req, ovl_req_node(req, parent), name, c, &node,
				&st);
	if (c->fd >= 0)
		close(c->fd);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	ovl_reply_entry(req, node, &st);
}

void ovl_op_mknod(struct fuse_req *req, uint64_t parent, const char *name,
		  mode_t mode, dev_t rdev)
{
	struct ovl_create c = {.mode = mode, .rdev = rdev};

	/* A user may not forge a whiteout, as in overlayfs. */
	if (S_ISCHR(mode) && rdev == 0) {
		fuse_reply_err(req, EPERM);
		return;
	}
	create_and_reply(req, parent, name, &c);
}

void ovl_op_mkdir(struct fuse_req *req, uint64_t parent, const char *name,
		  mode_t mode)
{
	struct ovl_create c = {.mode = S_IFDIR | (mode & 07777)};

	create_and_reply(req, parent, name, &c);
}

void ovl_op_symlink(struct fuse_req *req, uint64_t parent, const char *name,
		    const char *target)
{
	struct ovl_create c = {.mode = S_IFLNK | 0777, .target = target};

	create_and_reply(req, parent, name, &c);
}

/*
 * A directory that gains a name of a file copied up from a lower layer is
 * marked impure, as overlayfs does, so that readdir there shows the lower
 * st_ino that stat shows.
 */
static void link_mark_impure(struct ovl_fs *fs, struct ovl_node *dir)
{
	char name[NAME_MAX + 1];
	bool owned;
	int dirfd, err;

	dirfd = ovl_node_dir_fd(fs, dir, 0, &owned);
	err = dirfd < 0 ? dirfd : ovl_set_impure(fs, dirfd);
	if (dirfd >= 0 && owned)
		close(dirfd);
	if (err)
		log_warn_rl("marking directory %s impure failed: %s",
			    ovl_node_name_try_copy(fs, dir, name, sizeof(name)),
			    strerror(-err));
}

/*
 * Mark the upper copy of a metacopy file with its own absolute path from
 * the top lower layer, as overlayfs does before a link, so that a name in
 * any directory finds the file below. An absolute redirect stays.
 */
static int link_redirect(struct ovl_fs *fs, struct ovl_node *node)
{
	char attr[64], value[OVL_PATH_MAX + 1];
	struct ovl_path up;
	int err;

	err = ovl_node_open_parent(fs, node, 0, &up);
	if (err)
		return err;
	ovl_xattr_name(fs, attr, sizeof(attr), "redirect");
	if (ovl_redirect_read(fs, up.dirfd, up.name, value, sizeof(value)) <=
		0 ||
	    value[0] != '/') {
		value[0] = '/';
		err = ovl_node_lower_path(fs, node, fs->first_lower, value + 1,
					  sizeof(value) - 1);
		if (!err && strlen(value) > OVL_REDIRECT_MAX)
			err = -ENAMETOOLONG;
		if (!err)
			err = ovl_do_setxattr(up.dirfd, up.name, attr, value,
					      strlen(value), 0);
	}
	ovl_path_close(&up);
	return err;
}

/*
 * Copy up what a link needs. With metacopy=on that is the metadata and an
 * absolute redirect, else the whole file, which also serves where the
 * redirect cannot be written. Return 1 for a metacopy file.
 */
static int link_copy_up(struct ovl_fs *fs, struct ovl_node *node)
{
	char name[NAME_MAX + 1];
	int err = ovl_copy_up(fs, node, OVL_COPY_UP_META);

	if (err || !ovl_metacopy_pending(fs, node))
		return err;
	err = link_redirect(fs, node);
	if (!err)
		return 1;
	log_warn_rl("writing the redirect of %s for a link failed: %s; "
		    "copying its data up",
		    ovl_node_name_try_copy(fs, node, name, sizeof(name)),
		    strerror(-err));
	return ovl_copy_up(fs, node, 0);
}

/*
 * The new name gets its own node. The kernel still caches the source's
 * old link count, so its attributes are invalidated before the reply:
 * after it, a stat could come first. Only the attributes are dropped,
 * which takes no lock that the pending link holds.
 */
void ovl_op_link(struct fuse_req *req, uint64_t nodeid, uint64_t newparent,
		 const char *newname)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *node = ovl_req_node(req, nodeid), *linked;
	struct ovl_create c = {.mode = node->type};
	struct ovl_path src;
	struct stat st;
	bool broken, origin;
	int err;

	/* Without the index, overlayfs records no origin for a lower hard
	 * link. */
	broken = fs->index_fd < 0 && !ovl_node_has(node, OVL_N_UPPER) &&
		 ovl_node_has(node, OVL_N_LINKED);
	err = link_copy_up(fs, node);
	c.lookup = err == 1;
	if (err >= 0)
		err = ovl_node_open_parent(fs, node, 0, &src);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	/* xattr changes through the new name go to another node, so this
	 * node no longer sees every change of its security.capability. */
	atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_NOCAPS);
	/* Read after the copy-up, which renumbers a hard link without index. */
	c.ino = node->ino;
	c.link_src = &src;
	origin = !broken && ovl_has_origin(fs, src.dirfd, src.name);
	err = ovl_create_object(req, ovl_req_node(req, newparent), newname, &c,
				&linked, &st);
	ovl_path_close(&src);
	if (err) {
		ovl_reply_status(req, err);
		return;
	}
	if (origin)
		link_mark_impure(fs, ovl_req_node(req, newparent));
	/* An O_TMPFILE file, open through its node, now has a name too. */
	if (node->anon_fd >= 0 && !ovl_node_has(node, OVL_N_OPEN_ORPHAN))
		ovl_node_orphan_note(fs, node);
	fuse_notify_inval_inode(fs->se, nodeid, -1, 0);
	ovl_reply_entry(req, linked, &st);
}

/* Forget the name below parent in the node table, if it is there. The
 * node takes over meta_fd (see ovl_node_detach). */
static void drop_name(struct ovl_fs *fs, struct ovl_node *parent,
		      const char *name, int meta_fd)
{
	struct ovl_node *node = ovl_node_peek(fs, parent, name);

	if (node) {
		ovl_node_unhash(fs, node);
		ovl_node_detach(fs, node, meta_fd);
		ovl_node_put(fs, node);
	} else if (meta_fd >= 0) {
		close(meta_fd);
	}
}

/* 1 if an empty merged directory, 0 if it has entries, or -errno. */
static int check_empty(struct ovl_fs *fs, struct ovl_node *parent,
		       const char *name, struct ovl_lookup *res)
{
	struct ovl_node *tmp = ovl_node_new(fs, parent, name);
	int err;

	if (!tmp)
		return -ENOMEM;
	ovl_node_fill(tmp, res);
	err = ovl_dir_is_empty(fs, tmp);
	ovl_node_put(fs, tmp);
	return err;
}

/* Remove an upper entry that no lower entry lies under. */
static int remove_upper(struct ovl_fs *fs, int dirfd, const char *name,
			bool is_dir)
{
	char tmp[64];
	int err;

	if (unlinkat(dirfd, name, is_dir ? AT_REMOVEDIR : 0) == 0)
		return 0;
	if (errno != ENOTEMPTY && errno != EEXIST)
		return -errno;
	/* An upper directory that holds only whiteouts: move it away. */
	ovl_tmpname(fs, tmp, sizeof(tmp));
	err = ovl_do_rename(dirfd, name, fs->work_fd, tmp, 0);
	if (err)
		return err;
	return ovl_remove_tree(fs->work_fd, tmp);
}

/*
 * Remove the upper name of a file that may be indexed. Its overlay.nlink
 * must count from the upper links, which the removal lowers, and no
 * copy-up may link another name meanwhile.
 */
static int remove_counted(struct ovl_fs *fs, int dirfd, const char *name,
			  int lower)
{
	int err;

	pthread_mutex_lock(&fs->index_nlink_lock);
	err = ovl_index_nlink_upper(fs, dirfd, name);
	if (err)
		log_warn_rl(
		    "setting the link count of %s before its removal failed: %s",
		    name, strerror(-err));
	err = lower ? ovl_whiteout_replace(fs, dirfd, name)
		    : remove_upper(fs, dirfd, name, false);
	pthread_mutex_unlock(&fs->index_nlink_lock);
	return err;
}

/* The name of an indexed file went away: maybe its index entry too. */
static void drop_index_orphan(struct ovl_fs *fs, struct ovl_node *parent,
			      const char *name, const struct ovl_lookup *res)
{
	struct ovl_path file = {.dirfd = -1};

	if (res->lower < 0 || strlen(name) >= sizeof(file.name))
		return;
	file.dirfd = ovl_node_open_dir(fs, parent, res->lower, O_PATH);
	if (file.dirfd < 0)
		return;
	strcpy(file.name, name);
	ovl_index_drop_orphan(fs, &file);
	ovl_path_close(&file);
}

/* Remove what res found at name: a whiteout goes where a lower shows. */
static int remove_found(struct ovl_fs *fs, struct ovl_node *parent,
			const char *name, bool is_dir, struct ovl_lookup *res)
{
	int dirfd, lower, err, meta = -1;

	if (is_dir != S_ISDIR(res->st.st_mode))
		return is_dir ? -ENOTDIR : -EISDIR;
	if (is_dir) {
		err = check_empty(fs, parent, name, res);
		if (err <= 0)
			return err ? err : -ENOTEMPTY;
	}
	/* A redirect finds a lower part under another name, which needs no
	 * whiteout here. */
	lower = res->lower >= 0 && !res->redirect[0]
		    ? 1
		    : ovl_lower_positive(fs, parent, name);
	if (lower < 0)
		return lower;
	err = ovl_copy_up(fs, parent, 0);
	if (err)
		return err;
	/* index=on counts the links of a hard-linked lower file, which it
	 * can only do for a copy in the index. */
	if (!res->upper && ovl_index_wanted(fs, &res->st)) {
		err = ovl_copy_up_name(fs, parent, name, res, OVL_COPY_UP_META);
		if (err)
			return err;
		res->upper = true;
	}
	dirfd = ovl_node_open_dir(fs, parent, 0, O_PATH);
	if (dirfd < 0)
		return dirfd;
	/* An open metacopy file keeps its metadata in the upper file. */
	if (res->upper && res->metacopy)
		meta = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (is_dir)
		ovl_moves_begin(fs);
	if (res->upper && ovl_index_wanted(fs, &res->st))
		err = remove_counted(fs, dirfd, name, lower);
	else if (res->upper && lower)
		err = ovl_whiteout_replace(fs, dirfd, name);
	else if (res->upper)
		err = remove_upper(fs, dirfd, name, is_dir);
	else
		err = ovl_whiteout_create(fs, dirfd, name);
	close(dirfd);
	if (!err)
		drop_name(fs, parent, name, meta);
	else if (meta >= 0)
		close(meta);
	if (is_dir)
		ovl_moves_end(fs);
	if (!err && res->upper && ovl_index_wanted(fs, &res->st))
		drop_index_orphan(fs, parent, name, res);
	return err;
}

static int remove_name(struct fuse_req *req, uint64_t parent_id,
		       const char *name, bool is_dir)
{
	struct ovl_fs *fs = ovl_req_fs(req);
	struct ovl_node *parent = ovl_req_node(req, parent_id);
	struct ovl_lookup res;
	int err;

	err = ovl_lookup_name(fs, parent, name, &res);
	if (err)
		return err;
	err = remove_found(fs, parent, name, is_dir, &res);
	ovl_lookup_release(&res);
	return err;
}

void ovl_op_unlink(struct fuse_req *req, uint64_t parent, const char *name)
{
	fuse_reply_err(req, -remove_name(req, parent, name, false));
}

void ovl_op_rmdir(struct fuse_req *req, uint64_t parent, const char *name)
{
	fuse_reply_err(req, -remove_name(req, parent, name, true));
}
