// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * READDIR and READDIRPLUS reply buffers: fuse_dirbuf_add() and
 * fuse_dirbuf_add_plus() must lay entries out as <linux/fuse.h> defines
 * them, because the kernel parses the buffer as it is.
 */
#include "fuse/transport.h"

#include "check.h"

#include <dirent.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Fill byte of a fresh buffer, so that bytes an add leaves alone show. */
#define POISON 0xa5

static size_t dirent_size(size_t namelen)
{
	return FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + namelen);
}

static size_t direntplus_size(size_t namelen)
{
	return FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET_DIRENTPLUS + namelen);
}

static void init_poisoned(struct fuse_dirbuf *db, size_t cap)
{
	if (fuse_dirbuf_init(db, cap) != 0)
		abort();
	memset(db->data, POISON, cap);
}

/* Whether bytes [from, to) of buf all equal value. */
static bool bytes_equal(const char *buf, size_t from, size_t to, int value)
{
	size_t i;

	for (i = from; i < to; i++)
		if ((unsigned char)buf[i] != (unsigned char)value)
			return false;
	return true;
}

/* Check that [name_end, entry_end) is zero and nothing after it changed. */
static void check_padding_and_tail(const struct fuse_dirbuf *db,
				   size_t name_end, size_t entry_end,
				   size_t namelen)
{
	if (!CHECK(bytes_equal(db->data, name_end, entry_end, 0)))
		fprintf(stderr, "    padding not zeroed, name length %zu\n",
			namelen);
	if (!CHECK(bytes_equal(db->data, entry_end, db->cap, POISON)))
		fprintf(stderr,
			"    bytes written past the entry, name length %zu\n",
			namelen);
}

static void test_header_layout(void)
{
	/* The protocol's fixed offsets, which the sizes below rely on. */
	CHECK_EQ_INT(FUSE_NAME_OFFSET, 24);
	CHECK_EQ_INT(sizeof(struct fuse_entry_out), 128);
	CHECK_EQ_INT(FUSE_NAME_OFFSET_DIRENTPLUS, 152);
	CHECK_EQ_INT(dirent_size(0), 24);
	CHECK_EQ_INT(dirent_size(1), 32);
	CHECK_EQ_INT(dirent_size(8), 32);
	CHECK_EQ_INT(dirent_size(9), 40);
}

static void test_init_and_free(void)
{
	struct fuse_dirbuf db;

	CHECK_EQ_INT(fuse_dirbuf_init(&db, 4096), 0);
	CHECK(db.data != NULL);
	CHECK_EQ_INT(db.size, 0);
	CHECK_EQ_INT(db.cap, 4096);
	fuse_dirbuf_free(&db);
	CHECK_EQ_PTR(db.data, NULL);
}

/* One entry for every name length from 0 to 40: each padding case. */
static void test_add_one_entry(void)
{
	char name[41];
	size_t len;

	for (len = 0; len <= 40; len++) {
		struct fuse_dirbuf db;
		struct fuse_dirent *d;
		size_t size = dirent_size(len);

		memset(name, 'a' + (int)(len % 26), len);
		name[len] = '\0';
		init_poisoned(&db, 256);

		if (!CHECK(fuse_dirbuf_add(&db, name, 1000 + len, DT_REG,
					   (off_t)len + 1))) {
			fuse_dirbuf_free(&db);
			continue;
		}
		CHECK_EQ_INT(db.size, size);
		CHECK_EQ_INT(db.size % 8, 0);
		d = (struct fuse_dirent *)db.data;
		CHECK_EQ_INT(d->ino, 1000 + len);
		CHECK_EQ_INT(d->off, len + 1);
		CHECK_EQ_INT(d->namelen, len);
		CHECK_EQ_INT(d->type, DT_REG);
		CHECK(memcmp(d->name, name, len) == 0);
		CHECK_EQ_INT(FUSE_DIRENT_SIZE(d), size);
		check_padding_and_tail(&db, FUSE_NAME_OFFSET + len, size, len);
		fuse_dirbuf_free(&db);
	}
}

