// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The node table without a mount: hashing by (parent, name), lookup
 * counts, FORGET, paths, renames and hash growth. fs->nodes counts the
 * live nodes, so it shows when a node is freed.
 */
#include "ovl/ovl.h"

#include "check.h"

static const struct ovl_rename_redirects no_redirects;

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct ovl_fs *fs_create(void)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));

	if (!fs || ovl_nodes_init(fs) != 0)
		abort();
	fs->root = ovl_node_new(fs, NULL, "");
	if (!fs->root)
		abort();
	fs->root->type = S_IFDIR;
	return fs;
}

static void fs_destroy(struct ovl_fs *fs)
{
	ovl_nodes_destroy(fs);
	free(fs);
}

/* What a LOOKUP does: find the hashed node or hash a new one. */
static struct ovl_node *lookup(struct ovl_fs *fs, struct ovl_node *parent,
			       const char *name, mode_t type)
{
	struct ovl_node *node = ovl_node_find(fs, parent, name);

	if (node)
		return node;
	node = ovl_node_new(fs, parent, name);
	if (!node)
		abort();
	node->type = type;
	return ovl_node_insert(fs, node);
}

static unsigned int refs_of(struct ovl_node *node)
{
	return atomic_load(&node->refs);
}

static long long live_nodes(struct ovl_fs *fs)
{
	return (long long)atomic_load(&fs->nodes);
}

static void test_root(void)
{
	struct ovl_fs *fs = fs_create();
	char path[16];

	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_PTR(fs->root->parent, NULL);
	CHECK_EQ_STR(fs->root->name, "");
	CHECK_EQ_INT(refs_of(fs->root), 1);
	CHECK_EQ_INT(fs->root->lower, -1);
	CHECK_EQ_INT(fs->root->lower_last, -1);
	CHECK_EQ_INT(fs->root->anon_fd, -1);
	CHECK_EQ_INT(ovl_node_id(fs, fs->root), 1);
	CHECK_EQ_PTR(ovl_node_from_id(fs, 1), fs->root);

	memset(path, 'x', sizeof(path));
	CHECK_EQ_INT(ovl_node_path(fs, fs->root, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "");

	/* FORGET of the root is ignored: the root lives until unmount. */
	ovl_node_forget(fs, fs->root, 1);
	CHECK_EQ_INT(live_nodes(fs), 1);
	fs_destroy(fs);
}

static void test_insert_and_find(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a, *sub, *other;

	a = ovl_node_new(fs, fs->root, "a");
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_INT(refs_of(fs->root), 2);
	CHECK(!ovl_node_has(a, OVL_N_HASHED));
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);

	CHECK_EQ_PTR(ovl_node_insert(fs, a), a);
	CHECK_EQ_INT(a->nlookup, 1);
	CHECK(ovl_node_has(a, OVL_N_HASHED));
	CHECK_EQ_INT(refs_of(a), 1);

	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), a);
	CHECK_EQ_INT(a->nlookup, 2);
	CHECK_EQ_INT(refs_of(a), 1);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "b"), NULL);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "A"), NULL);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a "), NULL);

	/* The same name under another parent is another node. */
	sub = lookup(fs, fs->root, "sub", S_IFDIR);
	CHECK_EQ_PTR(ovl_node_find(fs, sub, "a"), NULL);
	other = lookup(fs, sub, "a", S_IFREG);
	CHECK(other != a);
	CHECK_EQ_PTR(other->parent, sub);
	CHECK_EQ_PTR(ovl_node_find(fs, sub, "a"), other);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), a);
	CHECK_EQ_INT(live_nodes(fs), 4);

	CHECK_EQ_PTR(ovl_node_from_id(fs, ovl_node_id(fs, a)), a);
	CHECK(ovl_node_id(fs, a) != 1);
	fs_destroy(fs);
}

/* A second node for a hashed (parent, name) is dropped for the first. */
static void test_insert_duplicate(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *first, *second;

	first = ovl_node_new(fs, fs->root, "dup");
	CHECK_EQ_PTR(ovl_node_insert(fs, first), first);
	second = ovl_node_new(fs, fs->root, "dup");
	CHECK_EQ_INT(live_nodes(fs), 3);
	CHECK_EQ_INT(refs_of(fs->root), 3);

	CHECK_EQ_PTR(ovl_node_insert(fs, second), first);
	CHECK_EQ_INT(first->nlookup, 2);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_INT(refs_of(fs->root), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "dup"), first);
	fs_destroy(fs);
}

