// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The node table: nodes by (parent, name) in a hash split into shards,
 * each with its own lock, so lookups in different directories do not
 * wait for each other. A node id is the node's address; the root is 1.
 */
#include "ovl.h"
#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUSE_ROOT_NODEID 1
#define HASH_INITIAL_BUCKETS 1024

static uint64_t name_hash(const struct ovl_node *parent, const char *name)
{
	/* FNV-1a over the name, mixed with the parent's address. */
	uint64_t h = 0xcbf29ce484222325ULL ^ (uintptr_t)parent;

	while (*name) {
		h ^= (unsigned char)*name++;
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 29);
}

static struct ovl_hash_shard *shard_of(struct ovl_fs *fs, uint64_t h)
{
	return &fs->shards[h % OVL_HASH_SHARDS];
}

static size_t bucket_of(const struct ovl_hash_shard *s, uint64_t h)
{
	return (h / OVL_HASH_SHARDS) & (s->nbuckets - 1);
}

int ovl_nodes_init(struct ovl_fs *fs)
{
	int i;

	pthread_mutex_init(&fs->open_orphans_lock, NULL);
	for (i = 0; i < OVL_HASH_SHARDS; i++) {
		struct ovl_hash_shard *s = &fs->shards[i];

		pthread_mutex_init(&s->lock, NULL);
		s->nbuckets = HASH_INITIAL_BUCKETS;
		s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
		if (!s->buckets)
			return -ENOMEM;
	}
	for (i = 0; i < OVL_ALL_SHARDS; i++)
		pthread_mutex_init(&fs->all[i].lock, NULL);
	pthread_rwlock_init(&fs->rename_lock, NULL);
	return 0;
}

static struct ovl_node_list *list_of(struct ovl_fs *fs, struct ovl_node *n)
{
	return &fs->all[((uintptr_t)n >> 6) % OVL_ALL_SHARDS];
}

static void list_add(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_list *l = list_of(fs, node);

	pthread_mutex_lock(&l->lock);
	node->all_prev = NULL;
	node->all_next = l->head;
	if (l->head)
		l->head->all_prev = node;
	l->head = node;
	pthread_mutex_unlock(&l->lock);
}

static void list_del(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node_list *l = list_of(fs, node);

	pthread_mutex_lock(&l->lock);
	if (node->all_prev)
		node->all_prev->all_next = node->all_next;
	else
		l->head = node->all_next;
	if (node->all_next)
		node->all_next->all_prev = node->all_prev;
	pthread_mutex_unlock(&l->lock);
}

/*
 * Free the files still open on node. Only at unmount can there be any:
 * an open file holds a reference on its node until RELEASE.
 */
static void free_open_files(struct ovl_node *node)
{
	struct ovl_file *file, *next;

	for (file = node->files; file; file = next) {
		next = file->next;
		close(file->fd);
		pthread_mutex_destroy(&file->lock);
		free(file);
	}
	node->files = NULL;
}

static void orphan_forget(struct ovl_fs *fs, struct ovl_node *node);

static void node_free(struct ovl_fs *fs, struct ovl_node *node)
{
	list_del(fs, node);
	if (ovl_node_has(node, OVL_N_OPEN_ORPHAN))
		orphan_forget(fs, node);
	free_open_files(node);
	if (node->anon_fd >= 0)
		close(node->anon_fd);
	if (node->anon_meta_fd >= 0)
		close(node->anon_meta_fd);
	ovl_dir_put(node->listing);
	ovl_redirect_free(node->redirect);
	ovl_dirfd_free(fs, node);
	pthread_mutex_destroy(&node->lock);
	free(node->name);
	free(node);
	atomic_fetch_sub(&fs->nodes, 1);
	atomic_fetch_add(&fs->freed, 1);
}

/* Free every node at unmount, whatever the kernel still referenced. */
void ovl_nodes_destroy(struct ovl_fs *fs)
{
	int i;

	for (i = 0; i < OVL_ALL_SHARDS; i++) {
		while (fs->all[i].head)
			node_free(fs, fs->all[i].head);
		pthread_mutex_destroy(&fs->all[i].lock);
	}
	for (i = 0; i < OVL_HASH_SHARDS; i++) {
		free(fs->shards[i].buckets);
		pthread_mutex_destroy(&fs->shards[i].lock);
	}
	pthread_rwlock_destroy(&fs->rename_lock);
	pthread_mutex_destroy(&fs->open_orphans_lock);
	free(fs->open_orphans);
}

struct ovl_node *ovl_node_from_id(struct ovl_fs *fs, uint64_t nodeid)
{
	if (nodeid == FUSE_ROOT_NODEID)
		return fs->root;
	return (struct ovl_node *)(uintptr_t)nodeid;
}

