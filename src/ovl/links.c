// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Hard links: all names of one file are one kernel inode, as in
 * overlayfs, so locks, inotify watches and cached attributes are shared
 * by the names. Each name keeps its own node, reached by name, but the
 * kernel gets the node id of one of them, the primary, for every name.
 * The other names are the primary's aliases. An alias has one lookup
 * count of its own from when it joins until the kernel forgets the
 * primary, so it stays in the name hash as long as the kernel inode.
 *
 * Which names share an inode follows overlayfs: the names of an upper
 * file with more than one link, and with the index, the names of a lower
 * regular file with more than one link, copied up or not. A table of
 * primaries by st_ino finds the file of a name that the kernel looks up.
 * st_ino names one file only where no two layers' inode numbers can
 * collide (xino, or all layers on one filesystem); elsewhere every name
 * stays a kernel inode of its own.
 */
#include "ovl.h"

#include <errno.h>
#include <stdlib.h>

#define LINKS_BUCKETS 4096

int ovl_links_init(struct ovl_fs *fs)
{
	pthread_mutex_init(&fs->links.lock, NULL);
	fs->links.nbuckets = LINKS_BUCKETS;
	fs->links.buckets = calloc(LINKS_BUCKETS, sizeof(*fs->links.buckets));
	return fs->links.buckets ? 0 : -ENOMEM;
}

void ovl_links_destroy(struct ovl_fs *fs)
{
	if (!fs->links.buckets)
		return;
	free(fs->links.buckets);
	fs->links.buckets = NULL;
	pthread_mutex_destroy(&fs->links.lock);
}

/* Whether overlayfs gives all names of node's file one inode. */
static bool shares_inode(struct ovl_fs *fs, const struct ovl_node *node,
			 const struct stat *st)
{
	if (!fs->ino_unique || S_ISDIR(st->st_mode) || st->st_nlink < 2)
		return false;
	if (ovl_node_has(node, OVL_N_UPPER))
		return true;
	return fs->index_fd >= 0 && S_ISREG(st->st_mode);
}

static struct ovl_node **bucket_of(struct ovl_fs *fs, ino_t ino)
{
	return &fs->links.buckets[ino % fs->links.nbuckets];
}

/* The newest primary of node's file. The caller holds the lock. */
static struct ovl_node *table_find(struct ovl_fs *fs,
				   const struct ovl_node *node)
{
	struct ovl_node *p = *bucket_of(fs, node->ino);

	for (; p; p = p->link.file.next)
		if (p->ino == node->ino && p->type == node->type)
			return p;
	return NULL;
}

static void table_add(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node **b = bucket_of(fs, node->ino);

	node->link.file.aliases = NULL;
	node->link.file.last = node;
	node->link.file.next = *b;
	*b = node;
	atomic_fetch_or(&node->flags, OVL_N_PRIMARY);
}

static void table_del(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node **pp = bucket_of(fs, node->ino);

	for (; *pp; pp = &(*pp)->link.file.next) {
		if (*pp == node) {
			*pp = node->link.file.next;
			break;
		}
	}
	atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_PRIMARY);
}

static void alias_add(struct ovl_node *primary, struct ovl_node *node)
{
	node->link.alias.primary = primary;
	node->link.alias.next = primary->link.file.aliases;
	primary->link.file.aliases = node;
	atomic_fetch_or(&node->flags, OVL_N_ALIAS);
}

static void alias_del(struct ovl_node *node)
{
	struct ovl_node *p = node->link.alias.primary;
	struct ovl_node **pp = &p->link.file.aliases;

	if (p->link.file.last == node)
		p->link.file.last = p;

	for (; *pp; pp = &(*pp)->link.alias.next) {
		if (*pp == node) {
			*pp = node->link.alias.next;
			break;
		}
	}
	atomic_fetch_and(&node->flags, ~(unsigned int)OVL_N_ALIAS);
}

