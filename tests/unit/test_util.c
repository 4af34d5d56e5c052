// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Layer helpers: ovl_is_whiteout(), ovl_tmpname() and ovl_remove_tree().
 * The ovl_remove_tree() tests build trees in a fresh directory under /tmp
 * and remove it at the end.
 */
#include "ovl/ovl.h"

#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static char scratch[64]; /* the test's directory under /tmp */
static int scratch_fd = -1;

static bool is_root(void)
{
	return geteuid() == 0;
}

/* ---- ovl_is_whiteout ---- */

static struct stat stat_of(mode_t mode, dev_t rdev)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = mode;
	st.st_rdev = rdev;
	return st;
}

static void test_whiteout_stat(void)
{
	static const struct {
		mode_t mode;
		unsigned int major, minor;
		bool whiteout;
	} cases[] = {
	    {S_IFCHR | 0000, 0, 0, true},  {S_IFCHR | 0644, 0, 0, true},
	    {S_IFCHR | 0000, 0, 1, false}, {S_IFCHR | 0000, 1, 0, false},
	    {S_IFCHR | 0666, 1, 3, false}, /* /dev/null */
	    {S_IFBLK | 0000, 0, 0, false}, {S_IFREG | 0000, 0, 0, false},
	    {S_IFDIR | 0755, 0, 0, false}, {S_IFLNK | 0777, 0, 0, false},
	    {S_IFIFO | 0600, 0, 0, false}, {S_IFSOCK | 0600, 0, 0, false},
	    {S_IFCHR, 0, 256, false},  /* minor above 8 bits */
	    {S_IFCHR, 4096, 0, false}, /* major above 12 bits */
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct stat st = stat_of(
		    cases[i].mode, makedev(cases[i].major, cases[i].minor));

		if (!CHECK_EQ_INT(ovl_is_whiteout(&st), cases[i].whiteout))
			fprintf(stderr, "    mode %#o, device %u:%u\n",
				(unsigned)cases[i].mode, cases[i].major,
				cases[i].minor);
	}
}

/* The same check on real files, made with mknod where allowed. */
static void test_whiteout_on_disk(void)
{
	struct stat st;

	CHECK_EQ_INT(mknodat(scratch_fd, "fifo", S_IFIFO | 0600, 0), 0);
	CHECK_EQ_INT(ovl_do_fstatat(scratch_fd, "fifo", &st), 0);
	CHECK(!ovl_is_whiteout(&st));
	unlinkat(scratch_fd, "fifo", 0);

	if (!is_root()) {
		printf("     (device nodes skipped: not root)\n");
		return;
	}
	CHECK_EQ_INT(mknodat(scratch_fd, "wh", S_IFCHR | 0000, makedev(0, 0)),
		     0);
	CHECK_EQ_INT(ovl_do_fstatat(scratch_fd, "wh", &st), 0);
	CHECK(ovl_is_whiteout(&st));
	unlinkat(scratch_fd, "wh", 0);

	CHECK_EQ_INT(mknodat(scratch_fd, "null", S_IFCHR | 0666, makedev(1, 3)),
		     0);
	CHECK_EQ_INT(ovl_do_fstatat(scratch_fd, "null", &st), 0);
	CHECK(!ovl_is_whiteout(&st));
	unlinkat(scratch_fd, "null", 0);

	CHECK_EQ_INT(mknodat(scratch_fd, "blk", S_IFBLK | 0600, makedev(0, 0)),
		     0);
	CHECK_EQ_INT(ovl_do_fstatat(scratch_fd, "blk", &st), 0);
	CHECK(!ovl_is_whiteout(&st));
	unlinkat(scratch_fd, "blk", 0);
}

/* ---- ovl_tmpname ---- */