uint64_t ovl_node_id(struct ovl_fs *fs, struct ovl_node *node)
{
	if (node == fs->root)
		return FUSE_ROOT_NODEID;
	return (uintptr_t)node;
}

/* A new unhashed node with one reference held by the caller. */
struct ovl_node *ovl_node_new(struct ovl_fs *fs, struct ovl_node *parent,
			      const char *name)
{
	struct ovl_node *node = calloc(1, sizeof(*node));

	if (!node)
		return NULL;
	node->name = strdup(name);
	if (!node->name) {
		free(node);
		return NULL;
	}
	pthread_mutex_init(&node->lock, NULL);
	atomic_init(&node->refs, 1);
	node->parent = parent;
	node->lower = -1;
	node->lower_last = -1;
	node->data_layer = -1;
	node->anon_fd = -1;
	node->anon_meta_fd = -1;
	if (parent)
		ovl_node_get(parent);
	atomic_fetch_add(&fs->nodes, 1);
	list_add(fs, node);
	return node;
}

void ovl_node_get(struct ovl_node *node)
{
	atomic_fetch_add(&node->refs, 1);
}

static struct ovl_node **bucket_find(struct ovl_hash_shard *s, uint64_t h,
				     const struct ovl_node *parent,
				     const char *name)
{
	struct ovl_node **pp = &s->buckets[bucket_of(s, h)];

	for (; *pp; pp = &(*pp)->hash_next)
		if ((*pp)->parent == parent && !strcmp((*pp)->name, name))
			return pp;
	return pp;
}