/* A name of a file whose kernel inode is gone: an inode of its own now. */
static void alias_leave(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node *p;

	alias_del(node);
	p = table_find(fs, node);
	if (!p || !ovl_node_lookup_if_alive(fs, p, false))
		table_add(fs, node);
}

/*
 * Return the node whose id the kernel gets for node, which a lookup just
 * gave one more lookup count, and move that count there. fresh: node is
 * new, so the kernel has no inode for it yet.
 */
struct ovl_node *ovl_link_join(struct ovl_fs *fs, struct ovl_node *node,
			       const struct stat *st, bool fresh)
{
	struct ovl_node *to = node, *p;
	bool moved = false;

	if (!ovl_node_has(node, OVL_N_ALIAS | OVL_N_PRIMARY) &&
	    !shares_inode(fs, node, st))
		return node;
	pthread_mutex_lock(&fs->links.lock);
	if (ovl_node_has(node, OVL_N_ALIAS)) {
		/* The alias keeps only its hold; the count goes on. */
		moved = true;
		p = node->link.alias.primary;
		if (ovl_node_lookup_if_alive(fs, p, true)) {
			p->link.file.last = node;
			to = p;
		} else {
			alias_leave(fs, node);
		}
	} else if (!ovl_node_has(node, OVL_N_PRIMARY)) {
		p = table_find(fs, node);
		if (p && fresh && ovl_node_lookup_if_alive(fs, p, true)) {
			alias_add(p, node);
			p->link.file.last = node;
			to = p;
		} else if (!p || !ovl_node_lookup_if_alive(fs, p, false)) {
			table_add(fs, node);
		}
		/* Else the kernel has another node for the file already:
		 * the two names stay two kernel inodes. */
	} else {
		node->link.file.last = node;
	}
	pthread_mutex_unlock(&fs->links.lock);
	if (moved)
		ovl_node_forget(fs, node, 1);
	return to;
}

/*
 * After a hard link: linked, the new name's node with one lookup count,
 * joins the file of kernel_node, the node of the link's source inode.
 * Returns the node whose id the kernel gets for the new name.
 */
struct ovl_node *ovl_link_add(struct ovl_fs *fs, struct ovl_node *kernel_node,
			      struct ovl_node *linked)
{
	struct ovl_node *to = linked, *p;

	if (!fs->ino_unique || kernel_node == fs->root ||
	    linked->type != kernel_node->type ||
	    linked->ino != kernel_node->ino ||
	    ovl_node_has(kernel_node, OVL_N_ALIAS | OVL_N_RETIRED))
		return linked;
	pthread_mutex_lock(&fs->links.lock);
	if (!ovl_node_has(kernel_node, OVL_N_PRIMARY)) {
		p = table_find(fs, kernel_node);
		if (!p || !ovl_node_lookup_if_alive(fs, p, false))
			table_add(fs, kernel_node);
	}
	if (ovl_node_has(kernel_node, OVL_N_PRIMARY) &&
	    ovl_node_lookup_if_alive(fs, kernel_node, true)) {
		alias_add(kernel_node, linked);
		to = kernel_node;
	}
	pthread_mutex_unlock(&fs->links.lock);
	return to;
}

static bool live(const struct ovl_node *node)
{
	return !ovl_node_has(node, OVL_N_DELETED);
}

/*
 * The node that requests on node's id act on. FUSE names no name in a
 * request on an inode, so for a hard-linked file the choice follows
 * overlayfs as far as it can. First a name already copied up, whose copy
 * the other names share through the index. Else the name that the kernel
 * looked up last: such names are not cached (ovl_link_entry_timeout()),
 * so a path walk has just passed it. Else any name still there.
 */