/* Walk several entries the way the kernel does, by FUSE_DIRENT_SIZE. */
static void test_add_sequence(void)
{
	static const struct {
		const char *name;
		unsigned int type;
	} entries[] = {
	    {".", DT_DIR},
	    {"..", DT_DIR},
	    {"file", DT_REG},
	    {"exactly8", DT_REG},
	    {"link", DT_LNK},
	    {"device", DT_CHR},
	    {"a name with spaces", DT_FIFO},
	};
	size_t n = sizeof(entries) / sizeof(entries[0]);
	struct fuse_dirbuf db;
	size_t i, pos, total = 0;

	init_poisoned(&db, 4096);
	for (i = 0; i < n; i++) {
		CHECK(fuse_dirbuf_add(&db, entries[i].name, 10 + i,
				      entries[i].type, (off_t)i + 1));
		total += dirent_size(strlen(entries[i].name));
		CHECK_EQ_INT(db.size, total);
	}

	pos = 0;
	for (i = 0; i < n && pos < db.size; i++) {
		struct fuse_dirent *d = (struct fuse_dirent *)(db.data + pos);
		size_t len = strlen(entries[i].name);

		CHECK_EQ_INT(pos % 8, 0);
		CHECK_EQ_INT(d->ino, 10 + i);
		CHECK_EQ_INT(d->off, i + 1);
		CHECK_EQ_INT(d->type, entries[i].type);
		if (CHECK_EQ_INT(d->namelen, len))
			CHECK(memcmp(d->name, entries[i].name, len) == 0);
		pos += FUSE_DIRENT_SIZE(d);
	}
	CHECK_EQ_INT(i, n);
	CHECK_EQ_INT(pos, db.size);
	fuse_dirbuf_free(&db);
}

static void test_add_longest_name(void)
{
	char name[256];
	struct fuse_dirbuf db;
	struct fuse_dirent *d;

	memset(name, 'x', 255);
	name[255] = '\0';
	init_poisoned(&db, 4096);
	CHECK(fuse_dirbuf_add(&db, name, 7, DT_DIR, 1));
	CHECK_EQ_INT(db.size, dirent_size(255));
	CHECK_EQ_INT(db.size, 280);
	d = (struct fuse_dirent *)db.data;
	CHECK_EQ_INT(d->namelen, 255);
	CHECK(memcmp(d->name, name, 255) == 0);
	CHECK(bytes_equal(db.data, FUSE_NAME_OFFSET + 255, 280, 0));
	fuse_dirbuf_free(&db);
}

static void test_add_when_full(void)
{
	struct fuse_dirbuf db;

	/* Exactly room for "abc" (32 bytes) and "defgh" (32 bytes). */
	init_poisoned(&db, 64);
	CHECK(fuse_dirbuf_add(&db, "abc", 1, DT_REG, 1));
	CHECK(fuse_dirbuf_add(&db, "defgh", 2, DT_REG, 2));
	CHECK_EQ_INT(db.size, 64);

	/* A full buffer takes nothing, not even an empty name. */
	CHECK(!fuse_dirbuf_add(&db, "", 3, DT_REG, 3));
	CHECK_EQ_INT(db.size, 64);
	fuse_dirbuf_free(&db);

	/* 40 bytes of room: a 9-byte name needs 40, a 17-byte one 48. */
	init_poisoned(&db, 72);
	CHECK(fuse_dirbuf_add(&db, "abc", 1, DT_REG, 1));
	CHECK(!fuse_dirbuf_add(&db, "seventeen-bytes!!", 2, DT_REG, 2));
	CHECK_EQ_INT(db.size, 32);
	CHECK(bytes_equal(db.data, 32, 72, POISON));
	CHECK(fuse_dirbuf_add(&db, "nine-byte", 3, DT_REG, 3));
	CHECK_EQ_INT(db.size, 72);
	fuse_dirbuf_free(&db);

	/* Less room than one header. */
	init_poisoned(&db, 16);
	CHECK(!fuse_dirbuf_add(&db, "", 1, DT_REG, 1));
	CHECK_EQ_INT(db.size, 0);
	CHECK(bytes_equal(db.data, 0, 16, POISON));
	fuse_dirbuf_free(&db);
}