static void test_peek(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFREG);

	CHECK_EQ_PTR(ovl_node_peek(fs, fs->root, "a"), a);
	CHECK_EQ_INT(refs_of(a), 2);
	CHECK_EQ_INT(a->nlookup, 1);
	ovl_node_put(fs, a);
	CHECK_EQ_INT(refs_of(a), 1);
	CHECK_EQ_PTR(ovl_node_peek(fs, fs->root, "missing"), NULL);

	/* A peeked node outlives its FORGET until the reference is put. */
	CHECK_EQ_PTR(ovl_node_peek(fs, fs->root, "a"), a);
	ovl_node_forget(fs, a, 1);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);
	ovl_node_put(fs, a);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_INT(refs_of(fs->root), 1);
	fs_destroy(fs);
}

static void test_forget(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFREG);

	lookup(fs, fs->root, "a", S_IFREG);
	lookup(fs, fs->root, "a", S_IFREG);
	CHECK_EQ_INT(a->nlookup, 3);

	ovl_node_forget(fs, a, 2);
	CHECK_EQ_INT(a->nlookup, 1);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK(ovl_node_has(a, OVL_N_HASHED));
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), a);
	CHECK_EQ_INT(a->nlookup, 2);

	ovl_node_forget(fs, a, 2);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);
	CHECK_EQ_INT(refs_of(fs->root), 1);

	/* A later lookup of the same name makes a fresh node. */
	a = lookup(fs, fs->root, "a", S_IFREG);
	CHECK_EQ_INT(a->nlookup, 1);
	CHECK_EQ_INT(live_nodes(fs), 2);

	/*
	 * A FORGET of more lookups than counted logs a warning and frees
	 * the node.
	 */
	ovl_node_forget(fs, a, 10);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);
	fs_destroy(fs);
}

/*
 * A directory whose lookups are all forgotten leaves the hash but stays
 * alive while a child references it. The child's FORGET frees both.
 */
static void test_forget_parent_first(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFDIR);
	struct ovl_node *b = lookup(fs, a, "b", S_IFDIR);
	struct ovl_node *c = lookup(fs, b, "c", S_IFREG);
	char path[64];

	CHECK_EQ_INT(live_nodes(fs), 4);
	CHECK_EQ_INT(refs_of(a), 2);
	CHECK_EQ_INT(refs_of(b), 2);

	ovl_node_forget(fs, a, 1);
	ovl_node_forget(fs, b, 1);
	CHECK_EQ_INT(live_nodes(fs), 4);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);
	CHECK(!ovl_node_has(a, OVL_N_HASHED));
	CHECK_EQ_INT(ovl_node_path(fs, c, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "a/b/c");

	ovl_node_forget(fs, c, 1);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_INT(refs_of(fs->root), 1);
	fs_destroy(fs);
}

static void test_unhash(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *old = lookup(fs, fs->root, "name", S_IFREG);
	struct ovl_node *fresh;

	ovl_node_unhash(fs, old);
	CHECK(!ovl_node_has(old, OVL_N_HASHED));
	CHECK(ovl_node_has(old, OVL_N_DELETED));
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "name"), NULL);
	CHECK_EQ_INT(live_nodes(fs), 2);

	/* Unhashing twice changes nothing. */
	ovl_node_unhash(fs, old);
	CHECK_EQ_INT(live_nodes(fs), 2);

	/* The name can be hashed again, to a new node. */
	fresh = lookup(fs, fs->root, "name", S_IFREG);
	CHECK(fresh != old);
	CHECK_EQ_INT(live_nodes(fs), 3);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "name"), fresh);

	/* FORGET of the unhashed node frees it and leaves the new one. */
	ovl_node_forget(fs, old, 1);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "name"), fresh);
	fs_destroy(fs);
}