struct ovl_node *ovl_link_resolve(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node *a, *pick = NULL;

	if (!ovl_node_has(node, OVL_N_PRIMARY))
		return node;
	pthread_mutex_lock(&fs->links.lock);
	if (ovl_node_has(node, OVL_N_PRIMARY)) {
		if (live(node) && ovl_node_has(node, OVL_N_UPPER))
			pick = node;
		for (a = node->link.file.aliases; a && !pick;
		     a = a->link.alias.next)
			if (live(a) && ovl_node_has(a, OVL_N_UPPER))
				pick = a;
		if (!pick && live(node->link.file.last))
			pick = node->link.file.last;
		for (a = node->link.file.aliases; a && !pick;
		     a = a->link.alias.next)
			if (live(a))
				pick = a;
	}
	pthread_mutex_unlock(&fs->links.lock);
	return pick ? pick : node;
}

/*
 * The node with the kernel inode's state, such as its passthrough
 * backing file, which the kernel allows only one of per inode: the
 * primary of an alias.
 */
struct ovl_node *ovl_link_inode_node(struct ovl_node *node)
{
	struct ovl_node *p = NULL;

	if (ovl_node_has(node, OVL_N_ALIAS))
		p = node->link.alias.primary;
	return p ? p : node;
}

/*
 * How long the kernel may keep a name of node's file without asking:
 * names of a hard-linked file that no copy-up has reached yet are asked
 * for at every path walk, so that lamina learns which name a request on
 * the inode comes through.
 */
double ovl_link_entry_timeout(struct ovl_fs *fs, struct ovl_node *node)
{
	if (ovl_node_has(node, OVL_N_PRIMARY) &&
	    !ovl_node_has(node, OVL_N_UPPER | OVL_N_INDEX | OVL_N_RETIRED))
		return 0;
	return fs->timeout;
}

/*
 * The kernel forgot node. A primary leaves the table and releases its
 * aliases' holds, which frees those whose names the kernel no longer
 * looks up.
 */
void ovl_link_forget(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node *a, *next;

	if (!ovl_node_has(node, OVL_N_ALIAS | OVL_N_PRIMARY))
		return;
	pthread_mutex_lock(&fs->links.lock);
	if (ovl_node_has(node, OVL_N_ALIAS)) {
		alias_del(node);
	} else if (ovl_node_has(node, OVL_N_PRIMARY)) {
		table_del(fs, node);
		for (a = node->link.file.aliases; a; a = next) {
			next = a->link.alias.next;
			atomic_fetch_and(&a->flags, ~(unsigned int)OVL_N_ALIAS);
			ovl_node_forget(fs, a, 1);
		}
		node->link.file.aliases = NULL;
	}
	pthread_mutex_unlock(&fs->links.lock);
}

/*
 * node's kernel inode stays bound to a lower file that is open, so its
 * names must reach a new inode once it is copied up (see ovl_op_open).
 * The file's primary leaves the table, and its names leave the name
 * hash, so that the next lookup of any of them makes a new node, which
 * the kernel gets under a new id. The aliases keep their holds until
 * the kernel forgets the old primary, since requests on its id may still
 * act on them.
 */
void ovl_link_retire(struct ovl_fs *fs, struct ovl_node *node)
{
	struct ovl_node *p, *a;

	if (!ovl_node_has(node, OVL_N_ALIAS | OVL_N_PRIMARY))
		return;
	pthread_mutex_lock(&fs->links.lock);
	p = ovl_node_has(node, OVL_N_ALIAS) ? node->link.alias.primary : node;
	if (ovl_node_has(p, OVL_N_PRIMARY) && !ovl_node_has(p, OVL_N_RETIRED)) {
		table_del(fs, p);
		atomic_fetch_or(&p->flags, OVL_N_PRIMARY | OVL_N_RETIRED);
		for (a = p->link.file.aliases; a; a = a->link.alias.next)
			ovl_node_unhash_keep(fs, a);
		ovl_node_unhash_keep(fs, p);
	}
	pthread_mutex_unlock(&fs->links.lock);
}
