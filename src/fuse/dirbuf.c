// SPDX-License-Identifier: GPL-2.0-or-later
/* READDIR and READDIRPLUS reply buffers. */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int fuse_dirbuf_init(struct fuse_dirbuf *db, size_t cap)
{
	db->data = malloc(cap);
	db->size = 0;
	db->cap = cap;
	return db->data ? 0 : -ENOMEM;
}

void fuse_dirbuf_free(struct fuse_dirbuf *db)
{
	free(db->data);
	db->data = NULL;
}

static void dirent_fill(struct fuse_dirent *d, const char *name,
			size_t namelen, uint64_t ino, unsigned int type,
			off_t next_off)
{
	d->ino = ino;
	d->off = next_off;
	d->namelen = namelen;
	d->type = type;
	memcpy(d->name, name, namelen);
	/* Padding bytes reach user space; they must not hold old data. */
	memset(d->name + namelen, 0,
	       FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen) -
		       FUSE_NAME_OFFSET - namelen);
}

bool fuse_dirbuf_add(struct fuse_dirbuf *db, const char *name, uint64_t ino,
		     unsigned int type, off_t next_off)
{
	size_t namelen = strlen(name);
	size_t len = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);

	if (db->size + len > db->cap)
		return false;
	dirent_fill((struct fuse_dirent *)(db->data + db->size), name, namelen,
		    ino, type, next_off);
	db->size += len;
	return true;
}

bool fuse_dirbuf_add_plus(struct fuse_dirbuf *db, const char *name,
			  const struct fuse_entry *e, off_t next_off)
{
	size_t namelen = strlen(name);
	size_t len = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen);
	struct fuse_direntplus *dp;

	if (db->size + len > db->cap)
		return false;
	dp = (struct fuse_direntplus *)(db->data + db->size);
	fuse_fill_entry_out(&dp->entry_out, e);
	dirent_fill(&dp->dirent, name, namelen, e->attr.st_ino,
		    (e->attr.st_mode & S_IFMT) >> 12, next_off);
	db->size += len;
	return true;
}