static void test_tmpname_format(void)
{
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	char name[64], expected[64];
	int i;

	if (!fs)
		abort();
	for (i = 0; i < 20; i++) {
		ovl_tmpname(fs, name, sizeof(name));
		snprintf(expected, sizeof(expected), "#%x.%d", i,
			 (int)getpid());
		CHECK_EQ_STR(name, expected);
	}
	CHECK_EQ_INT(fs->tmp_counter, 20);

	/* A short buffer gets a truncated but terminated name. */
	memset(name, 'z', sizeof(name));
	ovl_tmpname(fs, name, 4);
	CHECK_EQ_STR(name, "#14");
	free(fs);
}

#define TMPNAME_THREADS 4
#define TMPNAME_PER_THREAD 20000

struct tmpname_worker {
	struct ovl_fs *fs;
	char (*names)[32];
};

static void *tmpname_worker_run(void *arg)
{
	struct tmpname_worker *w = arg;
	int i;

	for (i = 0; i < TMPNAME_PER_THREAD; i++)
		ovl_tmpname(w->fs, w->names[i], sizeof(w->names[i]));
	return NULL;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Names from several threads at once never repeat. */
static void test_tmpname_unique(void)
{
	size_t total = (size_t)TMPNAME_THREADS * TMPNAME_PER_THREAD, i;
	struct ovl_fs *fs = calloc(1, sizeof(*fs));
	char(*names)[32] = calloc(total, sizeof(*names));
	struct tmpname_worker workers[TMPNAME_THREADS];
	pthread_t threads[TMPNAME_THREADS];
	size_t duplicates = 0;
	int t;

	if (!fs || !names)
		abort();
	for (t = 0; t < TMPNAME_THREADS; t++) {
		workers[t].fs = fs;
		workers[t].names = names + (size_t)t * TMPNAME_PER_THREAD;
		CHECK_EQ_INT(pthread_create(&threads[t], NULL,
					    tmpname_worker_run, &workers[t]),
			     0);
	}
	for (t = 0; t < TMPNAME_THREADS; t++)
		pthread_join(threads[t], NULL);

	qsort(names, total, sizeof(*names), compare_names);
	for (i = 1; i < total; i++)
		if (!strcmp(names[i - 1], names[i]))
			duplicates++;
	CHECK_EQ_INT(duplicates, 0);
	CHECK_EQ_INT(fs->tmp_counter, total);
	for (i = 0; i < total; i++)
		if (!CHECK_EQ_INT(names[i][0], '#'))
			break;
	free(names);
	free(fs);
}

/* ---- ovl_remove_tree ---- */

/* Make each directory usable before nftw() descends into it. */
static int unlock_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	(void)ftw;
	if (flag == FTW_D && (st->st_mode & 0700) != 0700)
		chmod(path, st->st_mode | 0700);
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
			struct FTW *ftw)
{
	(void)st;
	(void)flag;
	if (ftw->level == 0)
		return 0;
	if (remove(path) < 0 && errno != ENOENT)
		fprintf(stderr, "cleanup: failed to remove %s: %s\n", path,
			strerror(errno));
	return 0;
}

/*
 * Remove everything below path, but not path itself, with nftw(), so
 * that cleanup does not depend on the code under test.
 */
