// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE. Both names are
 * copied up first. A lower entry left behind at the old name is hidden
 * by a whiteout, made in the same rename (RENAME_WHITEOUT) where the
 * upper filesystem supports it.
 *
 * A directory that a lower layer contains moves with a redirect, as in
 * overlayfs with redirect_dir=on: it is copied up alone and marked with
 * the path where its lower part stays. With redirect_dir=off, follow or
 * nofollow such a rename returns EXDEV, and mv falls back to copying.
 */
#include "ops.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct rename_ctx {
	struct ovl_fs *fs;
	struct ovl_node *oldparent, *newparent;
	const char *oldname, *newname;
	unsigned int flags;
	struct ovl_lookup old, new;
	bool new_exists;
	int olddir, newdir;		 /* upper directories, O_PATH */
	char old_redirect[OVL_PATH_MAX]; /* new lower path of the old entry */
	char new_redirect[OVL_PATH_MAX]; /* the same for the exchanged one */
};

static bool may_move(struct rename_ctx *c, const struct ovl_lookup *res)
{
	if (!S_ISDIR(res->st.st_mode) || (res->upper && res->lower < 0))
		return true;
	return c->fs->config.redirect == OVL_REDIRECT_ON;
}

/*
 * Whether both names are links to one file, which rename(2) leaves as
 * they are. Equal st_ino means one file on one filesystem, or across
 * filesystems with xino. Without xino, two filesystems may share numbers.
 */
static bool same_file(const struct rename_ctx *c)
{
	const struct stat *a = &c->old.st, *b = &c->new.st;

	/* Without the index, names of a lower file are files of their own
	 * until copied up, as in overlayfs. */
	if (c->fs->index_fd < 0 && (!c->old.upper || !c->new.upper))
		return false;
	return c->new_exists && !S_ISDIR(a->st_mode) && !S_ISDIR(b->st_mode) &&
	       a->st_ino == b->st_ino &&
	       (a->st_dev == b->st_dev || c->fs->xino_shift);
}