static void fill_entry(struct fuse_entry *e, uint64_t nodeid, ino_t ino,
		       mode_t mode)
{
	memset(e, 0, sizeof(*e));
	e->nodeid = nodeid;
	e->generation = 3;
	e->attr.st_ino = ino;
	e->attr.st_mode = mode;
	e->attr.st_nlink = 2;
	e->attr.st_uid = 1001;
	e->attr.st_gid = 1002;
	e->attr.st_size = 12345;
	e->attr.st_mtim.tv_sec = 1700000000;
	e->attr.st_mtim.tv_nsec = 42;
	e->entry_timeout = 1.5;
	e->attr_timeout = 2.0;
}

static void test_add_plus_one_entry(void)
{
	char name[41];
	size_t len;

	for (len = 0; len <= 40; len++) {
		struct fuse_dirbuf db;
		struct fuse_direntplus *dp;
		struct fuse_entry e;
		size_t size = direntplus_size(len);
		bool added;

		memset(name, 'A' + (int)(len % 26), len);
		name[len] = '\0';
		fill_entry(&e, 0x1000 + len, 500 + len, S_IFREG | 0644);
		init_poisoned(&db, 512);

		added = fuse_dirbuf_add_plus(&db, name, &e, (off_t)len + 9);
		if (!CHECK(added)) {
			fuse_dirbuf_free(&db);
			continue;
		}
		CHECK_EQ_INT(db.size, size);
		CHECK_EQ_INT(db.size % 8, 0);
		dp = (struct fuse_direntplus *)db.data;
		CHECK_EQ_INT(FUSE_DIRENTPLUS_SIZE(dp), size);
		CHECK_EQ_INT(dp->dirent.ino, 500 + len);
		CHECK_EQ_INT(dp->dirent.off, len + 9);
		CHECK_EQ_INT(dp->dirent.namelen, len);
		CHECK_EQ_INT(dp->dirent.type, DT_REG);
		CHECK(memcmp(dp->dirent.name, name, len) == 0);
		check_padding_and_tail(&db, FUSE_NAME_OFFSET_DIRENTPLUS + len,
				       size, len);
		fuse_dirbuf_free(&db);
	}
}

static void test_add_plus_entry_out(void)
{
	struct fuse_dirbuf db;
	struct fuse_direntplus *dp;
	struct fuse_entry e;

	fill_entry(&e, 0xdeadbeef, 77, S_IFDIR | 0755);
	init_poisoned(&db, 512);
	CHECK(fuse_dirbuf_add_plus(&db, "subdir", &e, 5));
	dp = (struct fuse_direntplus *)db.data;

	CHECK_EQ_INT(dp->entry_out.nodeid, 0xdeadbeef);
	CHECK_EQ_INT(dp->entry_out.generation, 3);
	CHECK_EQ_INT(dp->entry_out.entry_valid, 1);
	CHECK_EQ_INT(dp->entry_out.entry_valid_nsec, 500000000);
	CHECK_EQ_INT(dp->entry_out.attr_valid, 2);
	CHECK_EQ_INT(dp->entry_out.attr_valid_nsec, 0);
	CHECK_EQ_INT(dp->entry_out.attr.ino, 77);
	CHECK_EQ_INT(dp->entry_out.attr.mode, S_IFDIR | 0755);
	CHECK_EQ_INT(dp->entry_out.attr.nlink, 2);
	CHECK_EQ_INT(dp->entry_out.attr.uid, 1001);
	CHECK_EQ_INT(dp->entry_out.attr.gid, 1002);
	CHECK_EQ_INT(dp->entry_out.attr.size, 12345);
	CHECK_EQ_INT(dp->entry_out.attr.mtime, 1700000000);
	CHECK_EQ_INT(dp->entry_out.attr.mtimensec, 42);
	CHECK_EQ_INT(dp->dirent.ino, 77);
	CHECK_EQ_INT(dp->dirent.type, DT_DIR);
	CHECK_EQ_INT(dp->dirent.namelen, 6);
	CHECK(memcmp(dp->dirent.name, "subdir", 6) == 0);
	fuse_dirbuf_free(&db);
}