static void test_path(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFDIR);
	struct ovl_node *b = lookup(fs, a, "b", S_IFDIR);
	struct ovl_node *c = lookup(fs, b, "c", S_IFREG);
	struct ovl_node *spaced = lookup(fs, fs->root, "with space", S_IFDIR);
	struct ovl_node *inner = lookup(fs, spaced, "x:y,z", S_IFREG);
	char path[64];

	CHECK_EQ_INT(ovl_node_path(fs, a, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "a");
	CHECK_EQ_INT(ovl_node_path(fs, b, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "a/b");
	CHECK_EQ_INT(ovl_node_path(fs, c, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "a/b/c");
	CHECK_EQ_INT(ovl_node_path(fs, inner, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "with space/x:y,z");
	fs_destroy(fs);
}

static void test_path_buffer_size(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFDIR);
	struct ovl_node *b = lookup(fs, a, "b", S_IFDIR);
	struct ovl_node *c = lookup(fs, b, "c", S_IFREG);
	char path[8];

	/* Too small for "a/b/c" and its terminating NUL. */
	CHECK_EQ_INT(ovl_node_path(fs, c, path, 5), -ENAMETOOLONG);
	CHECK_EQ_INT(ovl_node_path(fs, c, path, 3), -ENAMETOOLONG);
	CHECK_EQ_INT(ovl_node_path(fs, a, path, 1), -ENAMETOOLONG);

	/* Enough room, one byte to spare. */
	CHECK_EQ_INT(ovl_node_path(fs, c, path, 7), 0);
	CHECK_EQ_STR(path, "a/b/c");

	/* Exactly enough room: the path and its NUL. */
	memset(path, 'x', sizeof(path));
	if (CHECK_EQ_INT(ovl_node_path(fs, c, path, 6), 0))
		CHECK_EQ_STR(path, "a/b/c");
	memset(path, 'x', sizeof(path));
	if (CHECK_EQ_INT(ovl_node_path(fs, a, path, 2), 0))
		CHECK_EQ_STR(path, "a");
	fs_destroy(fs);
}

/* A path of OVL_PATH_MAX - 1 bytes fits a buffer of OVL_PATH_MAX. */
static void test_path_max(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *node = fs->root;
	char name[256], *path = malloc(OVL_PATH_MAX);
	size_t len = 0;

	if (!path)
		abort();
	/* 16 components of 254 bytes and their slashes: 4079 bytes. */
	memset(name, 'n', 254);
	name[254] = '\0';
	for (int i = 0; i < 16; i++) {
		name[0] = (char)('a' + i);
		node = lookup(fs, node, name, S_IFDIR);
		len += (i ? 1 : 0) + 254;
	}
	/* One more of 15 bytes makes 4095 bytes. */
	node = lookup(fs, node, "fifteen-bytes!!", S_IFREG);
	len += 1 + 15;
	CHECK_EQ_INT(len, OVL_PATH_MAX - 1);

	if (CHECK_EQ_INT(ovl_node_path(fs, node, path, OVL_PATH_MAX), 0))
		CHECK_EQ_INT(strlen(path), OVL_PATH_MAX - 1);
	free(path);
	fs_destroy(fs);
}

static void test_rename_same_dir(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "x", S_IFREG);
	char path[64];

	CHECK_EQ_INT(ovl_node_rename(fs, fs->root, "x", fs->root, "y", false,
				     &no_redirects),
		     0);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "x"), NULL);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "y"), a);
	CHECK_EQ_STR(a->name, "y");
	CHECK_EQ_PTR(a->parent, fs->root);
	CHECK(ovl_node_has(a, OVL_N_HASHED));
	CHECK(!ovl_node_has(a, OVL_N_DELETED));
	CHECK_EQ_INT(refs_of(a), 1);
	CHECK_EQ_INT(refs_of(fs->root), 2);
	CHECK_EQ_INT(ovl_node_path(fs, a, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "y");
	CHECK_EQ_INT(live_nodes(fs), 2);

	/* Two lookups so far. FORGET of both frees it under its new name. */
	ovl_node_forget(fs, a, 2);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "y"), NULL);
	fs_destroy(fs);
}

static void test_rename_across_dirs(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *d1 = lookup(fs, fs->root, "d1", S_IFDIR);
	struct ovl_node *d2 = lookup(fs, fs->root, "d2", S_IFDIR);
	struct ovl_node *x = lookup(fs, d1, "x", S_IFDIR);
	struct ovl_node *child = lookup(fs, x, "child", S_IFREG);
	char path[64];

	CHECK_EQ_INT(refs_of(d1), 2);
	CHECK_EQ_INT(refs_of(d2), 1);
	CHECK_EQ_INT(
	    ovl_node_rename(fs, d1, "x", d2, "z", false, &no_redirects), 0);
	CHECK_EQ_PTR(x->parent, d2);
	CHECK_EQ_STR(x->name, "z");
	CHECK_EQ_INT(refs_of(d1), 1);
	CHECK_EQ_INT(refs_of(d2), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, d1, "x"), NULL);
	CHECK_EQ_PTR(ovl_node_find(fs, d2, "z"), x);

	/* Children follow: their path goes through the new name. */
	CHECK_EQ_INT(ovl_node_path(fs, child, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "d2/z/child");
	CHECK_EQ_PTR(ovl_node_find(fs, x, "child"), child);

	/* The old directory has no child left, so its FORGET frees it. */
	ovl_node_forget(fs, d1, 1);
	CHECK_EQ_INT(live_nodes(fs), 4);
	fs_destroy(fs);
}