/* 0 to go on, 1 when there is nothing to do, or -errno. */
static int rename_check(struct rename_ctx *c)
{
	int err;

	if (c->flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
		return -EINVAL;
	if (!c->fs->upper)
		return -EROFS;
	err = ovl_lookup_name(c->fs, c->oldparent, c->oldname, &c->old);
	if (err)
		return err;
	err = ovl_lookup_name(c->fs, c->newparent, c->newname, &c->new);
	if (err && err != -ENOENT)
		return err;
	c->new_exists = !err;
	if ((c->flags & RENAME_NOREPLACE) && c->new_exists)
		return -EEXIST;
	if ((c->flags & RENAME_EXCHANGE) && !c->new_exists)
		return -ENOENT;
	if (same_file(c))
		return 1;
	if (!may_move(c, &c->old))
		return -EXDEV;
	if ((c->flags & RENAME_EXCHANGE) && !may_move(c, &c->new))
		return -EXDEV;
	return 0;
}

/* The replaced directory must be empty in the merged view. */
static int check_target_empty(struct rename_ctx *c)
{
	struct ovl_node *tmp;
	int err;

	if (!c->new_exists || (c->flags & RENAME_EXCHANGE) ||
	    !S_ISDIR(c->new.st.st_mode))
		return 0;
	tmp = ovl_node_new(c->fs, c->newparent, c->newname);
	if (!tmp)
		return -ENOMEM;
	ovl_node_fill(tmp, &c->new);
	err = ovl_dir_is_empty(c->fs, tmp);
	ovl_node_put(c->fs, tmp);
	if (err < 0)
		return err;
	return err ? 0 : -ENOTEMPTY;
}

static int open_upper_dirs(struct rename_ctx *c)
{
	int err = ovl_copy_up(c->fs, c->oldparent, 0);

	if (!err)
		err = ovl_copy_up(c->fs, c->newparent, 0);
	if (err)
		return err;
	c->olddir = ovl_node_open_dir(c->fs, c->oldparent, 0, O_PATH);
	if (c->olddir < 0)
		return c->olddir;
	c->newdir = ovl_node_open_dir(c->fs, c->newparent, 0, O_PATH);
	return c->newdir < 0 ? c->newdir : 0;
}

/*
 * An upper directory that moves below a merged parent could merge with
 * a lower directory of the same name there; opaque="y" prevents it.
 */
static int mark_moved_dir(struct rename_ctx *c, int dirfd, const char *name,
			  const struct ovl_lookup *res,
			  struct ovl_node *dest_parent, bool over_whiteout)
{
	bool merged_dest =
	    dest_parent->lower >= 0 && !ovl_node_has(dest_parent, OVL_N_OPAQUE);

	/* A directory with a lower part keeps it, through its redirect. */
	if (!S_ISDIR(res->st.st_mode) || res->opaque || res->lower >= 0)
		return 0;
	if (!merged_dest && !over_whiteout)
		return 0;
	return ovl_set_opaque(c->fs, dirfd, name);
}

/*
 * Replace the target's upper directory, which contains whiteouts, with
 * an empty opaque one, so that the rename over it can succeed.
 */
static int clear_target_dir(struct rename_ctx *c)
{
	char tmp[64];
	int err;

	ovl_tmpname(c->fs, tmp, sizeof(tmp));
	if (mkdirat(c->fs->work_fd, tmp, 0700) < 0)
		return -errno;
	err = ovl_set_opaque(c->fs, c->fs->work_fd, tmp);
	if (!err)
		err = ovl_do_rename(c->fs->work_fd, tmp, c->newdir, c->newname,
				    RENAME_EXCHANGE);
	ovl_remove_tree(c->fs->work_fd, tmp);
	return err;
}

/* Whether the upper entry's own redirect is a plain name. */
static bool redirect_relative(const struct ovl_lookup *res)
{
	return res->chain && res->chain->layer == 1 && res->chain->relative;
}

/* Return whether the lower file at path in layer has other names. */
static bool lower_linked(struct ovl_fs *fs, int layer, const char *path)
{
	struct stat st;

	if (fstatat(fs->layers[layer].fd, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	return S_ISREG(st.st_mode) && st.st_nlink > 1;
}

/* Write into resolved (OVL_PATH_MAX bytes) the path in layer of the lower
 * part of the entry res at (parent, name). */
static int resolve_lower(struct rename_ctx *c, struct ovl_node *parent,
			 const char *name, const struct ovl_lookup *res,
			 int layer, char *resolved)
{
	size_t len;
	int err;

	if (res->redirect[0]) {
		strcpy(resolved, res->redirect);
		return 0;
	}
	err = ovl_node_lower_path(c->fs, parent, layer, resolved, OVL_PATH_MAX);
	len = strlen(resolved);
	if (err || len + strlen(name) + 2 > OVL_PATH_MAX)
		return -EXDEV;
	snprintf(resolved + len, OVL_PATH_MAX - len, "%s%s", len ? "/" : "",
		 name);
	return 0;
}

/*
 * Write the redirect of an entry with a lower part that moves from
 * (parent, name) to dest, as overlayfs chooses it. The redirect is the
 * old name when the entry stays in its directory, and the absolute path
 * of its lower part when it leaves. A file whose lower part has other
 * names gets the absolute path always, since its upper names may end up
 * in other directories. An entry keeps its redirect unless that is a
 * name and an absolute path is needed. resolved receives the lower path,
 * found from layer down.
 */
static int write_redirect(struct rename_ctx *c, int dirfd, const char *name,
			  const struct ovl_lookup *res, int layer,
			  struct ovl_node *parent, struct ovl_node *dest,
			  char *resolved)
{
	char attr[64], value[OVL_PATH_MAX + 1];
	bool absolute;
	int err;

	err = resolve_lower(c, parent, name, res, layer, resolved);
	if (err)
		return err;
	absolute = parent != dest || (S_ISREG(res->st.st_mode) &&
				      lower_linked(c->fs, layer, resolved));
	if (res->redirect[0] && (!absolute || !redirect_relative(res)))
		return 0;
	if (!absolute)
		snprintf(value, sizeof(value), "%s", name);
	else
		snprintf(value, sizeof(value), "/%s", resolved);
	if (strlen(value) > OVL_REDIRECT_MAX)
		return -EXDEV;
	ovl_xattr_name(c->fs, attr, sizeof(attr), "redirect");
	return ovl_do_setxattr(dirfd, name, attr, value, strlen(value), 0);
}

/* Return whether dirfd/name has an absolute redirect, copied to resolved. */
static bool kept_absolute(struct ovl_fs *fs, int dirfd, const char *name,
			  char *resolved)
{
	char value[OVL_PATH_MAX + 1];

	if (ovl_redirect_read(fs, dirfd, name, value, sizeof(value)) < 2 ||
	    value[0] != '/')
		return false;
	snprintf(resolved, OVL_PATH_MAX, "%s", value + 1);
	return true;
}

/*
 * Mark an entry with a lower part, about to move from (parent, name) to
 * dest, with the path of that lower part: a directory, or a metacopy
 * file, which finds its data below by its path. resolved receives the
 * lower path itself, or "" when there is nothing to mark.
 */
static int set_redirect(struct rename_ctx *c, int dirfd, const char *name,
			const struct ovl_lookup *res, struct ovl_node *parent,
			struct ovl_node *dest, char *resolved)
{
	resolved[0] = '\0';
	if (S_ISREG(res->st.st_mode) && res->lower >= 0 &&
	    ovl_has_metacopy(c->fs, dirfd, name)) {
		/* An upper file linked up from the index may carry another
		 * name's absolute redirect already, which stays. */
		if (kept_absolute(c->fs, dirfd, name, resolved))
			return 0;
		return write_redirect(c, dirfd, name, res, res->lower, parent,
				      dest, resolved);
	}
	if (!S_ISDIR(res->st.st_mode) || res->lower < 0)
		return 0;
	return write_redirect(c, dirfd, name, res, c->fs->first_lower, parent,
			      dest, resolved);
}

static int rename_exchange(struct rename_ctx *c)
{
	int err = mark_moved_dir(c, c->olddir, c->oldname, &c->old,
				 c->newparent, false);

	if (!err)
		err = set_redirect(c, c->olddir, c->oldname, &c->old,
				   c->oldparent, c->newparent, c->old_redirect);
	if (!err)
		err = set_redirect(c, c->newdir, c->newname, &c->new,
				   c->newparent, c->oldparent, c->new_redirect);

	if (!err)
		err = mark_moved_dir(c, c->newdir, c->newname, &c->new,
				     c->oldparent, false);
	if (!err)
		err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
				    c->newname, RENAME_EXCHANGE);
	return err;
}

static int rename_move(struct rename_ctx *c, bool old_lower)
{
	bool is_dir = S_ISDIR(c->old.st.st_mode);
	unsigned int flags = 0;
	int err;

	err = mark_moved_dir(c, c->olddir, c->oldname, &c->old, c->newparent,
			     c->new.upper_whiteout);
	if (!err)
		err = set_redirect(c, c->olddir, c->oldname, &c->old,
				   c->oldparent, c->newparent, c->old_redirect);
	if (err)
		return err;
	if (is_dir && c->new.upper_whiteout) {
		/* A directory cannot replace the whiteout: swap them. */
		err = old_lower ? ovl_whiteout_mark_dir(c->fs, c->olddir) : 0;
		if (!err)
			err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
					    c->newname, RENAME_EXCHANGE);
		if (!err && !old_lower && unlinkat(c->olddir, c->oldname, 0))
			err = -errno;
		return err;
	}
	if (old_lower && c->fs->rename_whiteout)
		flags = RENAME_WHITEOUT;
	err =
	    ovl_do_rename(c->olddir, c->oldname, c->newdir, c->newname, flags);
	if (err == -ENOTEMPTY && c->new.upper) {
		err = clear_target_dir(c);
		if (!err)
			err = ovl_do_rename(c->olddir, c->oldname, c->newdir,
					    c->newname, flags);
	}
	if (!err && old_lower && !flags)
		err = ovl_whiteout_create(c->fs, c->olddir, c->oldname);
	return err;
}

/*
 * A copied-up file moved into a directory makes it impure, as in
 * overlayfs: readdir there must look up origins to report st_ino.
 */
static void mark_impure(struct rename_ctx *c, int dirfd, const char *name)
{
	if (!ovl_has_origin(c->fs, dirfd, name))
		return;
	if (ovl_set_impure(c->fs, dirfd))
		log_warn_rl("marking the directory of %s impure failed", name);
}

/*
 * As for unlink: index=on counts the links of a hard-linked lower file
 * that the rename replaces, which it can only do for a copy in the index.
 */
static int copy_up_replaced_link(struct rename_ctx *c)
{
	int err;

	if (!c->new_exists || c->new.upper ||
	    !ovl_index_wanted(c->fs, &c->new.st))
		return 0;
	err = ovl_copy_up_name(c->fs, c->newparent, c->newname, &c->new,
			       OVL_COPY_UP_META);
	if (!err)
		c->new.upper = true;
	return err;
}

/*
 * Both names are links to one file, which rename(2) leaves as they are.
 * The kernel has two inodes for them, though, and moves its entry of the
 * old name over the new one, so the node table follows it. A name only in the
 * lower layer is linked up first, so that either node finds an upper file
 * at either name.
 */
static int rename_same_file(struct rename_ctx *c)
{
	struct ovl_rename_redirects redirects = {0};
	int err = 0;

	if (c->old.lower >= 0 &&
	    !resolve_lower(c, c->oldparent, c->oldname, &c->old, c->old.lower,
			   c->old_redirect))
		redirects.old = c->old_redirect;
	if (c->new.lower >= 0 &&
	    !resolve_lower(c, c->newparent, c->newname, &c->new, c->new.lower,
			   c->new_redirect))
		redirects.new = c->new_redirect;
	if (c->old.upper && !c->new.upper)
		err = ovl_copy_up_name(c->fs, c->newparent, c->newname, &c->new,
				       OVL_COPY_UP_META);
	else if (!c->old.upper && c->new.upper)
		err = ovl_copy_up_name(c->fs, c->oldparent, c->oldname, &c->old,
				       OVL_COPY_UP_META);
	if (err)
		return err;
	/* A node keeps its lower part, where a metacopy file reads its
	 * data, across the move of its name. */
	return ovl_node_rename(c->fs, c->oldparent, c->oldname, c->newparent,
			       c->newname, c->flags & RENAME_EXCHANGE,
			       &redirects);
}

/*
 * Move the old name over the new one. A replaced name of an indexed file
 * loses its upper link, so, as for unlink, its overlay.nlink must count
 * from the upper links, and no copy-up may link another name meanwhile.
 */
static int rename_replace(struct rename_ctx *c, bool old_lower)
{
	bool counted =
	    c->new_exists && c->new.upper &&ovl_index_wanted(c->fs, &c->new.st);
	int err;

	if (!counted)
		return rename_move(c, old_lower);
	pthread_mutex_lock(&c->fs->index_nlink_lock);
	err = ovl_index_nlink_upper(c->fs, c->newdir, c->newname);
	if (err)
		log_warn_rl(
		    "setting the link count of %s before its replacement failed: %s",
		    c->newname, strerror(-err));
	err = rename_move(c, old_lower);
	pthread_mutex_unlock(&c->fs->index_nlink_lock);
	return err;
}

static int do_rename(struct rename_ctx *c)
{
	bool exchange = c->flags & RENAME_EXCHANGE;
	struct ovl_rename_redirects redirects;
	int old_lower, err;

	err = rename_check(c);
	if (err == 1)
		return rename_same_file(c);
	if (!err)
		err = check_target_empty(c);
	if (!err)
		err = ovl_copy_up_name(c->fs, c->oldparent, c->oldname, &c->old,
				       OVL_COPY_UP_META);
	if (!err && exchange)
		err = ovl_copy_up_name(c->fs, c->newparent, c->newname, &c->new,
				       OVL_COPY_UP_META);
	if (!err && !exchange)
		err = copy_up_replaced_link(c);
	if (err)
		return err;
	/* A whiteout is needed only where a lower entry has the old name. A
	 * directory moved there before finds its lower part by redirect. */
	old_lower = c->old.lower >= 0 && !c->old.redirect[0]
			? 1
			: ovl_lower_positive(c->fs, c->oldparent, c->oldname);
	if (old_lower < 0)
		return old_lower;
	err = open_upper_dirs(c);
	if (err)
		return err;
	/* Paths built from the node table are wrong until it follows. */
	ovl_moves_begin(c->fs);
	err = exchange ? rename_exchange(c) : rename_replace(c, old_lower);
	if (!err)
		mark_impure(c, c->newdir, c->newname);
	if (!err && exchange)
		mark_impure(c, c->olddir, c->oldname);
	redirects.old = c->old_redirect[0] ? c->old_redirect : NULL;
	redirects.new = c->new_redirect[0] ? c->new_redirect : NULL;
	if (!err)
		err = ovl_node_rename(c->fs, c->oldparent, c->oldname,
				      c->newparent, c->newname, exchange,
				      &redirects);
	ovl_moves_end(c->fs);
	return err;
}

void ovl_op_rename(struct fuse_req *req, uint64_t parent, const char *name,
		   uint64_t newparent, const char *newname, unsigned int flags)
{
	struct rename_ctx c = {
	    .fs = ovl_req_fs(req),
	    .oldparent = ovl_req_node(req, parent),
	    .newparent = ovl_req_node(req, newparent),
	    .oldname = name,
	    .newname = newname,
	    .flags = flags,
	    .olddir = -1,
	    .newdir = -1,
	};
	int err = do_rename(&c);

	ovl_lookup_release(&c.old);
	ovl_lookup_release(&c.new);
	if (c.olddir >= 0)
		close(c.olddir);
	if (c.newdir >= 0)
		close(c.newdir);
	fuse_reply_err(req, -err);
}