static void empty_dir(const char *path)
{
	nftw(path, unlock_entry, 32, FTW_PHYS);
	nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

static bool exists_at(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static void make_file(int dirfd, const char *name, const char *content)
{
	int fd =
	    openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

	if (!CHECK(fd >= 0)) {
		fprintf(stderr, "    create %s: %s\n", name, strerror(errno));
		return;
	}
	if (content && write(fd, content, strlen(content)) < 0)
		fprintf(stderr, "    write %s: %s\n", name, strerror(errno));
	close(fd);
}

static void make_dir(int dirfd, const char *name)
{
	if (!CHECK_EQ_INT(mkdirat(dirfd, name, 0755), 0))
		fprintf(stderr, "    mkdir %s: %s\n", name, strerror(errno));
}

static void make_symlink(const char *target, int dirfd, const char *name)
{
	if (!CHECK_EQ_INT(symlinkat(target, dirfd, name), 0))
		fprintf(stderr, "    symlink %s: %s\n", name, strerror(errno));
}

/*
 * A directory "outside" with content that must survive, and "victim",
 * which contains files, nested directories, a FIFO, a dangling symlink and
 * symlinks to "outside", both absolute and relative.
 */
static void build_victim(int dirfd)
{
	char outside[256];

	make_dir(dirfd, "outside");
	make_file(dirfd, "outside/keep", "must survive");
	make_dir(dirfd, "outside/keepdir");
	snprintf(outside, sizeof(outside), "%s/outside", scratch);

	make_dir(dirfd, "victim");
	make_file(dirfd, "victim/file", "data");
	make_file(dirfd, "victim/empty", NULL);
	make_dir(dirfd, "victim/emptydir");
	make_dir(dirfd, "victim/sub");
	make_dir(dirfd, "victim/sub/deeper");
	make_file(dirfd, "victim/sub/deeper/f", "x");
	make_symlink(outside, dirfd, "victim/link_abs");
	make_symlink("../outside", dirfd, "victim/link_rel");
	make_symlink("../../outside", dirfd, "victim/sub/link_up");
	make_symlink("/nonexistent/target", dirfd, "victim/dangling");
	CHECK_EQ_INT(mkfifoat(dirfd, "victim/fifo", 0600), 0);
	make_file(dirfd, "victim/.hidden", "h");
	make_file(dirfd, "victim/sub/with\nnewline", "n");
}

static void check_outside_intact(int dirfd)
{
	CHECK(exists_at(dirfd, "outside"));
	CHECK(exists_at(dirfd, "outside/keep"));
	CHECK(exists_at(dirfd, "outside/keepdir"));
}

static void test_remove_tree_basic(void)
{
	build_victim(scratch_fd);
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "victim"), 0);
	CHECK(!exists_at(scratch_fd, "victim"));
	check_outside_intact(scratch_fd);
	empty_dir(scratch);
}

/* Given a symlink itself, ovl_remove_tree() removes the link only. */
static void test_remove_tree_symlink_to_dir(void)
{
	char outside[256];

	make_dir(scratch_fd, "outside");
	make_file(scratch_fd, "outside/keep", "must survive");
	snprintf(outside, sizeof(outside), "%s/outside", scratch);
	make_symlink(outside, scratch_fd, "link");
	make_symlink("outside", scratch_fd, "rel_link");

	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "link"), 0);
	CHECK(!exists_at(scratch_fd, "link"));
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "rel_link"), 0);
	CHECK(!exists_at(scratch_fd, "rel_link"));
	CHECK(exists_at(scratch_fd, "outside/keep"));
	empty_dir(scratch);
}

static void test_remove_tree_single_entries(void)
{
	make_file(scratch_fd, "plain", "p");
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "plain"), 0);
	CHECK(!exists_at(scratch_fd, "plain"));

	make_dir(scratch_fd, "emptydir");
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "emptydir"), 0);
	CHECK(!exists_at(scratch_fd, "emptydir"));

	CHECK_EQ_INT(mkfifoat(scratch_fd, "fifo", 0600), 0);
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "fifo"), 0);
	CHECK(!exists_at(scratch_fd, "fifo"));

	/* A missing name counts as removed. */
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "missing"), 0);

	/* A path through a regular file is not a directory. */
	make_file(scratch_fd, "notdir", "n");
	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "notdir/child"), -ENOTDIR);
	CHECK(exists_at(scratch_fd, "notdir"));
	unlinkat(scratch_fd, "notdir", 0);
}

/* Enough entries that readdir() needs several getdents calls while they are
 * removed. */