/* A rename over an existing name drops the node that was there. */
static void test_rename_replaces_target(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFREG);
	struct ovl_node *b = lookup(fs, fs->root, "b", S_IFREG);

	CHECK_EQ_INT(ovl_node_rename(fs, fs->root, "a", fs->root, "b", false,
				     &no_redirects),
		     0);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "b"), a);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "a"), NULL);
	CHECK(ovl_node_has(b, OVL_N_DELETED));
	CHECK(!ovl_node_has(b, OVL_N_HASHED));
	CHECK(!ovl_node_has(a, OVL_N_DELETED));

	/* The kernel still references the replaced node until it forgets it. */
	CHECK_EQ_INT(live_nodes(fs), 3);
	CHECK_EQ_INT(refs_of(b), 1);
	ovl_node_forget(fs, b, 1);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "b"), a);
	fs_destroy(fs);
}

static void test_rename_exchange(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *d1 = lookup(fs, fs->root, "d1", S_IFDIR);
	struct ovl_node *d2 = lookup(fs, fs->root, "d2", S_IFDIR);
	struct ovl_node *a = lookup(fs, d1, "a", S_IFREG);
	struct ovl_node *b = lookup(fs, d2, "b", S_IFDIR);
	char path[64];

	CHECK_EQ_INT(ovl_node_rename(fs, d1, "a", d2, "b", true, &no_redirects),
		     0);
	CHECK_EQ_PTR(ovl_node_find(fs, d2, "b"), a);
	CHECK_EQ_PTR(ovl_node_find(fs, d1, "a"), b);
	CHECK_EQ_PTR(a->parent, d2);
	CHECK_EQ_STR(a->name, "b");
	CHECK_EQ_PTR(b->parent, d1);
	CHECK_EQ_STR(b->name, "a");
	CHECK(ovl_node_has(a, OVL_N_HASHED));
	CHECK(ovl_node_has(b, OVL_N_HASHED));
	CHECK(!ovl_node_has(a, OVL_N_DELETED));
	CHECK(!ovl_node_has(b, OVL_N_DELETED));
	CHECK_EQ_INT(refs_of(d1), 2);
	CHECK_EQ_INT(refs_of(d2), 2);
	CHECK_EQ_INT(refs_of(a), 1);
	CHECK_EQ_INT(refs_of(b), 1);
	CHECK_EQ_INT(ovl_node_path(fs, a, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "d2/b");
	CHECK_EQ_INT(ovl_node_path(fs, b, path, sizeof(path)), 0);
	CHECK_EQ_STR(path, "d1/a");
	CHECK_EQ_INT(live_nodes(fs), 5);

	/* A second exchange swaps them back. */
	CHECK_EQ_INT(ovl_node_rename(fs, d1, "a", d2, "b", true, &no_redirects),
		     0);
	CHECK_EQ_PTR(ovl_node_find(fs, d1, "a"), a);
	CHECK_EQ_PTR(ovl_node_find(fs, d2, "b"), b);

	/* With no node at the target, an exchange only moves the source. */
	CHECK_EQ_INT(
	    ovl_node_rename(fs, d1, "a", d1, "other", true, &no_redirects), 0);
	CHECK_EQ_PTR(ovl_node_find(fs, d1, "other"), a);
	CHECK_EQ_PTR(ovl_node_find(fs, d1, "a"), NULL);
	CHECK_EQ_PTR(ovl_node_find(fs, d2, "b"), b);
	fs_destroy(fs);
}

/* Neither name hashed: nothing to move, nothing freed. */
static void test_rename_unknown_names(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *keep = lookup(fs, fs->root, "keep", S_IFREG);

	CHECK_EQ_INT(ovl_node_rename(fs, fs->root, "p", fs->root, "q", false,
				     &no_redirects),
		     0);
	CHECK_EQ_INT(ovl_node_rename(fs, fs->root, "p", fs->root, "q", true,
				     &no_redirects),
		     0);
	CHECK_EQ_INT(live_nodes(fs), 2);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "keep"), keep);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "q"), NULL);

	/* A rename onto keep from an unknown name still drops keep. */
	CHECK_EQ_INT(ovl_node_rename(fs, fs->root, "p", fs->root, "keep", false,
				     &no_redirects),
		     0);
	CHECK_EQ_PTR(ovl_node_find(fs, fs->root, "keep"), NULL);
	CHECK(ovl_node_has(keep, OVL_N_DELETED));
	fs_destroy(fs);
}