/* The dirent type comes from the file type bits of st_mode. */
static void test_add_plus_types(void)
{
	static const struct {
		mode_t mode;
		unsigned int type;
	} cases[] = {
	    {S_IFREG | 0600, DT_REG}, {S_IFDIR | 0700, DT_DIR},
	    {S_IFLNK | 0777, DT_LNK}, {S_IFCHR, DT_CHR},
	    {S_IFBLK, DT_BLK},	      {S_IFIFO, DT_FIFO},
	    {S_IFSOCK, DT_SOCK},      {S_IFREG | S_ISUID | 0755, DT_REG},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fuse_dirbuf db;
		struct fuse_direntplus *dp;
		struct fuse_entry e;

		fill_entry(&e, 2, 3, cases[i].mode);
		init_poisoned(&db, 512);
		CHECK(fuse_dirbuf_add_plus(&db, "n", &e, 1));
		dp = (struct fuse_direntplus *)db.data;
		if (!CHECK_EQ_INT(dp->dirent.type, cases[i].type))
			fprintf(stderr, "    mode %#o\n",
				(unsigned)cases[i].mode);
		fuse_dirbuf_free(&db);
	}
}

static void test_add_plus_sequence_and_full(void)
{
	struct fuse_dirbuf db;
	struct fuse_direntplus *dp;
	struct fuse_entry e;
	size_t first = direntplus_size(3), second = direntplus_size(9);

	CHECK_EQ_INT(first, 160);
	CHECK_EQ_INT(second, 168);

	init_poisoned(&db, first + second + 100);
	fill_entry(&e, 11, 21, S_IFREG | 0644);
	CHECK(fuse_dirbuf_add_plus(&db, "one", &e, 1));
	fill_entry(&e, 12, 22, S_IFLNK | 0777);
	CHECK(fuse_dirbuf_add_plus(&db, "second-1!", &e, 2));
	CHECK_EQ_INT(db.size, first + second);

	/* 100 bytes left: less than any READDIRPLUS entry needs. */
	fill_entry(&e, 13, 23, S_IFREG | 0644);
	CHECK(!fuse_dirbuf_add_plus(&db, "", &e, 3));
	CHECK_EQ_INT(db.size, first + second);
	CHECK(bytes_equal(db.data, first + second, db.cap, POISON));

	dp = (struct fuse_direntplus *)(db.data + first);
	CHECK_EQ_INT(dp->entry_out.nodeid, 12);
	CHECK_EQ_INT(dp->dirent.ino, 22);
	CHECK_EQ_INT(dp->dirent.off, 2);
	CHECK_EQ_INT(dp->dirent.type, DT_LNK);
	CHECK_EQ_INT(dp->dirent.namelen, 9);
	CHECK(memcmp(dp->dirent.name, "second-1!", 9) == 0);
	fuse_dirbuf_free(&db);

	/* Exactly one entry's room. */
	init_poisoned(&db, first);
	CHECK(fuse_dirbuf_add_plus(&db, "one", &e, 1));
	CHECK_EQ_INT(db.size, first);
	CHECK(!fuse_dirbuf_add_plus(&db, "one", &e, 2));
	CHECK_EQ_INT(db.size, first);
	fuse_dirbuf_free(&db);
}

/*
 * Add entries until one does not fit: the buffer then contains every earlier
 * entry and has less room left than the rejected entry needs.
 */
static void test_add_fills_to_capacity(void)
{
	struct fuse_dirbuf db;
	char name[16];
	size_t count = 0, expected = 0;

	init_poisoned(&db, 4096);
	for (;;) {
		snprintf(name, sizeof(name), "entry%zu", count);
		if (!fuse_dirbuf_add(&db, name, count + 1, DT_REG,
				     (off_t)count + 1))
			break;
		expected += dirent_size(strlen(name));
		count++;
	}
	CHECK_EQ_INT(db.size, expected);
	CHECK(db.size <= db.cap);
	CHECK(db.cap - db.size < dirent_size(strlen(name)));
	CHECK(count > 100);
	CHECK(bytes_equal(db.data, db.size, db.cap, POISON));
	fuse_dirbuf_free(&db);
}

int main(void)
{
	RUN_TEST(test_header_layout);
	RUN_TEST(test_init_and_free);
	RUN_TEST(test_add_one_entry);
	RUN_TEST(test_add_sequence);
	RUN_TEST(test_add_longest_name);
	RUN_TEST(test_add_when_full);
	RUN_TEST(test_add_plus_one_entry);
	RUN_TEST(test_add_plus_entry_out);
	RUN_TEST(test_add_plus_types);
	RUN_TEST(test_add_plus_sequence_and_full);
	RUN_TEST(test_add_fills_to_capacity);
	return check_summary();
}