/* Double the buckets of a shard whose chains grow long. */
static void shard_grow(struct ovl_hash_shard *s)
{
	size_t n = s->nbuckets * 2, b;
	struct ovl_node **nb = calloc(n, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (b = 0; b < s->nbuckets; b++) {
		struct ovl_node *node = s->buckets[b], *next;

		for (; node; node = next) {
			uint64_t h = name_hash(node->parent, node->name);
			size_t i = (h / OVL_HASH_SHARDS) & (n - 1);

			next = node->hash_next;
			node->hash_next = nb[i];
			nb[i] = node;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->nbuckets = n;
}

/*
 * Find the hashed node for (parent, name) and take a reference on it:
 * a kernel lookup reference, or else a plain one.
 */
static struct ovl_node *node_find(struct ovl_fs *fs, struct ovl_node *parent,
				  const char *name, bool lookup)
{
	uint64_t h = name_hash(parent, name);
	struct ovl_hash_shard *s = shard_of(fs, h);
	struct ovl_node *node;

	pthread_mutex_lock(&s->lock);
	node = *bucket_find(s, h, parent, name);
	if (node && lookup)
		node->nlookup++;
	else if (node)
		ovl_node_get(node);
	pthread_mutex_unlock(&s->lock);
	return node;
}

/* The hashed node for (parent, name) with one more lookup reference. */
struct ovl_node *ovl_node_find(struct ovl_fs *fs, struct ovl_node *parent,
			       const char *name)
{
	return node_find(fs, parent, name, true);
}

/*
 * Hash a new node and give it one kernel lookup reference. If another
 * thread hashed the same name first, the new node is dropped and the
 * existing one returned instead.
 */
struct ovl_node *ovl_node_insert(struct ovl_fs *fs, struct ovl_node *node)
{
	uint64_t h = name_hash(node->parent, node->name);
	struct ovl_hash_shard *s = shard_of(fs, h);
	struct ovl_node **pp, *found;

	pthread_mutex_lock(&s->lock);
	pp = bucket_find(s, h, node->parent, node->name);
	found = *pp;
	if (found) {
		found->nlookup++;
	} else {
		*pp = node;
		node->nlookup = 1;
		atomic_fetch_or(&node->flags, OVL_N_HASHED);
		if (++s->count > s->nbuckets * 2)
			shard_grow(s);
	}
	pthread_mutex_unlock(&s->lock);

	if (!found)
		return node; /* the caller's reference becomes the hash's */
	ovl_node_put(fs, node);
	return found;
}

static void unhash_locked(struct ovl_hash_shard *s, struct ovl_node *node,
			  uint64_t h)
{
	struct ovl_node **pp = &s->buckets[bucket_of(s, h)];

	for (; *pp; pp = &(*pp)->hash_next) {
		if (*pp == node) {
			*pp = node->hash_next;
			node->hash_next = NULL;
			s->count--;
			atomic_fetch_and(&node->flags, ~OVL_N_HASHED);
			return;
		}
	}
}

/*
 * Take a node out of the name hash after its name was removed or
 * replaced. The kernel may still hold it; it is freed on FORGET.
 */
void ovl_node_unhash(struct ovl_fs *fs, struct ovl_node *node)
{
	ovl_node_unhash_keep(fs, node);
	atomic_fetch_or(&node->flags, OVL_N_DELETED);
}

/*
 * Take a node out of the name hash but keep its path: the next lookup
 * of the name makes a new node, and this one still reaches the file.
 */
void ovl_node_unhash_keep(struct ovl_fs *fs, struct ovl_node *node)
{
	uint64_t h;
	struct ovl_hash_shard *s;

	pthread_rwlock_rdlock(&fs->rename_lock);
	h = name_hash(node->parent, node->name);
	s = shard_of(fs, h);
	pthread_mutex_lock(&s->lock);
	if (ovl_node_has(node, OVL_N_HASHED))
		unhash_locked(s, node, h);
	pthread_mutex_unlock(&s->lock);
	pthread_rwlock_unlock(&fs->rename_lock);
}

/*
 * The hashed node for (parent, name) without a lookup reference: the
 * caller gets a plain reference to drop with ovl_node_put().
 */
struct ovl_node *ovl_node_peek(struct ovl_fs *fs, struct ovl_node *parent,
			       const char *name)
{
	return node_find(fs, parent, name, false);
}

static struct ovl_node *unhash_name(struct ovl_fs *fs, struct ovl_node *parent,
				    const char *name)
{
	uint64_t h = name_hash(parent, name);
	struct ovl_hash_shard *s = shard_of(fs, h);
	struct ovl_node *node;

	pthread_mutex_lock(&s->lock);
	node = *bucket_find(s, h, parent, name);
	if (node) {
		unhash_locked(s, node, h);
		ovl_node_get(node);
	}
	pthread_mutex_unlock(&s->lock);
	return node;
}

static int node_path_locked(struct ovl_fs *fs, struct ovl_node *node,
			    int layer, char *buf, size_t size);

/*
 * A node that moves with a redirect keeps, in every lower layer, the
 * path it had there: one absolute segment per layer where that path
 * changes. The caller holds rename_lock for writing.
 */
static void set_redirect(struct ovl_fs *fs, struct ovl_node *node,
			 const char *redirect)
{
	struct ovl_redirect *chain = NULL;
	char path[OVL_PATH_MAX], prev[OVL_PATH_MAX] = "";
	int layer, last = node->data_layer >= 0 ? node->data_layer
						: node->lower_last;
	int err = ovl_redirect_add(&chain, fs->first_lower, redirect, false);

	strcpy(prev, redirect);
	for (layer = fs->first_lower + 1; !err && node->lower >= 0 &&
					  layer <= last && layer < fs->nlayers;
	     layer++) {
		if (node_path_locked(fs, node, layer, path, sizeof(path)) ||
		    !strcmp(path, prev))
			continue;
		err = ovl_redirect_add(&chain, layer, path, false);
		strcpy(prev, path);
	}
	if (err) {
		log_warn_rl("no memory for the redirect of %s", node->name);
		ovl_redirect_free(chain);
		return;
	}
	ovl_redirect_free(node->redirect);
	node->redirect = chain;
}

/* Give an unhashed node its new place and hash it there. */
static void rehash(struct ovl_fs *fs, struct ovl_node *node,
		   struct ovl_node *parent, char *name)
{
	uint64_t h = name_hash(parent, name);
	struct ovl_hash_shard *s = shard_of(fs, h);
	struct ovl_node *oldparent = node->parent;
	struct ovl_node **pp;

	ovl_node_get(parent);
	pthread_mutex_lock(&s->lock);
	free(node->name);
	node->name = name;
	node->parent = parent;
	pp = bucket_find(s, h, parent, name);
	if (!*pp) {
		*pp = node;
		s->count++;
		atomic_fetch_or(&node->flags, OVL_N_HASHED);
	}
	pthread_mutex_unlock(&s->lock);
	ovl_node_put(fs, oldparent);
}

/* Copy the node's name for a message: a rename may free it meanwhile. */
void ovl_node_name_copy(struct ovl_fs *fs, struct ovl_node *node, char *buf,
			size_t size)
{
	pthread_rwlock_rdlock(&fs->rename_lock);
	snprintf(buf, size, "%s", node->name ? node->name : "/");
	pthread_rwlock_unlock(&fs->rename_lock);
}

/*
 * Copy the node's name for a message from code that has a node locked.
 * Such code must not wait for rename_lock, because a rename keeps it
 * while it locks nodes. During a rename the copy names the node by id.
 */
const char *ovl_node_name_try_copy(struct ovl_fs *fs, struct ovl_node *node,
				   char *buf, size_t size)
{
	if (pthread_rwlock_tryrdlock(&fs->rename_lock)) {
		snprintf(buf, size, "node %llu",
			 (unsigned long long)ovl_node_id(fs, node));
		return buf;
	}
	snprintf(buf, size, "%s", node->name ? node->name : "/");
	pthread_rwlock_unlock(&fs->rename_lock);
	return buf;
}

/*
 * Move the node table along with a rename in the upper layer: the node
 * at the old name gets the new name, and the one at the new name is
 * dropped or, with exchange, gets the old name.
 */
int ovl_node_rename(struct ovl_fs *fs, struct ovl_node *oldparent,
		    const char *oldname, struct ovl_node *newparent,
		    const char *newname, bool exchange,
		    const struct ovl_rename_redirects *redirects)
{
	char *to_new = strdup(newname), *to_old = strdup(oldname);
	struct ovl_node *a, *b;

	if (!to_new || !to_old) {
		free(to_new);
		free(to_old);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&fs->rename_lock);
	a = unhash_name(fs, oldparent, oldname);
	b = unhash_name(fs, newparent, newname);
	if (a && redirects->old)
		set_redirect(fs, a, redirects->old);
	if (b && exchange && redirects->new)
		set_redirect(fs, b, redirects->new);
	if (a)
		rehash(fs, a, newparent, to_new);
	else
		free(to_new);
	if (b && exchange) {
		rehash(fs, b, oldparent, to_old);
	} else {
		free(to_old);
		if (b) {
			atomic_fetch_or(&b->flags, OVL_N_DELETED);
			ovl_node_detach(fs, b, -1);
		}
	}
	pthread_rwlock_unlock(&fs->rename_lock);
	if (a)
		ovl_node_put(fs, a);
	if (b)
		ovl_node_put(fs, b);
	return 0;
}

/*
 * Record the st_ino of a node without a name that is open, if its file
 * may have names: a lower hard link, an upper file with links left, or
 * an O_TMPFILE file linked to a name.
 */
void ovl_node_orphan_note(struct ovl_fs *fs, struct ovl_node *node)
{
	struct stat st;
	ino_t *grown;
	size_t cap;

	if (fstat(node->anon_fd, &st) < 0 ||
	    st.st_nlink <= (node->anon_lower ? 1u : 0u))
		return;
	pthread_mutex_lock(&fs->open_orphans_lock);
	if (fs->nopen_orphans == fs->open_orphans_cap) {
		cap = fs->open_orphans_cap ? 2 * fs->open_orphans_cap : 8;
		grown = realloc(fs->open_orphans, cap * sizeof(*grown));
		if (!grown) {
			pthread_mutex_unlock(&fs->open_orphans_lock);
			return;
		}
		fs->open_orphans = grown;
		fs->open_orphans_cap = cap;
	}
	fs->open_orphans[fs->nopen_orphans++] = node->ino;
	atomic_store(&fs->open_orphans_count, fs->nopen_orphans);
	atomic_fetch_or(&node->flags, OVL_N_OPEN_ORPHAN);
	pthread_mutex_unlock(&fs->open_orphans_lock);
}

static void orphan_forget(struct ovl_fs *fs, struct ovl_node *node)
{
	size_t i;

	pthread_mutex_lock(&fs->open_orphans_lock);
	for (i = 0; i < fs->nopen_orphans; i++) {
		if (fs->open_orphans[i] == node->ino) {
			fs->open_orphans[i] =
			    fs->open_orphans[--fs->nopen_orphans];
			break;
		}
	}
	atomic_store(&fs->open_orphans_count, fs->nopen_orphans);
	pthread_mutex_unlock(&fs->open_orphans_lock);
}

/*
 * The node lost its name (unlink, rmdir, or a rename over it). Its path
 * now leads elsewhere or nowhere, so an open file keeps it reachable.
 * meta_fd, taken over, is the removed upper file of a metacopy node: its
 * open files read the lower data, and meta_fd keeps the metadata.
 */
void ovl_node_detach(struct ovl_fs *fs, struct ovl_node *node, int meta_fd)
{
	struct ovl_file *file;

	pthread_mutex_lock(&node->lock);
	file = node->files;
	if (node->anon_fd < 0 && file) {
		pthread_mutex_lock(&file->lock);
		node->anon_fd = fcntl(file->fd, F_DUPFD_CLOEXEC, 0);
		node->anon_lower = file->lower;
		pthread_mutex_unlock(&file->lock);
	}
	if (meta_fd >= 0 && node->anon_fd >= 0 && node->anon_lower &&
	    node->anon_meta_fd < 0) {
		node->anon_meta_fd = meta_fd;
		meta_fd = -1;
	}
	pthread_mutex_unlock(&node->lock);
	if (meta_fd >= 0)
		close(meta_fd);
	if (node->type == S_IFREG && node->anon_fd >= 0)
		ovl_node_orphan_note(fs, node);
}

/*
 * Whether ino is the st_ino of a file open through a node whose name is
 * gone. Each name is its own kernel inode, and a change through that open
 * file (a passthrough write, for one) does not update the attributes that
 * the kernel caches for the other names, so they must not be cached.
 */
bool ovl_node_ino_orphaned(struct ovl_fs *fs, ino_t ino)
{
	bool found = false;
	size_t i;

	if (atomic_load(&fs->open_orphans_count) == 0)
		return false;
	pthread_mutex_lock(&fs->open_orphans_lock);
	for (i = 0; i < fs->nopen_orphans && !found; i++)
		found = fs->open_orphans[i] == ino;
	pthread_mutex_unlock(&fs->open_orphans_lock);
	return found;
}

/* Drop one reference; the last one frees the node and releases its parent. */
void ovl_node_put(struct ovl_fs *fs, struct ovl_node *node)
{
	while (node && atomic_fetch_sub(&node->refs, 1) == 1) {
		struct ovl_node *parent = node->parent;

		node_free(fs, node);
		node = parent;
	}
}

void ovl_node_forget(struct ovl_fs *fs, struct ovl_node *node, uint64_t nlookup)
{
	uint64_t h;
	struct ovl_hash_shard *s;
	bool last;

	if (node == fs->root)
		return;
	pthread_rwlock_rdlock(&fs->rename_lock);
	h = name_hash(node->parent, node->name);
	s = shard_of(fs, h);
	pthread_mutex_lock(&s->lock);
	if (nlookup > node->nlookup) {
		log_warn_rl("FORGET of %llu lookups for %s, which has %llu",
			    (unsigned long long)nlookup, node->name,
			    (unsigned long long)node->nlookup);
		nlookup = node->nlookup;
	}
	node->nlookup -= nlookup;
	last = node->nlookup == 0;
	if (last && ovl_node_has(node, OVL_N_HASHED))
		unhash_locked(s, node, h);
	pthread_mutex_unlock(&s->lock);
	pthread_rwlock_unlock(&fs->rename_lock);
	if (last)
		ovl_node_put(fs, node);
}

/*
 * Write the path of node relative to the root of layer into buf ("" for
 * the root); layer -1 gives the merged path. In a lower layer a moved directory
 * is found at its redirect, and so is everything below it. Holds rename_lock
 * for reading while it walks the parents.
 */
static int node_path_locked(struct ovl_fs *fs, struct ovl_node *node,
			    int layer, char *buf, size_t size)
{
	bool lower = layer >= 0 && !fs->layers[layer].is_upper;
	const struct ovl_redirect *r;
	size_t pos = size - 1;
	struct ovl_node *n;

	buf[pos] = '\0';
	for (n = node; n && n->parent; n = n->parent) {
		r = lower ? ovl_redirect_at(n->redirect, layer) : NULL;
		const char *name = r ? r->path : n->name;
		bool top = !n->parent->parent || (r && !r->relative);
		size_t len = strlen(name);
		/* A slash goes before every name but the top-level one. */
		size_t need = len + (top ? 0 : 1);

		if (need > pos)
			return -ENAMETOOLONG;
		pos -= len;
		memcpy(buf + pos, name, len);
		if (top)
			break;
		buf[--pos] = '/';
	}
	memmove(buf, buf + pos, size - pos);
	return 0;
}

static int node_path(struct ovl_fs *fs, struct ovl_node *node, int layer,
		     char *buf, size_t size)
{
	int err;

	pthread_rwlock_rdlock(&fs->rename_lock);
	err = node_path_locked(fs, node, layer, buf, size);
	pthread_rwlock_unlock(&fs->rename_lock);
	return err;
}

/* The node's path in the merged tree, which is also its upper path. */
int ovl_node_path(struct ovl_fs *fs, struct ovl_node *node, char *buf,
		  size_t size)
{
	return node_path(fs, node, -1, buf, size);
}

/* The node's path in one lower layer, following redirects. */
int ovl_node_lower_path(struct ovl_fs *fs, struct ovl_node *node, int layer,
			char *buf, size_t size)
{
	return node_path(fs, node, layer, buf, size);
}
