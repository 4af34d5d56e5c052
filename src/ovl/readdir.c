// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Readdir of a merged directory: the upper entries first, then those of
 * each lower layer that no higher layer has or hides. The list is built
 * once per open directory and kept, so an offset is an index into it and
 * stays valid across calls however large the directory.
 */
#include "ovl.h"
#include "../common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A set of names: open addressing over pointers owned elsewhere. */
struct name_set {
	char **slots;
	size_t *index; /* entry index + 1, or 0 for a hidden name */
	size_t cap;
	size_t count;
};

static uint64_t str_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int set_init(struct name_set *set)
{
	set->cap = 256;
	set->count = 0;
	set->slots = calloc(set->cap, sizeof(*set->slots));
	set->index = calloc(set->cap, sizeof(*set->index));
	return set->slots && set->index ? 0 : -ENOMEM;
}

static void set_free(struct name_set *set)
{
	free(set->slots);
	free(set->index);
}

static size_t set_slot(const struct name_set *set, const char *name)
{
	size_t i = str_hash(name) & (set->cap - 1);

	while (set->slots[i] && strcmp(set->slots[i], name))
		i = (i + 1) & (set->cap - 1);
	return i;
}

static int set_grow(struct name_set *set)
{
	struct name_set bigger = {.cap = set->cap * 2};
	size_t i;

	bigger.slots = calloc(bigger.cap, sizeof(*bigger.slots));
	bigger.index = calloc(bigger.cap, sizeof(*bigger.index));
	if (!bigger.slots || !bigger.index) {
		set_free(&bigger);
		return -ENOMEM;
	}
	for (i = 0; i < set->cap; i++) {
		size_t j;

		if (!set->slots[i])
			continue;
		j = set_slot(&bigger, set->slots[i]);
		bigger.slots[j] = set->slots[i];
		bigger.index[j] = set->index[i];
	}
	bigger.count = set->count;
	set_free(set);
	*set = bigger;
	return 0;
}

/* Returns the slot of name, or -1 if absent. */
static long set_find(const struct name_set *set, const char *name)
{
	size_t i = set_slot(set, name);

	return set->slots[i] ? (long)i : -1;
}

static int set_add(struct name_set *set, char *name, size_t index)
{
	size_t i;

	if ((set->count + 1) * 2 > set->cap && set_grow(set))
		return -ENOMEM;
	i = set_slot(set, name);
	set->slots[i] = name;
	set->index[i] = index;
	set->count++;
	return 0;
}

struct load_ctx {
	struct ovl_fs *fs;
	struct ovl_dir *dir;
	struct name_set set;
	char **hidden; /* whiteout names, owned here */
	size_t nhidden;
	size_t hidden_cap;
	int upper_fd;	/* the upper directory, for origin lookups */
	bool keep_atime; /* read the upper with O_NOATIME */
	size_t nupper;	/* entries [2, 2 + nupper) come from the upper */
	bool *resolved; /* upper entry's st_ino already settled */
};

static int dir_add(struct ovl_dir *dir, const char *name, ino_t ino,
		   unsigned char type)
{
	if (dir->count == dir->cap) {
		size_t cap = dir->cap ? dir->cap * 2 : 64;
		struct ovl_dirent *e = realloc(dir->entries, cap * sizeof(*e));

		if (!e)
			return -ENOMEM;
		dir->entries = e;
		dir->cap = cap;
	}
	dir->entries[dir->count].name = strdup(name);
	if (!dir->entries[dir->count].name)
		return -ENOMEM;
	dir->entries[dir->count].ino = ino;
	dir->entries[dir->count].type = type;
	dir->count++;
	return 0;
}