static size_t max_buckets(struct ovl_fs *fs)
{
	size_t i, max = 0;

	for (i = 0; i < OVL_HASH_SHARDS; i++)
		if (fs->shards[i].nbuckets > max)
			max = fs->shards[i].nbuckets;
	return max;
}

static size_t min_buckets(struct ovl_fs *fs)
{
	size_t i, min = (size_t)-1;

	for (i = 0; i < OVL_HASH_SHARDS; i++)
		if (fs->shards[i].nbuckets < min)
			min = fs->shards[i].nbuckets;
	return min;
}

static size_t hashed_count(struct ovl_fs *fs)
{
	size_t i, total = 0;

	for (i = 0; i < OVL_HASH_SHARDS; i++)
		total += fs->shards[i].count;
	return total;
}

/*
 * 300,000 nodes: 600 directories of 500 files. A shard doubles its 1024
 * buckets once it contains more than 2048 nodes, so 300,000 nodes over 64
 * shards (about 4,700 each) make every shard grow twice. 100,000 nodes
 * (about 1,560 a shard) would not grow any.
 */
#define STRESS_DIRS 600
#define STRESS_FILES 500

static void test_stress(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node **dirs = calloc(STRESS_DIRS, sizeof(*dirs));
	struct ovl_node **files =
	    calloc((size_t)STRESS_DIRS * STRESS_FILES, sizeof(*files));
	size_t initial_buckets = min_buckets(fs);
	size_t missing = 0, wrong = 0;
	char name[32], path[64], expected[64];
	int d, f;

	if (!dirs || !files)
		abort();
	for (d = 0; d < STRESS_DIRS; d++) {
		snprintf(name, sizeof(name), "dir%d", d);
		dirs[d] = lookup(fs, fs->root, name, S_IFDIR);
		for (f = 0; f < STRESS_FILES; f++) {
			snprintf(name, sizeof(name), "file%d", f);
			files[d * STRESS_FILES + f] =
			    lookup(fs, dirs[d], name, S_IFREG);
		}
	}
	CHECK_EQ_INT(live_nodes(fs), 1 + STRESS_DIRS * (1 + STRESS_FILES));
	CHECK_EQ_INT(hashed_count(fs), STRESS_DIRS * (1 + STRESS_FILES));
	CHECK_EQ_INT(initial_buckets, 1024);
	CHECK(min_buckets(fs) > initial_buckets);
	printf("     buckets per shard after growth: %zu to %zu\n",
	       min_buckets(fs), max_buckets(fs));

	/* Every node is still found after the buckets were rebuilt. */
	for (d = 0; d < STRESS_DIRS; d++) {
		snprintf(name, sizeof(name), "dir%d", d);
		if (ovl_node_peek(fs, fs->root, name) != dirs[d])
			wrong++;
		else
			ovl_node_put(fs, dirs[d]);
		for (f = 0; f < STRESS_FILES; f++) {
			struct ovl_node *n;

			snprintf(name, sizeof(name), "file%d", f);
			n = ovl_node_peek(fs, dirs[d], name);
			if (!n)
				missing++;
			else if (n != files[d * STRESS_FILES + f])
				wrong++;
			if (n)
				ovl_node_put(fs, n);
		}
	}
	CHECK_EQ_INT(missing, 0);
	CHECK_EQ_INT(wrong, 0);

	CHECK_EQ_INT(ovl_node_path(fs, files[123 * STRESS_FILES + 456], path,
				   sizeof(path)),
		     0);
	snprintf(expected, sizeof(expected), "dir123/file456");
	CHECK_EQ_STR(path, expected);

	/* FORGET of every file, then of every directory, frees them all. */
	for (d = 0; d < STRESS_DIRS * STRESS_FILES; d++)
		ovl_node_forget(fs, files[d], 1);
	CHECK_EQ_INT(live_nodes(fs), 1 + STRESS_DIRS);
	for (d = 0; d < STRESS_DIRS; d++)
		ovl_node_forget(fs, dirs[d], 1);
	CHECK_EQ_INT(live_nodes(fs), 1);
	CHECK_EQ_INT(hashed_count(fs), 0);
	CHECK_EQ_INT(refs_of(fs->root), 1);

	free(files);
	free(dirs);
	fs_destroy(fs);
}