static void test_remove_tree_large_directory(void)
{
	char name[64];
	int dirfd, i;

	make_dir(scratch_fd, "big");
	dirfd = openat(scratch_fd, "big", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!CHECK(dirfd >= 0))
		return;
	for (i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "file-with-a-longer-name-%05d", i);
		make_file(dirfd, name, NULL);
	}
	for (i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "dir%02d", i);
		make_dir(dirfd, name);
		snprintf(name, sizeof(name), "dir%02d/inner", i);
		make_file(dirfd, name, "i");
	}
	close(dirfd);

	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "big"), 0);
	CHECK(!exists_at(scratch_fd, "big"));
}

static void test_remove_tree_deep(void)
{
	char path[4096];
	size_t len = 0;
	int depth;

	for (depth = 0; depth < 200; depth++) {
		len += (size_t)snprintf(path + len, sizeof(path) - len, "%sd",
					depth ? "/" : "");
		if (mkdirat(scratch_fd, path, 0755) < 0) {
			CHECK_EQ_INT(errno, 0);
			break;
		}
	}
	snprintf(path + len, sizeof(path) - len, "/leaf");
	make_file(scratch_fd, path, "leaf");

	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "d"), 0);
	CHECK(!exists_at(scratch_fd, "d"));
}

/* Root removes entries from directories whose mode denies everyone. */
static void test_remove_tree_no_permission_dirs(void)
{
	if (!is_root()) {
		printf("     (skipped: not root)\n");
		return;
	}
	make_dir(scratch_fd, "locked");
	make_dir(scratch_fd, "locked/inner");
	make_file(scratch_fd, "locked/inner/file", "f");
	make_file(scratch_fd, "locked/readonly", "r");
	CHECK_EQ_INT(fchmodat(scratch_fd, "locked/readonly", 0, 0), 0);
	CHECK_EQ_INT(fchmodat(scratch_fd, "locked/inner", 0, 0), 0);
	CHECK_EQ_INT(fchmodat(scratch_fd, "locked", 0, 0), 0);

	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "locked"), 0);
	CHECK(!exists_at(scratch_fd, "locked"));
}

static void test_remove_tree_whiteouts(void)
{
	if (!is_root()) {
		printf("     (skipped: not root)\n");
		return;
	}
	make_dir(scratch_fd, "upperdir");
	CHECK_EQ_INT(mknodat(scratch_fd, "upperdir/wh", S_IFCHR, makedev(0, 0)),
		     0);
	make_dir(scratch_fd, "upperdir/sub");
	CHECK_EQ_INT(
	    mknodat(scratch_fd, "upperdir/sub/wh2", S_IFCHR, makedev(0, 0)), 0);

	CHECK_EQ_INT(ovl_remove_tree(scratch_fd, "upperdir"), 0);
	CHECK(!exists_at(scratch_fd, "upperdir"));
}

int main(void)
{
	int rc;

	snprintf(scratch, sizeof(scratch), "/tmp/lamina-unit-util.XXXXXX");
	if (!mkdtemp(scratch)) {
		perror("mkdtemp");
		return 2;
	}
	scratch_fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (scratch_fd < 0) {
		perror(scratch);
		return 2;
	}

	RUN_TEST(test_whiteout_stat);
	RUN_TEST(test_whiteout_on_disk);
	RUN_TEST(test_tmpname_format);
	RUN_TEST(test_tmpname_unique);
	RUN_TEST(test_remove_tree_basic);
	RUN_TEST(test_remove_tree_symlink_to_dir);
	RUN_TEST(test_remove_tree_single_entries);
	RUN_TEST(test_remove_tree_large_directory);
	RUN_TEST(test_remove_tree_deep);
	RUN_TEST(test_remove_tree_no_permission_dirs);
	RUN_TEST(test_remove_tree_whiteouts);

	rc = check_summary();
	close(scratch_fd);
	empty_dir(scratch);
	if (rmdir(scratch) < 0)
		fprintf(stderr, "cleanup: failed to remove %s: %s\n", scratch,
			strerror(errno));
	return rc;
}