static int hide_name(struct load_ctx *ctx, const char *name)
{
	char *copy;

	if (ctx->nhidden == ctx->hidden_cap) {
		size_t cap = ctx->hidden_cap ? ctx->hidden_cap * 2 : 16;
		char **h = realloc(ctx->hidden, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		ctx->hidden = h;
		ctx->hidden_cap = cap;
	}
	copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	ctx->hidden[ctx->nhidden++] = copy;
	return set_add(&ctx->set, copy, 0);
}

static int add_visible(struct load_ctx *ctx, const char *name, ino_t ino,
		       unsigned char type)
{
	int err = dir_add(ctx->dir, name, ino, type);

	if (err)
		return err;
	return set_add(&ctx->set, ctx->dir->entries[ctx->dir->count - 1].name,
		       ctx->dir->count);
}

/* Fill in d_type where the filesystem did not, and spot whiteouts. */
static int entry_type(int dirfd, struct dirent *d, bool *whiteout,
		      struct stat *st)
{
	*whiteout = false;
	if (d->d_type != DT_UNKNOWN && d->d_type != DT_CHR)
		return 0;
	if (ovl_do_fstatat(dirfd, d->d_name, st))
		return -ENOENT;
	d->d_type = IFTODT(st->st_mode);
	*whiteout = ovl_is_whiteout(st);
	return 0;
}

/* The st_ino of an upper non-directory entry, as lookup gives it. */
static ino_t upper_file_ino(struct load_ctx *ctx, const struct ovl_dirent *e)
{
	struct stat st;

	/* Only without the index does the link count matter. */
	if (ctx->fs->index_fd >= 0 ||
	    ovl_do_fstatat(ctx->upper_fd, e->name, &st))
		return ovl_origin_ino(ctx->fs, ctx->upper_fd, e->name, e->ino);
	return ovl_upper_file_ino(ctx->fs, ctx->upper_fd, e->name, &st);
}

/*
 * A name that the upper layer has and a lower one has too: settle its
 * st_ino as lookup does. A directory merged with a lower directory
 * shows the lower st_ino, an opaque one its own; a copied-up file shows
 * its origin's.
 */
static void resolve_upper_ino(struct load_ctx *ctx, size_t entry,
			      unsigned char lower_type, ino_t lower_ino)
{
	struct ovl_dirent *e = &ctx->dir->entries[entry];
	size_t i = entry - 2;

	if (i >= ctx->nupper || ctx->resolved[i])
		return;
	ctx->resolved[i] = true;
	/* An opaque upper directory merges with nothing below. */
	if (e->type == DT_DIR && lower_type == DT_DIR &&
	    !ovl_check_opaque(ctx->fs, ctx->upper_fd, e->name))
		e->ino = lower_ino;
	else if (e->type != DT_DIR)
		e->ino = upper_file_ino(ctx, e);
}

static int read_entry(struct load_ctx *ctx, int dirfd, struct dirent *d,
		      int layer, bool xwhiteout_dir)
{
	struct stat st;
	bool whiteout;
	long slot;
	ino_t ino;

	if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
		return 0;
	if (entry_type(dirfd, d, &whiteout, &st))
		return 0; /* gone since the listing was read */
	ino = ovl_xino(ctx->fs, layer, d->d_ino);
	slot = set_find(&ctx->set, d->d_name);
	if (slot >= 0) {
		size_t index = ctx->set.index[slot];

		if (index && !ctx->fs->layers[layer].is_upper)
			resolve_upper_ino(ctx, index - 1, d->d_type, ino);
		return 0;
	}
	if (!whiteout && xwhiteout_dir && d->d_type == DT_REG &&
	    !ovl_do_fstatat(dirfd, d->d_name, &st))
		whiteout = ovl_check_xwhiteout(ctx->fs, dirfd, d->d_name, &st);
	if (whiteout)
		return hide_name(ctx, d->d_name);
	return add_visible(ctx, d->d_name, ino, d->d_type);
}

static int read_layer(struct load_ctx *ctx, int fd, int layer,
		      bool xwhiteout_dir)
{
	DIR *dir = fdopendir(fd);
	struct dirent *d;
	int err = 0;

	if (!dir) {
		err = -errno;
		close(fd);
		return err;
	}
	for (;;) {
		errno = 0;
		d = readdir(dir);
		if (!d) {
			err = -errno;
			break;
		}
		err = read_entry(ctx, fd, d, layer, xwhiteout_dir);
		if (err)
			break;
	}
	closedir(dir);
	return err;
}

/* overlay.impure: the directory may hold entries moved in with an origin. */
static bool dir_is_impure(struct ovl_fs *fs, int dirfd)
{
	char attr[64];

	ovl_xattr_name(fs, attr, sizeof(attr), "impure");
	return ovl_do_getxattr(dirfd, ".", attr, NULL, 0) >= 0;
}

static void resolve_all_origins(struct load_ctx *ctx)
{
	size_t i;

	for (i = 0; i < ctx->nupper; i++) {
		struct ovl_dirent *e = &ctx->dir->entries[i + 2];
		ino_t ino = e->type == DT_DIR
				? ovl_origin_ino(ctx->fs, ctx->upper_fd,
						 e->name, e->ino)
				: upper_file_ino(ctx, e);

		/* Without an origin, a directory may still merge below. */
		if (ino != e->ino || e->type != DT_DIR)
			ctx->resolved[i] = true;
		e->ino = ino;
	}
}

static int load_upper(struct load_ctx *ctx, struct ovl_node *node)
{
	int fd, err;

	fd = ovl_node_open_dir(ctx->fs, node, 0,
			       O_RDONLY | (ctx->keep_atime ? O_NOATIME : 0));
	if (fd == -EPERM && ctx->keep_atime)
		fd = ovl_node_open_dir(ctx->fs, node, 0, O_RDONLY);
	if (fd < 0)
		return fd;
	ctx->upper_fd = dup(fd);
	if (ctx->upper_fd < 0) {
		close(fd);
		return -errno;
	}
	err = read_layer(ctx, fd, 0,
			 ctx->fs->config.userxattr &&
				 ovl_check_xwhiteout_dir(ctx->fs, fd, "."));
	if (err)
		return err;
	ctx->nupper = ctx->dir->count - 2;
	ctx->resolved = calloc(ctx->nupper + 1, sizeof(bool));
	if (!ctx->resolved)
		return -ENOMEM;
	if (dir_is_impure(ctx->fs, ctx->upper_fd))
		resolve_all_origins(ctx);
	return 0;
}

static int load_lowers(struct load_ctx *ctx, struct ovl_node *node)
{
	struct ovl_fs *fs = ctx->fs;
	int i, fd, err;

	for (i = node->lower; i >= 0 && i <= node->lower_last; i++) {
		bool xdir;

		fd = ovl_node_open_dir(fs, node, i, O_RDONLY | O_NOATIME);
		if (fd == -EPERM)
			fd = ovl_node_open_dir(fs, node, i, O_RDONLY);
		if (fd == -ENOENT || fd == -ENOTDIR)
			continue;
		if (fd < 0)
			return fd;
		/* The last layer's marker is not checked, as in overlayfs. */
		xdir = i != fs->first_data - 1 &&
		       ovl_check_xwhiteout_dir(fs, fd, ".");
		err = read_layer(ctx, fd, i, xdir);
		if (err)
			return err;
	}
	return 0;
}

static void load_ctx_free(struct load_ctx *ctx)
{
	size_t i;

	for (i = 0; i < ctx->nhidden; i++)
		free(ctx->hidden[i]);
	free(ctx->hidden);
	free(ctx->resolved);
	set_free(&ctx->set);
	if (ctx->upper_fd >= 0)
		close(ctx->upper_fd);
}

/*
 * Build the merged listing of a directory, "." and ".." first. The upper
 * directory's access time moves, as on overlayfs, unless keep_atime is
 * set for a listing that no caller asked for.
 */
int ovl_dir_load(struct ovl_fs *fs, struct ovl_node *node, struct ovl_dir *dir,
		 bool keep_atime)
{
	struct load_ctx ctx = {
	    .fs = fs, .dir = dir, .upper_fd = -1, .keep_atime = keep_atime};
	ino_t parent_ino = node->parent ? node->parent->ino : node->ino;
	int err;

	ovl_dir_clear(dir);
	dir->renumbered = atomic_load(&fs->renumbered);
	err = set_init(&ctx.set);
	if (!err)
		err = dir_add(dir, ".", node->ino, DT_DIR);
	if (!err)
		err = dir_add(dir, "..", parent_ino, DT_DIR);
	/* A removed directory is empty, whatever its old path contains now. */
	if (ovl_node_has(node, OVL_N_DELETED))
		goto out;
	if (!err && ovl_node_has(node, OVL_N_UPPER))
		err = load_upper(&ctx, node);
	if (!err && !ovl_node_has(node, OVL_N_OPAQUE))
		err = load_lowers(&ctx, node);
out:
	load_ctx_free(&ctx);
	if (err) {
		char name[NAME_MAX + 1];

		ovl_node_name_copy(fs, node, name, sizeof(name));
		log_warn_rl("reading directory %s failed: %s", name,
			    strerror(-err));
		ovl_dir_clear(dir);
		return err;
	}
	dir->loaded = true;
	return 0;
}

struct ovl_dir *ovl_dir_new(void)
{
	struct ovl_dir *dir = calloc(1, sizeof(*dir));

	if (!dir)
		return NULL;
	pthread_mutex_init(&dir->lock, NULL);
	atomic_init(&dir->refs, 1);
	return dir;
}

void ovl_dir_put(struct ovl_dir *dir)
{
	if (!dir || atomic_fetch_sub(&dir->refs, 1) != 1)
		return;
	ovl_dir_clear(dir);
	pthread_mutex_destroy(&dir->lock);
	free(dir);
}

void ovl_dir_clear(struct ovl_dir *dir)
{
	size_t i;

	for (i = 0; i < dir->count; i++)
		free(dir->entries[i].name);
	free(dir->entries);
	dir->entries = NULL;
	dir->count = 0;
	dir->cap = 0;
	dir->loaded = false;
}

/* 1 if the merged directory contains only "." and "..", else 0. */
int ovl_dir_is_empty(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_dir dir = {0};
	int err = ovl_dir_load(fs, node, &dir, false);

	if (err)
		return err;
	err = dir.count == 2;
	ovl_dir_clear(&dir);
	return err;
}