/* ovl_nodes_destroy() frees nodes the kernel never forgot. */
static void test_destroy_with_live_nodes(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *dir = fs->root;
	char name[16];
	int i;

	for (i = 0; i < 1000; i++) {
		snprintf(name, sizeof(name), "n%d", i);
		if (i % 100 == 0)
			dir = lookup(fs, fs->root, name, S_IFDIR);
		else
			lookup(fs, dir, name, S_IFREG);
	}
	CHECK_EQ_INT(live_nodes(fs), 1001);
	ovl_nodes_destroy(fs);
	CHECK_EQ_INT(live_nodes(fs), 0);
	free(fs);
}

#define LOOKUP_THREADS 4
#define LOOKUP_NAMES 20000

static void *lookup_worker_run(void *arg)
{
	struct ovl_fs *fs = arg;
	char name[32];
	int i;

	for (i = 0; i < LOOKUP_NAMES; i++) {
		snprintf(name, sizeof(name), "shared%d", i);
		lookup(fs, fs->root, name, S_IFREG);
	}
	return NULL;
}

/* Threads that look up the same names end with one node per name. */
static void test_concurrent_lookups(void)
{
	struct ovl_fs *fs = fs_create();
	pthread_t threads[LOOKUP_THREADS];
	size_t wrong_count = 0;
	char name[32];
	int t, i;

	for (t = 0; t < LOOKUP_THREADS; t++)
		CHECK_EQ_INT(
		    pthread_create(&threads[t], NULL, lookup_worker_run, fs),
		    0);
	for (t = 0; t < LOOKUP_THREADS; t++)
		pthread_join(threads[t], NULL);

	CHECK_EQ_INT(live_nodes(fs), 1 + LOOKUP_NAMES);
	CHECK_EQ_INT(hashed_count(fs), LOOKUP_NAMES);
	CHECK_EQ_INT(refs_of(fs->root), 1 + LOOKUP_NAMES);
	for (i = 0; i < LOOKUP_NAMES; i++) {
		struct ovl_node *n;

		snprintf(name, sizeof(name), "shared%d", i);
		n = ovl_node_peek(fs, fs->root, name);
		if (!n || n->nlookup != LOOKUP_THREADS)
			wrong_count++;
		if (n) {
			ovl_node_put(fs, n);
			ovl_node_forget(fs, n, LOOKUP_THREADS);
		}
	}
	CHECK_EQ_INT(wrong_count, 0);
	CHECK_EQ_INT(live_nodes(fs), 1);
	fs_destroy(fs);
}

/* A message's copy of a name never waits for a rename in progress. */
static void test_name_try_copy(void)
{
	struct ovl_fs *fs = fs_create();
	struct ovl_node *a = lookup(fs, fs->root, "a", S_IFREG);
	char buf[64], expected[64];

	CHECK_EQ_STR(ovl_node_name_try_copy(fs, a, buf, sizeof(buf)), "a");
	CHECK_EQ_STR(ovl_node_name_try_copy(fs, fs->root, buf, sizeof(buf)),
		     "");

	pthread_rwlock_wrlock(&fs->rename_lock);
	snprintf(expected, sizeof(expected), "node %llu",
		 (unsigned long long)ovl_node_id(fs, a));
	CHECK_EQ_STR(ovl_node_name_try_copy(fs, a, buf, sizeof(buf)), expected);
	pthread_rwlock_unlock(&fs->rename_lock);

	ovl_node_forget(fs, a, 1);
	fs_destroy(fs);
}

int main(void)
{
	RUN_TEST(test_root);
	RUN_TEST(test_insert_and_find);
	RUN_TEST(test_insert_duplicate);
	RUN_TEST(test_peek);
	RUN_TEST(test_forget);
	RUN_TEST(test_forget_parent_first);
	RUN_TEST(test_unhash);
	RUN_TEST(test_path);
	RUN_TEST(test_path_buffer_size);
	RUN_TEST(test_path_max);
	RUN_TEST(test_name_try_copy);
	RUN_TEST(test_rename_same_dir);
	RUN_TEST(test_rename_across_dirs);
	RUN_TEST(test_rename_replaces_target);
	RUN_TEST(test_rename_exchange);
	RUN_TEST(test_rename_unknown_names);
	RUN_TEST(test_destroy_with_live_nodes);
	RUN_TEST(test_stress);
	RUN_TEST(test_concurrent_lookups);
	return check_summary();
}
